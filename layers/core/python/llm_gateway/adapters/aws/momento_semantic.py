"""`SemanticIndex` on Momento: random-hyperplane LSH buckets, exact cosine in the Lambda.

Momento's vector index product is gone, and a cache cannot scan, so the index is bucketed
(`semantic.lsh`): each entry is hashed into `bands` band values, and for each band it is written as
a field of a Momento dictionary, the *bucket*:

    {prefix}:sem:{lsh}:{scope}:{band}:{hash}   field = entry id, value = header + float16 vector
    {prefix}:sem:e:{scope}:{entry_id}          header (scope, tenant, model, tokens, expiry, text)
                                               + float32 vector + response JSON
    {prefix}:sem:purge:{tenant}                purge marker: fields `*`, `m:{model}`, `s:{scope}`,
                                               `t:{tag}`

The scope is in every bucket key, so a search can only ever see its own scope's entries.

Search: fetch the query's `bands` buckets (in parallel), union their fields, drop expired and purged
ones, rank by cosine on the float16 vectors, fetch the best `k` entries (in parallel), and return
them ranked by the exact float32 cosine. Round trips: `bands` bucket reads + 1 marker read + up to
`k` entry reads, in three parallel waves. The bucket vectors let most candidates be ranked without
fetching their (large) entries; the entry's float32 vector makes the returned cosine exact.

Purge works like the exact cache's (`adapters.aws.momento`): an entry records the generation
tokens current when it was written (tenant `*`, model `m:{model}`, scope `s:{scope}`, and `t:{tag}`
for each of its tags), and is returned only while all are still current; `purge` replaces one token, and the invalidated
entries expire by their TTL. The tenant and model tokens are always created before a write, so
a lost marker turns entries into misses, never revives them. The scope token may stay unset ("")
until the scope is first purged: the marker would otherwise grow by one field per conversation,
and an unset scope token cannot revive anything because the tenant token guards the same entries.
A search that meets expired or purged fields removes them from the buckets it read (best effort).

Each add refreshes a bucket's TTL to the new entry's TTL; within a scope (one tenant) the TTL is
normally the same for every entry, so a bucket lives as long as its newest entry.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ...semantic.index import DIMENSIONS, Candidate, Vector, as_unit_vector
from ...semantic.lsh import HyperplaneLSH
from . import StoreUnavailable
from .momento import TENANT_FIELD, _MomentoAdapter, _new_token, purge_field

if TYPE_CHECKING:
    from momento import CacheClient

log = logging.getLogger(__name__)

_VECTOR16_BYTES = DIMENSIONS * 2
_VECTOR32_BYTES = DIMENSIONS * 4
Tokens = tuple[str, ...]  # of the marker fields: tenant `*`, `m:{model}`, `s:{scope}`, then `t:{tag}` per tag
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class _Posting:
    """One entry as a bucket holds it."""

    tenant: str
    model: str
    tags: tuple[str, ...]
    tokens: Tokens
    expires_at: float
    vector: Vector


def _header(raw: bytes) -> tuple[dict[str, Any], bytes] | None:
    head, _, rest = raw.partition(b"\n")
    try:
        header = json.loads(head)
    except ValueError:
        return None
    return (header, rest) if isinstance(header, dict) else None


def _strings(value: Any) -> tuple[str, ...] | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return tuple(value)


def _tokens(header: dict[str, Any]) -> Tokens | None:
    tokens, tags = _strings(header.get("g")), _strings(header.get("x", []))
    if tokens is None or tags is None or len(tokens) != 3 + len(tags):
        return None
    return tokens


def _marker_fields(model: str, scope: str, tags: tuple[str, ...]) -> list[str]:
    return [TENANT_FIELD, f"m:{model}", f"s:{scope}", *(f"t:{tag}" for tag in tags)]


def _encode_posting(
    tenant: str, model: str, tags: tuple[str, ...], tokens: Tokens, expires_at: float, vector: Vector
) -> bytes:
    header = {"t": tenant, "m": model, "x": list(tags), "g": list(tokens), "e": expires_at}
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + vector.astype(np.float16).tobytes()


def _decode_posting(raw: bytes) -> _Posting | None:
    parsed = _header(raw)
    if parsed is None:
        return None
    header, body = parsed
    tokens, tags = _tokens(header), _strings(header.get("x", []))
    tenant, model, expires_at = header.get("t"), header.get("m"), header.get("e")
    if tokens is None or tags is None or not isinstance(tenant, str) or not isinstance(model, str):
        return None
    if len(body) != _VECTOR16_BYTES or not isinstance(expires_at, int | float):
        return None
    vector = np.frombuffer(body, dtype=np.float16).astype(np.float32)
    return _Posting(tenant, model, tags, tokens, float(expires_at), vector)


class MomentoSemanticIndex(_MomentoAdapter):
    """`SemanticIndex` on a Momento cache (see the module doc for the layout and its costs)."""

    def __init__(
        self,
        client: CacheClient | Callable[[], CacheClient],
        cache_name: str,
        *,
        prefix: str = "gw",
        lsh: HyperplaneLSH | None = None,
        marker_ttl_s: float = 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`marker_ttl_s`: as for `MomentoExactCache`, at least the longest entry TTL."""
        super().__init__(client, cache_name, prefix)
        self._lsh = lsh or HyperplaneLSH()
        self._marker_ttl = timedelta(seconds=marker_ttl_s)
        self._clock = clock
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ keys

    def bucket_key(self, scope: str, band: int, value: int) -> str:
        return f"{self._prefix}:sem:{self._lsh.name}:{scope}:{band}:{value:x}"

    def entry_key(self, scope: str, entry_id: str) -> str:
        return f"{self._prefix}:sem:e:{scope}:{entry_id}"

    def marker_name(self, tenant: str) -> str:
        return f"{self._prefix}:sem:purge:{tenant}"

    def bucket_keys(self, scope: str, vector: Vector) -> list[str]:
        return [self.bucket_key(scope, band, h) for band, h in enumerate(self._lsh.band_hashes(vector))]

    def _map(self, function: Callable[[_T], _R], items: list[_T]) -> list[_R]:
        """`function` over `items` concurrently: the round trips of one wave overlap."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=max(4, self._lsh.bands), thread_name_prefix="momento-sem")
        return list(self._pool.map(function, items))

    # ------------------------------------------------------------------ writes

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
        from momento.requests import CollectionTtl
        from momento.responses import CacheDictionarySetField, CacheSet

        unit = as_unit_vector(vector)
        ttl_s = expires_at - self._clock()
        if ttl_s < 0.001:  # Momento TTLs are whole, positive milliseconds
            return
        tags = tuple(tags)
        tokens = self._current_tokens(tenant, model, scope, tags)
        if tokens is not None and "" in tokens[:2]:
            tokens = self._create_tokens(tenant, model, tokens)
        if tokens is None:
            return  # the marker could not be read or written: storing blind could outlive a purge
        ttl = timedelta(seconds=ttl_s)
        header = {"s": scope, "t": tenant, "m": model, "x": list(tags), "g": list(tokens), "e": expires_at, "q": text}
        entry = json.dumps(header, separators=(",", ":")).encode() + b"\n" + unit.tobytes() + response_json.encode()
        stored = self._client.set(self._cache, self.entry_key(scope, entry_id), entry, ttl=ttl)
        if not isinstance(stored, CacheSet.Success):
            log.warning("momento semantic entry set failed: %s", getattr(stored, "message", stored))
            return
        posting = _encode_posting(tenant, model, tags, tokens, expires_at, unit)
        bucket_ttl = CollectionTtl.of(ttl)
        answers = self._map(
            lambda key: self._client.dictionary_set_field(self._cache, key, entry_id, posting, ttl=bucket_ttl),
            self.bucket_keys(scope, unit),
        )
        failed = [a for a in answers if not isinstance(a, CacheDictionarySetField.Success)]
        if failed:  # the entry is still found through the other bands
            log.warning("momento semantic bucket writes failed: %d of %d", len(failed), len(answers))

    # ------------------------------------------------------------------ reads

    def search(self, scope: str, vector: Vector, k: int, now: float) -> list[Candidate]:
        if k <= 0:
            return []
        query = as_unit_vector(vector)
        keys = self.bucket_keys(scope, query)
        buckets = self._map(self._fetch_bucket, keys)
        postings: dict[str, _Posting] = {}
        for bucket in buckets:
            for entry_id, posting in bucket.items():
                if posting is not None and entry_id not in postings:
                    postings[entry_id] = posting
        live = {entry_id: p for entry_id, p in postings.items() if p.expires_at > now}
        if not live:
            self._remove_stale(keys, buckets, set())
            return []
        first = next(iter(live.values()))
        tokens = self._current_tokens(first.tenant, first.model, scope, first.tags)
        if tokens is None:
            return []  # cannot tell what was purged: fail closed
        owner = (first.tenant, first.model, first.tags, tokens)
        valid = {entry_id: p for entry_id, p in live.items() if (p.tenant, p.model, p.tags, p.tokens) == owner}
        self._remove_stale(keys, buckets, set(valid))
        if not valid:
            return []
        ids = list(valid)
        cosines = np.stack([valid[i].vector for i in ids]) @ query
        best = [ids[i] for i in np.argsort(-cosines, kind="stable")[:k]]
        entries = self._map(lambda entry_id: self._fetch_entry(scope, entry_id), best)
        found: list[Candidate] = []
        for entry_id, fetched in zip(best, entries, strict=True):
            if fetched is None:
                continue  # evicted, or replaced under another scope header
            text, response, entry_vector, entry_tokens, entry_expiry = fetched
            if entry_tokens == tokens and entry_expiry > now:
                found.append(Candidate(entry_id, text, response, min(1.0, float(entry_vector @ query)), entry_vector))
        return sorted(found, key=lambda c: -c.cosine)

    def _fetch_bucket(self, key: str) -> dict[str, _Posting | None]:
        from momento.responses import CacheDictionaryFetch

        answer = self._client.dictionary_fetch(self._cache, key)
        if isinstance(answer, CacheDictionaryFetch.Hit):
            return {field: _decode_posting(raw) for field, raw in answer.value_dictionary_string_bytes.items()}
        if isinstance(answer, CacheDictionaryFetch.Error):
            log.warning("momento semantic bucket read failed: %s", answer.message)
        return {}

    def _fetch_entry(self, scope: str, entry_id: str) -> tuple[str, str, Vector, Tokens, float] | None:
        from momento.responses import CacheGet

        answer = self._client.get(self._cache, self.entry_key(scope, entry_id))
        if not isinstance(answer, CacheGet.Hit):
            if isinstance(answer, CacheGet.Error):
                log.warning("momento semantic entry read failed: %s", answer.message)
            return None
        parsed = _header(answer.value_bytes)
        if parsed is None:
            return None
        header, body = parsed
        tokens, text, expires_at = _tokens(header), header.get("q"), header.get("e")
        if header.get("s") != scope or tokens is None or not isinstance(text, str) or len(body) < _VECTOR32_BYTES:
            return None
        if not isinstance(expires_at, int | float):
            return None
        vector = np.frombuffer(body[:_VECTOR32_BYTES], dtype=np.float32)
        try:
            response = body[_VECTOR32_BYTES:].decode()
        except UnicodeDecodeError:
            return None
        return text, response, vector, tokens, float(expires_at)

    def _remove_stale(self, keys: list[str], buckets: list[dict[str, _Posting | None]], keep: set[str]) -> None:
        """Best effort: drop fields of expired, purged or unreadable postings from the buckets just read."""
        for key, bucket in zip(keys, buckets, strict=True):
            stale = [entry_id for entry_id in bucket if entry_id not in keep]
            if stale:
                self._client.dictionary_remove_fields(self._cache, key, stale)

    # ------------------------------------------------------------------ purge

    def purge(self, tenant: str, model: str | None = None, tag: str | None = None) -> int:
        self._replace_token(tenant, purge_field(model, tag))
        return 0

    def purge_scope(self, tenant: str, scope: str) -> int:
        self._replace_token(tenant, f"s:{scope}")
        return 0

    def _replace_token(self, tenant: str, field: str) -> None:
        from momento.requests import CollectionTtl
        from momento.responses import CacheDictionarySetField

        answer = self._client.dictionary_set_field(
            self._cache, self.marker_name(tenant), field, _new_token(), ttl=CollectionTtl.of(self._marker_ttl)
        )
        if not isinstance(answer, CacheDictionarySetField.Success):
            raise StoreUnavailable(f"the semantic index purge for tenant {tenant!r} did not happen: {answer}")

    def _current_tokens(self, tenant: str, model: str, scope: str, tags: tuple[str, ...]) -> Tokens | None:
        """The tenant's, model's, scope's and tags' tokens ("" where unset); None when the marker
        cannot be read."""
        from momento.responses import CacheDictionaryGetField, CacheDictionaryGetFields

        fields = _marker_fields(model, scope, tags)
        answer = self._client.dictionary_get_fields(self._cache, self.marker_name(tenant), fields)
        if isinstance(answer, CacheDictionaryGetFields.Miss):
            return ("",) * len(fields)
        if not isinstance(answer, CacheDictionaryGetFields.Hit):
            log.warning("momento semantic purge marker read failed: %s", getattr(answer, "message", answer))
            return None
        return tuple(
            part.value_string if isinstance(part, CacheDictionaryGetField.Hit) else "" for part in answer.responses
        )

    def _create_tokens(self, tenant: str, model: str, tokens: Tokens) -> Tokens | None:
        from momento.requests import CollectionTtl
        from momento.responses import CacheDictionarySetFields

        whole, per_model = tokens[0] or _new_token(), tokens[1] or _new_token()
        missing = {
            field: value
            for field, value, old in ((TENANT_FIELD, whole, tokens[0]), (f"m:{model}", per_model, tokens[1]))
            if not old
        }
        answer = self._client.dictionary_set_fields(
            self._cache, self.marker_name(tenant), missing, ttl=CollectionTtl.of(self._marker_ttl)
        )
        if not isinstance(answer, CacheDictionarySetFields.Success):
            log.warning("momento semantic purge marker write failed: %s", getattr(answer, "message", answer))
            return None
        return (whole, per_model, *tokens[2:])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
