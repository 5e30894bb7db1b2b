"""`BudgetLedger` on SQLite: counters and reservations in the gateway's store file.

Every change is one `BEGIN IMMEDIATE` transaction, which takes SQLite's write lock before reading:
two processes (or two connections) reserving at once are serialised, so the check "spent +
reserved + this request <= cap" and the update that follows are atomic across all of a request's
budgets. Each connection is used by one thread at a time (a lock), and several connections on
one file see each other's commits.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from ...ports import BudgetLimit, BudgetRefused, BudgetUsage
from .sqlite import open_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_counter (
    key TEXT PRIMARY KEY,
    spent_nusd INTEGER NOT NULL DEFAULT 0,
    spent_tokens INTEGER NOT NULL DEFAULT 0,
    reserved_nusd INTEGER NOT NULL DEFAULT 0,
    reserved_tokens INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS budget_reservation (
    id TEXT PRIMARY KEY,
    keys TEXT NOT NULL,
    nusd INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS budget_alert (
    key TEXT NOT NULL,
    share TEXT NOT NULL,
    PRIMARY KEY (key, share)
);
CREATE INDEX IF NOT EXISTS budget_reservation_held ON budget_reservation (state, expires_at);
"""


class SqliteBudgetLedger:
    def __init__(self, path: str | Path = ":memory:", timeout_s: float = 30.0) -> None:
        self._db = open_database(path, timeout_s=timeout_s)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def reserve(
        self, reservation_id: str, limits: Sequence[BudgetLimit], nusd: int, tokens: int, expires_at: float, now: float
    ) -> None:
        with self._transaction():
            if not self._db.execute("SELECT 1 FROM budget_reservation WHERE id = ?", (reservation_id,)).fetchone():
                self._reserve(reservation_id, limits, nusd, tokens, expires_at, now)

    def _reserve(
        self, reservation_id: str, limits: Sequence[BudgetLimit], nusd: int, tokens: int, expires_at: float, now: float
    ) -> None:
        self._reclaim(now)
        for limit in limits:
            used = self._counter(limit.key)
            if limit.max_nusd is not None and used.spent_nusd + used.reserved_nusd + nusd > limit.max_nusd:
                raise BudgetRefused(limit.key)
            if limit.max_tokens is not None and (used.spent_tokens + used.reserved_tokens + tokens > limit.max_tokens):
                raise BudgetRefused(limit.key)
        for limit in limits:
            self._db.execute(
                "INSERT INTO budget_counter (key, reserved_nusd, reserved_tokens) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET reserved_nusd = reserved_nusd + excluded.reserved_nusd, "
                "reserved_tokens = reserved_tokens + excluded.reserved_tokens",
                (limit.key, nusd, tokens),
            )
        self._db.execute(
            "INSERT INTO budget_reservation VALUES (?, ?, ?, ?, ?, 'held')",
            (reservation_id, json.dumps([limit.key for limit in limits]), nusd, tokens, expires_at),
        )

    def settle(self, reservation_id: str, nusd: int, tokens: int) -> bool:
        with self._transaction():
            return self._finish(reservation_id, nusd, tokens, "settled")

    def reclaim_expired(self, now: float) -> int:
        with self._transaction():
            return self._reclaim(now)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction, taken before anything is read (`BEGIN IMMEDIATE`)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def usage(self, key: str) -> BudgetUsage:
        with self._lock:
            return self._counter(key)

    def claim_alert(self, key: str, share: str) -> bool:
        with self._lock:
            return self._db.execute("INSERT OR IGNORE INTO budget_alert VALUES (?, ?)", (key, share)).rowcount == 1

    def reservation_states(self) -> dict[str, str]:
        """Reservation id -> held | settled | reclaimed (tests and the CLI report)."""
        with self._lock:
            return dict(self._db.execute("SELECT id, state FROM budget_reservation").fetchall())

    def close(self) -> None:
        self._db.close()

    def _counter(self, key: str) -> BudgetUsage:
        row = self._db.execute(
            "SELECT spent_nusd, spent_tokens, reserved_nusd, reserved_tokens FROM budget_counter WHERE key = ?", (key,)
        ).fetchone()
        return BudgetUsage(*row) if row else BudgetUsage(0, 0, 0, 0)

    def _finish(self, reservation_id: str, nusd: int, tokens: int, state: str) -> bool:
        row = self._db.execute(
            "SELECT keys, nusd, tokens FROM budget_reservation WHERE id = ? AND state = 'held'", (reservation_id,)
        ).fetchone()
        if row is None:
            return False
        keys, held_nusd, held_tokens = json.loads(row[0]), row[1], row[2]
        for key in keys:
            self._db.execute(
                "UPDATE budget_counter SET reserved_nusd = reserved_nusd - ?, reserved_tokens = reserved_tokens - ?, "
                "spent_nusd = spent_nusd + ?, spent_tokens = spent_tokens + ? WHERE key = ?",
                (held_nusd, held_tokens, nusd, tokens, key),
            )
        self._db.execute("UPDATE budget_reservation SET state = ? WHERE id = ?", (state, reservation_id))
        return True

    def _reclaim(self, now: float) -> int:
        expired = [
            row[0]
            for row in self._db.execute(
                "SELECT id FROM budget_reservation WHERE state = 'held' AND expires_at <= ?", (now,)
            ).fetchall()
        ]
        for reservation_id in expired:
            self._finish(reservation_id, 0, 0, "reclaimed")
        return len(expired)
