"""`TraceStore` on SQLite (the embedded default; the store file the gateway already uses).

One row per request, keyed by (tenant, request_id): every read names the tenant, so one tenant's
request id never finds another's trace. Expired rows are never returned and are deleted as new
ones are written.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ...ports import Feedback, Trace
from .sqlite import open_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    tenant TEXT NOT NULL,
    request_id TEXT NOT NULL,
    ts REAL NOT NULL,
    expires_at REAL NOT NULL,
    trace TEXT NOT NULL,
    PRIMARY KEY (tenant, request_id)
);
CREATE INDEX IF NOT EXISTS traces_request ON traces (request_id);
CREATE INDEX IF NOT EXISTS traces_expiry ON traces (expires_at);
"""
_PURGE_EVERY = 1024  # writes between deletions of expired rows


class SqliteTraceStore:
    def __init__(self, path: str | Path = ":memory:") -> None:
        self._db = open_database(path)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._writes = 0

    def put(self, trace: Trace) -> None:
        body = trace.model_dump_json()
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO traces VALUES (?, ?, ?, ?, ?)",
                (trace.tenant, trace.request_id, trace.ts, trace.expires_at, body),
            )
            self._writes += 1
            if self._writes % _PURGE_EVERY == 0:
                self._db.execute("DELETE FROM traces WHERE expires_at <= ?", (trace.ts,))

    def get(self, tenant: str, request_id: str, now: float) -> Trace | None:
        with self._lock:
            row = self._db.execute(
                "SELECT trace FROM traces WHERE tenant = ? AND request_id = ? AND expires_at > ?",
                (tenant, request_id, now),
            ).fetchone()
        return None if row is None else Trace.model_validate_json(row[0])

    def add_feedback(self, tenant: str, request_id: str, feedback: Feedback, now: float) -> Trace | None:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")  # read, add, write back: one at a time
            row = self._db.execute(
                "SELECT trace FROM traces WHERE tenant = ? AND request_id = ? AND expires_at > ?",
                (tenant, request_id, now),
            ).fetchone()
            if row is None:
                return None
            trace = Trace.model_validate_json(row[0])
            trace.feedback.append(feedback)
            self._db.execute(
                "UPDATE traces SET trace = ? WHERE tenant = ? AND request_id = ?",
                (trace.model_dump_json(), tenant, request_id),
            )
            return trace

    def find(self, request_id: str) -> Trace | None:
        """The trace of a request id whatever its tenant (the operator's `llm-gateway trace`)."""
        with self._lock:
            row = self._db.execute("SELECT trace FROM traces WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else Trace.model_validate_json(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
