"""SQLite adapters: exact cache, usage ledger and audit log in one database file.

WAL mode with `synchronous=NORMAL`: a commit costs tens of microseconds and survives a process
crash (not a power cut). One connection shared by the worker threads behind a lock.

Checkpoints (copying the WAL into the database file, with an fsync) run on a background thread
with its own connection instead of inside whichever request's commit crosses the WAL threshold:
done inline they put multi-millisecond stalls into the request path's p99.

Expired cache entries are deleted as new ones are written: every `PURGE_EVERY_PUTS` writes, at
most twice that many expired rows go (by the `expires_at` index, under the same lock), so the
table holds the live entries plus about one round of writes, and a backlog (a store written
before this purge existed) drains a bounded batch at a time instead of stalling one request.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ...contracts import ChatCompletion
from ...ports import AuditRecord, UsageRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exact_cache (
    key TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    response TEXT NOT NULL,
    expires_at REAL NOT NULL,
    tags TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS exact_cache_tenant ON exact_cache (tenant, model);
CREATE INDEX IF NOT EXISTS exact_cache_expires ON exact_cache (expires_at);
CREATE TABLE IF NOT EXISTS usage (
    request_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    tenant TEXT NOT NULL,
    key_id TEXT NOT NULL,
    user_hash TEXT,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_tenant_ts ON usage (tenant, ts);
CREATE TABLE IF NOT EXISTS audit (
    request_id TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    tenant TEXT,
    key_id TEXT,
    user_hash TEXT,
    client_ip_hash TEXT,
    route TEXT,
    model TEXT,
    provider TEXT,
    cache TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    latency_ms REAL NOT NULL,
    attempts INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error_code TEXT,
    guards TEXT,
    guard_reasons TEXT,
    variant TEXT
);
CREATE INDEX IF NOT EXISTS audit_tenant_ts ON audit (tenant, ts);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
"""

PURGE_EVERY_PUTS = 256  # cache writes between two deletions of expired entries

_USAGE_COLUMNS = tuple(UsageRecord.model_fields)
_AUDIT_COLUMNS = tuple(AuditRecord.model_fields)


def open_database(path: str | Path, *, timeout_s: float = 30.0) -> sqlite3.Connection:
    """A connection as every local store opens one: shared by threads (its owner holds a lock),
    autocommit (transactions are explicit), WAL with `synchronous=NORMAL` (a commit survives a
    process crash without an fsync), waiting up to `timeout_s` for another process's write."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=timeout_s)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def add_missing_column(db: sqlite3.Connection, table: str, column: str, definition: str) -> None:
    """Bring a store written by an earlier release up to the current schema (SQLite has no
    `ADD COLUMN IF NOT EXISTS`)."""
    exists = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    if exists and column not in columns:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def join_tags(tags: Sequence[str]) -> str:
    """Tags as stored: space-delimited on both ends, so a tag matches whole (tags hold no spaces)."""
    if any(not tag or " " in tag for tag in tags):
        raise ValueError("cache tags are non-empty and hold no spaces")
    return f" {' '.join(tags)} " if tags else ""


def purge_filter(tenant: str, model: str | None, tag: str | None) -> tuple[str, tuple[str, ...]]:
    """The WHERE clause (and its arguments) of a purge by tenant, model or tag."""
    if model is not None and tag is not None:
        raise ValueError("purge by model or by tag, not both")
    if model is not None:
        return "tenant = ? AND model = ?", (tenant, model)
    if tag is not None:
        return "tenant = ? AND instr(tags, ?) > 0", (tenant, f" {tag} ")
    return "tenant = ?", (tenant,)


def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608 - fixed names


class SqliteStore:
    """Implements `ExactCache`, `UsageLedger` and `AuditLog` on one SQLite file; `clock` is what
    an entry's expiry is compared with when expired entries are deleted."""

    def __init__(
        self, path: str | Path, checkpoint_interval_s: float = 0.5, clock: Callable[[], float] = time.time
    ) -> None:
        in_memory = str(path) == ":memory:"
        self._path = str(path)
        self._clock = clock
        self._puts = 0
        self._db = open_database(path)
        add_missing_column(self._db, "exact_cache", "tags", "TEXT NOT NULL DEFAULT ''")
        add_missing_column(self._db, "audit", "guards", "TEXT")
        add_missing_column(self._db, "audit", "guard_reasons", "TEXT")
        add_missing_column(self._db, "audit", "variant", "TEXT")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if not in_memory and checkpoint_interval_s > 0:
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, args=(str(path), checkpoint_interval_s), daemon=True
            )
            self._checkpointer.start()
        self._insert_usage = _insert_sql("usage", _USAGE_COLUMNS)
        self._insert_audit = _insert_sql("audit", _AUDIT_COLUMNS)

    # ExactCache
    def get(self, key: str, now: float) -> ChatCompletion | None:
        with self._lock:
            row = self._db.execute(
                "SELECT response FROM exact_cache WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
        return None if row is None else ChatCompletion.model_validate_json(row[0])

    def put(
        self,
        key: str,
        tenant: str,
        model: str,
        response: ChatCompletion,
        expires_at: float,
        tags: Sequence[str] = (),
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO exact_cache (key, tenant, model, response, expires_at, tags)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key, tenant, model, response.model_dump_json(), expires_at, join_tags(tags)),
            )
            self._puts += 1
            due = self._puts % PURGE_EVERY_PUTS == 0
        if due:
            self.purge_expired(self._clock(), limit=2 * PURGE_EVERY_PUTS)

    def purge(self, tenant: str, model: str | None = None, tag: str | None = None) -> int:
        where, args = purge_filter(tenant, model, tag)
        with self._lock:
            cursor = self._db.execute(f"DELETE FROM exact_cache WHERE {where}", args)  # noqa: S608 - fixed SQL
        return cursor.rowcount

    def purge_expired(self, now: float, limit: int = -1) -> int:
        """Delete the entries expired at `now` (at most `limit`, soonest expired first; -1: all);
        how many went."""
        with self._lock:
            return self._db.execute(
                "DELETE FROM exact_cache WHERE rowid IN"
                " (SELECT rowid FROM exact_cache WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)",
                (now, limit),
            ).rowcount

    # UsageLedger / AuditLog
    def record(self, entry: UsageRecord | AuditRecord) -> None:
        if isinstance(entry, UsageRecord):
            sql, values = self._insert_usage, tuple(getattr(entry, c) for c in _USAGE_COLUMNS)
        else:
            sql, values = self._insert_audit, tuple(getattr(entry, c) for c in _AUDIT_COLUMNS)
        with self._lock:
            self._db.execute(sql, values)

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Read-only access for reports and tests."""
        with self._lock:
            return list(self._db.execute(sql, params).fetchall())

    @contextlib.contextmanager
    def reader(self) -> Iterator[Callable[..., list[tuple[Any, ...]]]]:
        """A query function on a read-only connection of its own (WAL lets it read while requests
        write): a long report never holds the lock every request takes. In memory, `query`."""
        if self._path == ":memory:":
            yield self.query
            return
        db = sqlite3.connect(f"{Path(self._path).absolute().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        try:
            yield lambda sql, params=(): list(db.execute(sql, params).fetchall())
        finally:
            db.close()

    def _checkpoint_loop(self, path: str, interval_s: float) -> None:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            while not self._stop.wait(interval_s):
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    def close(self) -> None:
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=5)
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
