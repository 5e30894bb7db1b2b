"""`ConversationStore` on SQLite (the embedded default; the store file the gateway already uses).

One row per response, keyed by (tenant, id): every read and delete names the tenant, so one
tenant's id never finds another's response. Expired rows are never returned and are deleted as new
ones are written.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ...ports import StoredResponse
from .sqlite import open_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    previous_id TEXT,
    expires_at REAL NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX IF NOT EXISTS conversations_previous ON conversations (tenant, previous_id);
CREATE INDEX IF NOT EXISTS conversations_expiry ON conversations (expires_at);
"""
_PURGE_EVERY = 256  # writes between deletions of expired rows


class SqliteConversationStore:
    def __init__(self, path: str | Path = ":memory:") -> None:
        self._db = open_database(path)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._writes = 0

    def put(self, item: StoredResponse) -> bool:
        body = item.packed()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")  # the parent's check and the write, at once
            if (
                item.previous_response_id is not None
                and not self._db.execute(
                    "SELECT 1 FROM conversations WHERE tenant = ? AND id = ?", (item.tenant, item.previous_response_id)
                ).fetchone()
            ):
                return False  # the conversation it continues was deleted meanwhile
            self._db.execute(
                "INSERT OR IGNORE INTO conversations VALUES (?, ?, ?, ?, ?)",
                (item.tenant, item.id, item.previous_response_id, item.expires_at, body),
            )
            self._writes += 1
            if self._writes % _PURGE_EVERY == 0:
                self._db.execute("DELETE FROM conversations WHERE expires_at <= ?", (item.created_at,))
            return True

    def get(self, tenant: str, response_id: str, now: float) -> StoredResponse | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM conversations WHERE tenant = ? AND id = ? AND expires_at > ?",
                (tenant, response_id, now),
            ).fetchone()
        return None if row is None else StoredResponse.unpacked(row[0])

    def delete(self, tenant: str, response_id: str) -> int:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            removed = 0
            pending = [response_id]
            while pending:
                current = pending.pop()
                cursor = self._db.execute("DELETE FROM conversations WHERE tenant = ? AND id = ?", (tenant, current))
                if cursor.rowcount == 0 and current == response_id:
                    return 0
                removed += cursor.rowcount
                children = self._db.execute(
                    "SELECT id FROM conversations WHERE tenant = ? AND previous_id = ?", (tenant, current)
                ).fetchall()
                pending += [row[0] for row in children]
            return removed

    def close(self) -> None:
        with self._lock:
            self._db.close()
