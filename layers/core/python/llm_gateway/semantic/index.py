"""The semantic index port: nearest stored queries by cosine, within one scope.

Adapters: `adapters.local.semantic.LocalSemanticIndex` (numpy in process, persisted to SQLite, exact
search) and `adapters.aws.momento_semantic.MomentoSemanticIndex` (random-hyperplane LSH buckets
on Momento, exact cosine on the candidates).

Isolation is structural: `search` looks only at entries added under the identical `scope` string
(see `semantic.scope.semantic_scope`), so similarity can never carry an answer across tenants,
model versions, system prompts, conversations or knowledge-base versions.

Invalidation:
- TTL: every entry has `expires_at` and is never returned at or after it.
- `purge(tenant)` / `purge(tenant, model)`: every entry of the tenant (of that model version).
- System-prompt and knowledge-base versions are part of the scope, so a new version simply never
  matches the old entries, which expire by TTL. To remove them at once: `purge(tenant, tag=...)`
  with `cache.keys.prompt_tag(text)` or `kb_tag(version)` (entries carry the tags of their
  request), or `purge_scope(tenant, scope)` for one scope. It takes the tenant
  because a Momento purge marker is per tenant, and so that a purge can only reach its own tenant.
- Purge counts: the local index returns how many live entries went; Momento returns 0 (it cannot
  count what a replaced generation token invalidated).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
DIMENSIONS = 384


@dataclass(frozen=True)
class Candidate:
    """A stored entry near the query: its id, its query text, the stored response, the cosine, and
    the stored unit vector (so a verifier need not embed the candidate text again)."""

    entry_id: str
    text: str
    response_json: str
    cosine: float
    vector: Vector | None = field(default=None, compare=False, repr=False)


class SemanticIndex(Protocol):
    """Stored (query vector, query text, response) entries, searched by cosine within one scope.

    Vectors are L2-normalised float32 of `DIMENSIONS` dimensions (as `Embedder.embed` returns)."""

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
        """Store an entry (replacing one with the same id in the same scope). `tenant`, `model` and
        `tags` (`cache.keys.cache_tags`) must be those of the request the scope was computed from:
        purges find entries by them (a scope has one tenant, model and set of tags)."""
        ...

    def search(self, scope: str, vector: Vector, k: int, now: float) -> list[Candidate]:
        """Up to `k` unexpired entries of exactly `scope`, highest cosine first."""
        ...

    def purge(self, tenant: str, model: str | None = None, tag: str | None = None) -> int:
        """Remove a tenant's entries, or one model version's, or those carrying `tag` (at most one
        of the two); return how many, or 0 when unknown."""
        ...

    def purge_scope(self, tenant: str, scope: str) -> int:
        """Remove every entry of one scope of `tenant`; return how many, or 0 when unknown."""
        ...


def as_unit_vector(vector: npt.ArrayLike) -> Vector:
    """A float32 1-D copy scaled to unit length; raises on a wrong shape or a zero vector."""
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    if array.shape != (DIMENSIONS,):
        raise ValueError(f"expected a {DIMENSIONS}-dimensional vector, got shape {array.shape}")
    norm = float(np.linalg.norm(array))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("cannot index a zero or non-finite vector")
    return (array / norm).astype(np.float32)


def encode_vector(vector: Vector) -> str:
    """Base64 of the float32 bytes: how a query vector travels in the state from lookup to store."""
    return base64.b64encode(as_unit_vector(vector).tobytes()).decode()


def decode_vector(encoded: str) -> Vector:
    """The inverse of `encode_vector`; raises `ValueError` on anything else."""
    raw = base64.b64decode(encoded, validate=True)
    return as_unit_vector(np.frombuffer(raw, dtype=np.float32))
