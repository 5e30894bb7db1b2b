"""`ReviewQueue` on SQLite (the embedded default; the store file the gateway already uses)."""

from __future__ import annotations

import threading
from pathlib import Path

from ...ports import ReviewItem, ReviewStatus
from .sqlite import open_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS review_queue (
    item_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    item TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS review_queue_status ON review_queue (status, created_at);
"""


class SqliteReviewQueue:
    def __init__(self, path: str | Path = ":memory:") -> None:
        self._db = open_database(path)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def submit(self, item: ReviewItem) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO review_queue VALUES (?, ?, ?, ?, ?)",
                (item.item_id, item.tenant, item.status, item.created_at, item.model_dump_json()),
            )

    def items(
        self, status: ReviewStatus | None = "pending", tenant: str | None = None, limit: int = 100
    ) -> list[ReviewItem]:
        clauses: list[str] = []
        args: list[str] = []
        if status is not None:
            clauses.append("status = ?")
            args.append(status)
        if tenant is not None:
            clauses.append("tenant = ?")
            args.append(tenant)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT item FROM review_queue {where} ORDER BY created_at, item_id LIMIT ?",  # noqa: S608 - fixed SQL
                (*args, limit),
            ).fetchall()
        return [ReviewItem.model_validate_json(row[0]) for row in rows]

    def decide(self, item_id: str, approved: bool, reviewer: str, now: float) -> ReviewItem:
        with self._lock:
            row = self._db.execute("SELECT item FROM review_queue WHERE item_id = ?", (item_id,)).fetchone()
            if row is None:
                raise KeyError(item_id)
            item = ReviewItem.model_validate_json(row[0])
            if item.status != "pending":
                raise ValueError(f"item {item_id} was already {item.status}")
            decided = item.model_copy(
                update={"status": "approved" if approved else "rejected", "reviewer": reviewer, "decided_at": now}
            )
            self._db.execute(
                "UPDATE review_queue SET status = ?, item = ? WHERE item_id = ?",
                (decided.status, decided.model_dump_json(), item_id),
            )
        return decided

    def close(self) -> None:
        self._db.close()
