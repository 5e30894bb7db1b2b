"""Batch jobs on the embedded default: the job table on SQLite, a local folder as the bucket."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from ...ports import BatchJob, BatchLine, BatchLineState
from .sqlite import open_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_jobs (
    job_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    created_at REAL NOT NULL,
    job TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batch_jobs_by_tenant ON batch_jobs (tenant, created_at);
CREATE TABLE IF NOT EXISTS batch_lines (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
);
"""


class SqliteBatchJobs:
    """`BatchJobs` on SQLite: each change is one transaction; a line moves only from the state the
    caller expects (`UPDATE ... WHERE state = ?`)."""

    def __init__(self, path: str | Path) -> None:
        self._db = open_database(path)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def create(self, job: BatchJob, lines: Sequence[BatchLine]) -> bool:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO batch_jobs (job_id, tenant, created_at, job) VALUES (?, ?, ?, ?)",
                    (job.job_id, job.tenant, job.created_at, job.model_dump_json()),
                )
                if cursor.rowcount == 0:
                    self._db.execute("ROLLBACK")
                    return False
                self._db.executemany(
                    "INSERT INTO batch_lines (job_id, idx, state, line) VALUES (?, ?, ?, ?)",
                    [(job.job_id, line.index, line.state, line.model_dump_json()) for line in lines],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return True

    def job(self, job_id: str) -> BatchJob | None:
        with self._lock:
            row = self._db.execute("SELECT job FROM batch_jobs WHERE job_id = ?", (job_id,)).fetchone()
        return BatchJob.model_validate_json(row[0]) if row else None

    def jobs(self, tenant: str | None = None, limit: int = 100) -> list[BatchJob]:
        with self._lock:
            rows = self._db.execute(
                "SELECT job FROM batch_jobs WHERE (?1 IS NULL OR tenant = ?1) ORDER BY created_at DESC LIMIT ?2",
                (tenant, limit),
            ).fetchall()
        return [BatchJob.model_validate_json(r[0]) for r in rows]

    def update_job(self, job_id: str, **changes: object) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT job FROM batch_jobs WHERE job_id = ?", (job_id,)).fetchone()
                if row is None:
                    raise KeyError(job_id)
                job = BatchJob.model_validate({**json.loads(row[0]), **changes})
                self._db.execute("UPDATE batch_jobs SET job = ? WHERE job_id = ?", (job.model_dump_json(), job_id))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def lines(self, job_id: str, state: BatchLineState | None = None) -> list[BatchLine]:
        with self._lock:
            rows = self._db.execute(
                "SELECT line FROM batch_lines WHERE job_id = ?1 AND (?2 IS NULL OR state = ?2) ORDER BY idx",
                (job_id, state),
            ).fetchall()
        return [BatchLine.model_validate_json(r[0]) for r in rows]

    def advance(self, job_id: str, index: int, expected: BatchLineState, **changes: object) -> bool:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT line FROM batch_lines WHERE job_id = ? AND idx = ? AND state = ?", (job_id, index, expected)
                ).fetchone()
                if row is None:
                    self._db.execute("ROLLBACK")
                    return False
                line = BatchLine.model_validate({**json.loads(row[0]), **changes})
                self._db.execute(
                    "UPDATE batch_lines SET state = ?, line = ? WHERE job_id = ? AND idx = ?",
                    (line.state, line.model_dump_json(), job_id, index),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return True

    def close(self) -> None:
        with self._lock:
            self._db.close()


class FolderObjects:
    """`ObjectStore` on a folder: keys are relative paths; an object's version is its content's
    SHA-256 (the same bytes at the same key are the same version). Writes are atomic (rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise KeyError(f"key outside the bucket: {key}")
        return path

    def get(self, key: str, version: str | None = None) -> tuple[bytes, str]:
        try:
            data = self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise KeyError(key) from exc
        digest = hashlib.sha256(data).hexdigest()
        if version is not None and version != digest:
            raise KeyError(f"{key} no longer holds version {version}")
        return data, digest

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
        return hashlib.sha256(data).hexdigest()
