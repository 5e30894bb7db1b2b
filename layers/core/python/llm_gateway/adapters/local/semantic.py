"""`SemanticIndex` in process: one numpy matrix per scope, exact cosine, persisted to SQLite.

Each scope holds a float32 matrix of unit vectors, starting at one row (a scope is often a single
conversation) and grown by doubling (amortised O(1) append); a search is one matrix-vector product
over that scope's rows, masked by expiry. Every write goes to SQLite too (vectors as float32
blobs), and a new index loads the unexpired rows back, so the index survives restarts. Rows are
removed on purge, and expired rows are compacted away when a search finds them to be half of a
scope (a scope that is never searched again keeps its memory until restart). One lock guards
memory and the connection.

Purges reach every process that shares the SQLite file (several `llm-gateway serve` processes, the
`llm-gateway purge` command): a purge deletes the rows and appends a marker (tenant, model, tag or
scope) to `semantic_purges` in one transaction. Before each search and add, an index asks SQLite
whether another connection has committed since it last looked (`PRAGMA data_version`, about a
microsecond); when one has, it reads the markers it has not applied yet and drops the rows they
select from memory. A lookup that starts after a purge has returned therefore never finds a purged
row, in any process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ...semantic.index import DIMENSIONS, Candidate, Vector, as_unit_vector
from .sqlite import add_missing_column, join_tags, open_database, purge_filter

_SCHEMA = """
CREATE TABLE IF NOT EXISTS semantic_index (
    scope TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    vector BLOB NOT NULL,
    text TEXT NOT NULL,
    response TEXT NOT NULL,
    expires_at REAL NOT NULL,
    tags TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (scope, entry_id)
);
CREATE INDEX IF NOT EXISTS semantic_index_tenant ON semantic_index (tenant, model);
CREATE TABLE IF NOT EXISTS semantic_purges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    model TEXT,
    tag TEXT,
    scope TEXT,
    at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class _Purge:
    """What one purge selected: a tenant's scopes, narrowed to a model, a tag or one scope."""

    tenant: str
    model: str | None = None
    tag: str | None = None
    scope: str | None = None

    def selects(self, name: str, scope: _Scope) -> bool:
        if scope.tenant != self.tenant or (self.scope is not None and name != self.scope):
            return False
        return (self.model is None or scope.model == self.model) and (self.tag is None or f" {self.tag} " in scope.tags)


@dataclass
class _Scope:
    tenant: str
    model: str
    tags: str  # as `join_tags` stores them
    vectors: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros((1, DIMENSIONS), np.float32))
    expires: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(1, np.float64))
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    def put(self, entry_id: str, vector: Vector, text: str, response: str, expires_at: float) -> None:
        row = self.rows.get(entry_id)
        if row is None:
            row = len(self.ids)
            if row == len(self.vectors):
                self.vectors = np.concatenate([self.vectors, np.zeros_like(self.vectors)])
                self.expires = np.concatenate([self.expires, np.zeros_like(self.expires)])
            self.ids.append(entry_id)
            self.texts.append(text)
            self.responses.append(response)
            self.rows[entry_id] = row
        else:
            self.texts[row], self.responses[row] = text, response
        self.vectors[row] = vector
        self.expires[row] = expires_at

    def compact(self, now: float) -> None:
        """Drop expired rows (the lists and matrix shrink together)."""
        keep = [i for i in range(len(self.ids)) if self.expires[i] > now]
        vectors, expires = self.vectors[keep], self.expires[keep]
        capacity = max(1, 2 * len(keep))
        self.vectors = np.zeros((capacity, DIMENSIONS), np.float32)
        self.vectors[: len(keep)] = vectors
        self.expires = np.zeros(capacity, np.float64)
        self.expires[: len(keep)] = expires
        self.ids = [self.ids[i] for i in keep]
        self.texts = [self.texts[i] for i in keep]
        self.responses = [self.responses[i] for i in keep]
        self.rows = {entry_id: row for row, entry_id in enumerate(self.ids)}


class LocalSemanticIndex:
    """`SemanticIndex` for the embedded runtime; `path=":memory:"` keeps nothing on disk."""

    def __init__(
        self, path: str | Path = ":memory:", *, clock: Callable[[], float] = time.time, load: bool = True
    ) -> None:
        """`clock` tells which rows have expired when loading and which purged rows were still live.
        `load=False`: keep nothing in memory (a handle that only purges, as the `purge` command uses)."""
        self._clock = clock
        self._db = open_database(path)
        add_missing_column(self._db, "semantic_index", "tags", "TEXT NOT NULL DEFAULT ''")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._scopes: dict[str, _Scope] = {}
        # Markers up to this id are reflected in memory: read before the rows, so that a purge
        # committed while they load is applied again on the first lookup.
        self._purges_seen = self._db.execute("SELECT coalesce(max(id), 0) FROM semantic_purges").fetchone()[0]
        self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if load:
            self._load(clock())

    def _load(self, now: float) -> None:
        self._db.execute("DELETE FROM semantic_index WHERE expires_at <= ?", (now,))
        rows = self._db.execute(
            "SELECT scope, entry_id, tenant, model, vector, text, response, expires_at, tags FROM semantic_index"
            " ORDER BY rowid"
        )
        for scope, entry_id, tenant, model, blob, text, response, expires_at, tags in rows:
            vector = np.frombuffer(blob, dtype=np.float32)
            if vector.shape != (DIMENSIONS,):
                continue
            self._scope(scope, tenant, model, tags).put(entry_id, vector, text, response, expires_at)

    def _catch_up(self) -> None:
        """Apply the purges other connections (other processes) committed since the last look.
        Called with the lock held."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return
        self._data_version = version
        rows = self._db.execute(
            "SELECT id, tenant, model, tag, scope FROM semantic_purges WHERE id > ? ORDER BY id", (self._purges_seen,)
        ).fetchall()
        for marker_id, tenant, model, tag, scope in rows:
            self._drop(_Purge(tenant, model, tag, scope))
            self._purges_seen = marker_id

    def _drop(self, purge: _Purge) -> None:
        for name in [name for name, s in self._scopes.items() if purge.selects(name, s)]:
            del self._scopes[name]

    def _scope(self, scope: str, tenant: str, model: str, tags: str) -> _Scope:
        found = self._scopes.get(scope)
        if found is None:
            found = self._scopes[scope] = _Scope(tenant, model, tags)
        return found

    def add(
        self,
        scope: str,
        tenant: str,
        model: str,
        entry_id: str,
        vector: Vector,
        text: str,
        response_json: str,
        expires_at: float,
        tags: Sequence[str] = (),
    ) -> None:
        unit = as_unit_vector(vector)
        stored_tags = join_tags(tags)
        with self._lock:
            self._catch_up()
            existing = self._scopes.get(scope)
            owner = (tenant, model, stored_tags)
            if existing is not None and (existing.tenant, existing.model, existing.tags) != owner:
                raise ValueError("a scope belongs to one tenant, model version and set of tags")
            self._scope(scope, tenant, model, stored_tags).put(entry_id, unit, text, response_json, expires_at)
            self._db.execute(
                "INSERT OR REPLACE INTO semantic_index"
                " (scope, entry_id, tenant, model, vector, text, response, expires_at, tags)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (scope, entry_id, tenant, model, unit.tobytes(), text, response_json, expires_at, stored_tags),
            )

    def search(self, scope: str, vector: Vector, k: int, now: float) -> list[Candidate]:
        query = as_unit_vector(vector)
        with self._lock:
            self._catch_up()
            found = self._scopes.get(scope)
            if found is None or k <= 0:
                return []
            count = len(found.ids)
            live = found.expires[:count] > now
            if 2 * int(np.count_nonzero(live)) < count:
                self._drop_expired(scope, found, now)
                count = len(found.ids)
                live = found.expires[:count] > now
            cosines = found.vectors[:count] @ query
            cosines[~live] = -np.inf
            take = min(k, int(np.count_nonzero(live)))
            if take == 0:
                return []
            # Partial selection, then a stable sort of the few chosen: ties keep insertion order.
            chosen = np.argpartition(-cosines, take - 1)[:take] if take < count else np.arange(count)
            top = chosen[np.lexsort((chosen, -cosines[chosen]))]
            return [
                Candidate(
                    found.ids[i],
                    found.texts[i],
                    found.responses[i],
                    float(min(1.0, cosines[i])),
                    found.vectors[i].copy(),
                )
                for i in top
            ]

    def _drop_expired(self, scope: str, found: _Scope, now: float) -> None:
        found.compact(now)
        self._db.execute("DELETE FROM semantic_index WHERE scope = ? AND expires_at <= ?", (scope, now))

    def purge(self, tenant: str, model: str | None = None, tag: str | None = None) -> int:
        where, args = purge_filter(tenant, model, tag)
        return self._purge(_Purge(tenant, model, tag), where, args)

    def purge_scope(self, tenant: str, scope: str) -> int:
        return self._purge(_Purge(tenant, scope=scope), "scope = ? AND tenant = ?", (scope, tenant))

    def _purge(self, purge: _Purge, where: str, args: tuple[str, ...]) -> int:
        """Delete the selected rows and leave a marker for the other processes, in one transaction;
        return how many live rows went (in the whole store, whichever process added them)."""
        now = self._clock()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                live = self._db.execute(
                    f"SELECT count(*) FROM semantic_index WHERE {where} AND expires_at > ?",  # noqa: S608 - fixed SQL
                    (*args, now),
                ).fetchone()[0]
                self._db.execute(f"DELETE FROM semantic_index WHERE {where}", args)  # noqa: S608 - fixed SQL
                self._db.execute(
                    "INSERT INTO semantic_purges (tenant, model, tag, scope, at) VALUES (?, ?, ?, ?, ?)",
                    (purge.tenant, purge.model, purge.tag, purge.scope, now),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._drop(purge)  # this connection's own marker is applied again later: harmless
            return int(live)

    def close(self) -> None:
        with self._lock:
            self._db.close()
