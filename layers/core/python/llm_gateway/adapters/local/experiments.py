"""`ExperimentStore` on SQLite (the store file the gateway already uses). The router asks for a
route's running experiment on every request: they are read into memory at most once a second
(and at once after this process changes one)."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ...ports import Experiment
from .sqlite import open_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    experiment_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    route TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    experiment TEXT NOT NULL
);
-- one running experiment a route, however many processes start one at once
CREATE UNIQUE INDEX IF NOT EXISTS experiments_one_running ON experiments (tenant, route) WHERE status = 'running';
"""
REFRESH_S = 1.0
log = logging.getLogger("llm_gateway.experiments")


def _parsed(row: tuple[str]) -> Experiment | None:
    """A stored experiment, or None for a row this version cannot read (logged, passed over)."""
    try:
        return Experiment.model_validate_json(row[0])
    except ValueError:
        log.exception("a stored experiment cannot be read; it is ignored")
        return None


@contextlib.contextmanager
def _one_running(experiment: Experiment) -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError:
        raise ValueError(f"route {experiment.route} of tenant {experiment.tenant} already runs an experiment") from None


class SqliteExperimentStore:
    def __init__(self, path: str | Path = ":memory:", clock: Callable[[], float] = time.monotonic) -> None:
        self._db = open_database(path)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._clock = clock
        self._running: dict[tuple[str, str], Experiment] = {}
        self._read_at: float | None = None

    def active(self, tenant: str, route: str) -> Experiment | None:
        now = self._clock()
        if self._read_at is None or now - self._read_at >= REFRESH_S:
            found = [e for e in self.all() if e.status == "running"]
            self._running = {(e.tenant, e.route): e for e in found}
            self._read_at = now
        return self._running.get((tenant, route))

    def get(self, experiment_id: str) -> Experiment | None:
        with self._lock:
            row = self._db.execute(
                "SELECT experiment FROM experiments WHERE experiment_id = ?", (experiment_id,)
            ).fetchone()
        return None if row is None else _parsed(row)

    def all(self, tenant: str | None = None) -> list[Experiment]:
        with self._lock:
            rows = self._db.execute(
                "SELECT experiment FROM experiments WHERE (? IS NULL OR tenant = ?) ORDER BY started_at",
                (tenant, tenant),
            ).fetchall()
        return [e for e in map(_parsed, rows) if e is not None]

    def save(self, experiment: Experiment) -> None:
        with self._lock, self._db, _one_running(experiment):
            self._db.execute(
                "INSERT INTO experiments VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (experiment_id) DO UPDATE SET "
                "status = excluded.status, experiment = excluded.experiment",
                (
                    experiment.experiment_id,
                    experiment.tenant,
                    experiment.route,
                    experiment.status,
                    experiment.started_at,
                    experiment.model_dump_json(),
                ),
            )
        self._read_at = None

    def close(self) -> None:
        with self._lock:
            self._db.close()
