"""`TraceStore` on SQLite (the embedded default; the store file the gateway already uses).

One row per request, keyed by (tenant, request_id): every read names the tenant, so one tenant's
request id never finds another's trace. Expired rows are never returned and are deleted as new
ones are written.

A request does not wait for its trace's write: `put` queues it and a writer thread writes what
is queued every quarter second (or as soon as 256 are) in one transaction (a commit per request
cost the chain ~0.25 ms); every read first writes what is still queued, so a trace is found as
soon as its request has been answered. A
process that dies loses the traces it had not written yet, never an answer or a record.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from ...ports import Feedback, Trace
from .sqlite import add_missing_column, open_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    tenant TEXT NOT NULL,
    request_id TEXT NOT NULL,
    ts REAL NOT NULL,
    expires_at REAL NOT NULL,
    trace TEXT NOT NULL,
    first_token_ms REAL,  -- copied from the trace: the dashboard reads it without parsing JSON
    feedback INTEGER NOT NULL DEFAULT 0,  -- how many feedbacks the trace holds
    PRIMARY KEY (tenant, request_id)
);
CREATE INDEX IF NOT EXISTS traces_request ON traces (request_id);
CREATE INDEX IF NOT EXISTS traces_expiry ON traces (expires_at);
CREATE INDEX IF NOT EXISTS traces_tenant_ts ON traces (tenant, ts);
CREATE INDEX IF NOT EXISTS traces_ts ON traces (ts);
"""
_PURGE_EVERY = 1024  # writes between deletions of expired rows
_WRITE_EVERY_S = 0.25  # the writer's pace; sooner when _BATCH traces are queued
_BATCH = 256
log = logging.getLogger("llm_gateway.traces")


def _add_dashboard_columns(db: sqlite3.Connection) -> None:
    """A store an earlier release wrote: the columns the dashboard reads, filled from the traces."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(traces)")}
    if not columns or "feedback" in columns:
        return
    add_missing_column(db, "traces", "first_token_ms", "REAL")
    add_missing_column(db, "traces", "feedback", "INTEGER NOT NULL DEFAULT 0")
    db.execute(
        "UPDATE traces SET first_token_ms = json_extract(trace, '$.first_token_ms'), "
        "feedback = json_array_length(trace, '$.feedback') WHERE json_valid(trace)"
    )


class SqliteTraceStore:
    def __init__(self, path: str | Path = ":memory:") -> None:
        self._db = open_database(path)
        _add_dashboard_columns(self._db)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()  # the connection
        self._queued: list[Trace] = []
        self._queue_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._writes = 0
        self._writer = threading.Thread(target=self._write_loop, name="trace-writer", daemon=True)
        self._writer.start()

    def put(self, trace: Trace) -> None:
        with self._queue_lock:
            self._queued.append(trace)  # written (and serialised) by the writer thread
            full = len(self._queued) >= _BATCH
        if full:
            self._wake.set()

    def flush(self) -> None:
        """Write what is queued now (in the caller's thread)."""
        with self._queue_lock:
            traces, self._queued = self._queued, []
        if not traces:
            return
        rows = [(t.tenant, t.request_id, t.ts, t.expires_at, t.model_dump_json(), t.first_token_ms) for t in traces]
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO traces (tenant, request_id, ts, expires_at, trace, first_token_ms) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._writes += len(rows)
            if self._writes >= _PURGE_EVERY:
                self._writes = 0
                self._db.execute("DELETE FROM traces WHERE expires_at <= ?", (max(r[2] for r in rows),))

    def _write_loop(self) -> None:
        while not self._closed:
            self._wake.wait(_WRITE_EVERY_S)  # a batch at a time: one commit for many traces
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # a trace lost, never the writer
                log.exception("writing traces failed")

    def get(self, tenant: str, request_id: str, now: float) -> Trace | None:
        self.flush()
        with self._lock:
            row = self._db.execute(
                "SELECT trace FROM traces WHERE tenant = ? AND request_id = ? AND expires_at > ?",
                (tenant, request_id, now),
            ).fetchone()
        return None if row is None else Trace.model_validate_json(row[0])

    def add_feedback(self, tenant: str, request_id: str, feedback: Feedback, now: float) -> Trace | None:
        self.flush()
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
                "UPDATE traces SET trace = ?, feedback = feedback + 1 WHERE tenant = ? AND request_id = ?",
                (trace.model_dump_json(), tenant, request_id),
            )
            return trace

    def find(self, request_id: str) -> Trace | None:
        """The trace of a request id whatever its tenant (the operator's `llm-gateway trace`)."""
        self.flush()
        with self._lock:
            row = self._db.execute("SELECT trace FROM traces WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else Trace.model_validate_json(row[0])

    def _in_window(self, column: str, tenant: str, since: float, until: float, content: str, kind: str) -> list[str]:
        """`column` of the tenant's unexpired traces made in [since, until) whose content at `content`
        is a JSON `kind`, replays left out, oldest first."""
        self.flush()
        with self._lock:
            rows = self._db.execute(
                f"SELECT {column} FROM traces WHERE tenant = ? AND ts >= ? AND ts < ? AND expires_at > ? "  # noqa: S608 - our own column name
                "AND CASE WHEN json_valid(trace) THEN json_type(trace, ?) = ? "
                "AND json_extract(trace, '$.replay_of') IS NULL END ORDER BY ts, request_id",
                (tenant, since, until, until, content, kind),
            ).fetchall()
        return [row[0] for row in rows]

    def replayable(self, tenant: str, since: float, until: float) -> list[str]:
        """The ids of the tenant's unexpired requests made in [since, until) whose traces kept the
        request (`traces.store_content`), replays left out: what `llm-gateway replay --tenant` samples from."""
        return self._in_window("request_id", tenant, since, until, "$.content.request", "object")

    def with_content(self, tenant: str, since: float, until: float) -> Iterator[Trace]:
        """The tenant's unexpired traces made in [since, until) that kept their content, replays
        left out, oldest first (what `llm-gateway distill collect` reads); a damaged one is passed over."""
        for row in self._in_window("trace", tenant, since, until, "$.content.answer", "array"):
            try:
                yield Trace.model_validate_json(row)
            except ValueError:
                log.warning("a damaged trace was passed over")

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._writer.join(timeout=5)
        self.flush()
        with self._lock:
            self._db.close()
