"""`GuardAllowList` on SQLite: a table in the gateway's store file, beside the review queue.

Keyed by tenant and the SHA-256 of the normalised text, so a request's lookup is one read of the
primary key however long the text or the list.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from ...ports import AllowedText, normalised_text
from .sqlite import open_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS guard_allowlist (
    tenant TEXT NOT NULL,
    digest TEXT NOT NULL,
    added_at REAL NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (tenant, digest)
) WITHOUT ROWID;
"""


def _digest(text: str) -> str:
    return hashlib.sha256(normalised_text(text).encode()).hexdigest()


class SqliteGuardAllowList:
    def __init__(self, path: str | Path = ":memory:") -> None:
        self._db = open_database(path)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def add(self, entry: AllowedText) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO guard_allowlist VALUES (?, ?, ?, ?)",
                (entry.tenant, _digest(entry.text), entry.added_at, entry.model_dump_json()),
            )
        return cursor.rowcount == 1

    def allows(self, tenant: str, text: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM guard_allowlist WHERE tenant = ? AND digest = ?", (tenant, _digest(text))
            ).fetchone()
        return row is not None

    def entries(self, tenant: str | None = None) -> list[AllowedText]:
        where, args = ("WHERE tenant = ?", (tenant,)) if tenant is not None else ("", ())
        with self._lock:
            rows = self._db.execute(
                f"SELECT entry FROM guard_allowlist {where} ORDER BY added_at, tenant, digest",  # noqa: S608 - fixed SQL
                args,
            ).fetchall()
        return [AllowedText.model_validate_json(row[0]) for row in rows]

    def close(self) -> None:
        self._db.close()
