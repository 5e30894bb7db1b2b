"""`RolloutStore` on SQLite (the embedded default; the store file the gateway already uses).

The router asks for a route's active rollout on every request: the active rollouts are read into
memory at most once a second (and at once after this process changes one), so a rollout another
process (`llm-gateway rollout ...`) changed is seen within a second.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ...ports import Rollout, RolloutEvent
from .sqlite import open_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    rollout_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    route TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_at REAL NOT NULL,
    rollout TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rollouts_route ON rollouts (tenant, route, status);
-- one running rollout a route, however many processes start one at once
CREATE UNIQUE INDEX IF NOT EXISTS rollouts_one_running ON rollouts (tenant, route) WHERE status = 'running';
CREATE TABLE IF NOT EXISTS rollout_events (
    rollout_id TEXT NOT NULL,
    at REAL NOT NULL,
    event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rollout_events_id ON rollout_events (rollout_id, at);
"""
REFRESH_S = 1.0
log = logging.getLogger("llm_gateway.rollouts")


def _parsed(row: tuple[str]) -> Rollout | None:
    """A stored rollout, or None for a row this version cannot read (logged, passed over: one
    damaged row must not stop the router)."""
    try:
        return Rollout.model_validate_json(row[0])
    except ValueError:
        log.exception("a stored rollout cannot be read; it is ignored")
        return None


class SqliteRolloutStore:
    def __init__(self, path: str | Path = ":memory:", clock: Callable[[], float] = time.monotonic) -> None:
        self._db = open_database(path)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._clock = clock
        self._active: dict[tuple[str, str], Rollout] = {}
        self._read_at: float | None = None

    def active(self, tenant: str, route: str) -> Rollout | None:
        now = self._clock()
        if self._read_at is None or now - self._read_at >= REFRESH_S:
            with self._lock:
                rows = self._db.execute(
                    "SELECT rollout FROM rollouts WHERE status IN ('running', 'completed') ORDER BY updated_at"
                ).fetchall()
            found = [r for r in map(_parsed, rows) if r is not None]
            self._active = {(r.tenant, r.route): r for r in found}  # the latest per route
            self._read_at = now
        return self._active.get((tenant, route))

    def get(self, rollout_id: str) -> Rollout | None:
        with self._lock:
            row = self._db.execute("SELECT rollout FROM rollouts WHERE rollout_id = ?", (rollout_id,)).fetchone()
        return None if row is None else _parsed(row)

    def all(self, tenant: str | None = None) -> list[Rollout]:
        with self._lock:
            rows = self._db.execute(
                "SELECT rollout FROM rollouts WHERE (? IS NULL OR tenant = ?) ORDER BY updated_at", (tenant, tenant)
            ).fetchall()
        return [r for r in map(_parsed, rows) if r is not None]

    def save(self, rollout: Rollout, event: RolloutEvent, expected_updated_at: float | None = None) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")  # read, compare, write: one process at a time
            if expected_updated_at is not None:
                row = self._db.execute(
                    "SELECT updated_at FROM rollouts WHERE rollout_id = ?", (rollout.rollout_id,)
                ).fetchone()
                if row is None or row[0] != expected_updated_at:
                    raise ValueError(f"rollout {rollout.rollout_id} changed meanwhile: look at it again")
            try:
                self._db.execute(
                    "INSERT INTO rollouts VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (rollout_id) DO UPDATE SET "
                    "status = excluded.status, updated_at = excluded.updated_at, rollout = excluded.rollout",
                    (
                        rollout.rollout_id,
                        rollout.tenant,
                        rollout.route,
                        rollout.status,
                        rollout.updated_at,
                        rollout.model_dump_json(),
                    ),
                )
            except sqlite3.IntegrityError:
                raise ValueError(f"route {rollout.route} of tenant {rollout.tenant} is already rolling out") from None
            self._db.execute(
                "INSERT INTO rollout_events VALUES (?, ?, ?)", (event.rollout_id, event.at, event.model_dump_json())
            )
        self._read_at = None  # this process sees its own change at once

    def events(self, rollout_id: str) -> list[RolloutEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT event FROM rollout_events WHERE rollout_id = ? ORDER BY at, rowid", (rollout_id,)
            ).fetchall()
        return [RolloutEvent.model_validate_json(row[0]) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
