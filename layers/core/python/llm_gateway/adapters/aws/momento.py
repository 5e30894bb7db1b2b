"""Momento adapters: the exact response cache and the rate limiter shared by all Lambdas.

Exact cache. Momento cannot list keys, so `purge` cannot find entries to delete. Each tenant has a
*purge marker* instead: a Momento dictionary `{prefix}:purge:{tenant}` whose field `*` (the whole
tenant), fields `m:{model}` and fields `t:{tag}` (`cache.keys.cache_tags`) hold random generation
tokens. An entry is stored under `{prefix}:x:{key}` together with the tokens of its tenant, model
and tags that were current when it was written, and `get` returns it only while all are still
current. `purge` replaces one token: every entry written under the old one becomes unreachable at
once and expires by its own TTL.

- The tokens travel in the entry rather than in its key because the port's `get(key, now)` knows
  only the digest, not the tenant or model, so it could not compute a generation-folded key.
- Tokens are random, not counters: a counter whose item expires or is evicted starts again at 0
  and would revive entries written under an earlier generation of the same number. A token is
  never reused and `put` creates missing marker fields before writing, so no entry ever carries an
  empty token; a lost marker can only turn hits into misses.
- Round trips: `get` 1 on a miss, 2 on a hit (entry, then marker); `put` 2 (marker, entry), 3 when
  the marker is created; `purge` 1. `purge` returns 0: Momento cannot count what it invalidated.

Rate limiter. A sliding-window counter over two fixed windows, on Momento's atomic `increment`
(see `MomentoRateLimiter`). Bucket names are hashed before they become keys: they can carry
a caller's user id, which must not be stored in clear outside the gateway.

The SDK is imported where it is used, so importing this module stays cheap (see the package doc).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ...config import RateLimit
from ...contracts import ChatCompletion
from . import StoreUnavailable

if TYPE_CHECKING:
    from momento import CacheClient

log = logging.getLogger(__name__)

TENANT_FIELD = "*"
# Added to computed waits so that float rounding (epoch seconds carry ~1e-7 s of error) cannot turn
# "come back in w seconds" into another refusal at exactly the boundary.
_NUDGE_S = 1e-4
_MIN_WAIT_S = 1e-3


def build_cache_client(
    api_key: str | None = None,
    endpoint: str | None = None,
    *,
    local_endpoint: str | None = None,
    default_ttl_s: float = 3600.0,
    for_lambda: bool = True,
) -> CacheClient:
    """A `momento.CacheClient` for a v2 API key and its endpoint (e.g. `cell-4-us-west-2-1.prod.a.momentohq.com`),
    or, when `local_endpoint` ("host:port") is given, a plaintext one for Momento Local or the tests' stand-in.

    The client connects on first use (no eager connection: a cold start must not wait on it)."""
    from momento import CacheClient, Configurations, CredentialProvider

    if local_endpoint:
        host, _, port = local_endpoint.rpartition(":")
        credentials = CredentialProvider.for_momento_local(host or "127.0.0.1", int(port))
    elif api_key and endpoint:
        credentials = CredentialProvider.from_api_key_v2(api_key, endpoint)
    else:
        raise ValueError("a Momento client needs an API key and endpoint, or a local endpoint")
    configuration = Configurations.Lambda.latest() if for_lambda else Configurations.Laptop.latest()
    return CacheClient(configuration, credentials, timedelta(seconds=default_ttl_s))


class _MomentoAdapter:
    """Holds the client, or a factory called on first use: a Lambda whose role cannot read the
    Momento key (it never touches Momento) must still be able to build the adapters."""

    def __init__(self, client: CacheClient | Callable[[], CacheClient], cache_name: str, prefix: str) -> None:
        self._source = client
        self._built: CacheClient | None = None
        self._cache = cache_name
        self._prefix = prefix

    @property
    def _client(self) -> CacheClient:
        if self._built is None:
            self._built = self._source() if callable(self._source) else self._source
        return self._built


# --------------------------------------------------------------------------- exact cache


@dataclass(frozen=True)
class _Entry:
    tenant: str
    model: str
    tokens: tuple[str, str]
    expires_at: float
    body: bytes
    # The entry's tags and the tokens of their marker fields `t:{tag}` when it was written ("" =
    # unset: creating a field per tag would grow the marker; an unset token still guards, because
    # a purge sets one and "" then no longer matches).
    tags: tuple[str, ...] = ()
    tag_tokens: tuple[str, ...] = ()

    @property
    def all_tokens(self) -> list[str]:
        return [*self.tokens, *self.tag_tokens]


def marker_fields(model: str, tags: Sequence[str]) -> list[str]:
    """The purge-marker fields guarding an entry: the tenant's, its model's, one per tag."""
    return [TENANT_FIELD, f"m:{model}", *(f"t:{tag}" for tag in tags)]


def purge_field(model: str | None, tag: str | None) -> str:
    """The marker field a purge replaces: the tenant's, a model's or a tag's."""
    if model is not None and tag is not None:
        raise ValueError("purge by model or by tag, not both")
    if model is not None:
        return f"m:{model}"
    return TENANT_FIELD if tag is None else f"t:{tag}"


def _encode(entry: _Entry) -> bytes:
    header: dict[str, Any] = {"t": entry.tenant, "m": entry.model, "g": list(entry.tokens), "e": entry.expires_at}
    if entry.tags:
        header["x"] = [list(pair) for pair in zip(entry.tags, entry.tag_tokens, strict=True)]
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + entry.body


def _decode(raw: bytes) -> _Entry | None:
    head, _, body = raw.partition(b"\n")
    try:
        header = json.loads(head)
        tenant, model, (whole, per_model), expires_at = header["t"], header["m"], header["g"], header["e"]
        tagged = [(tag, token) for tag, token in header.get("x", [])]
    except (ValueError, KeyError, TypeError):
        return None
    strings = (tenant, model, whole, per_model, *(v for pair in tagged for v in pair))
    if not all(isinstance(v, str) for v in strings) or not isinstance(expires_at, int | float):
        return None
    tags, tag_tokens = tuple(t for t, _ in tagged), tuple(g for _, g in tagged)
    return _Entry(tenant, model, (whole, per_model), float(expires_at), body, tags, tag_tokens)


def _new_token() -> str:
    return secrets.token_hex(8)


class MomentoExactCache(_MomentoAdapter):
    """`ExactCache` on a Momento cache; purges by replacing generation tokens (see the module doc)."""

    def __init__(
        self,
        client: CacheClient | Callable[[], CacheClient],
        cache_name: str,
        *,
        prefix: str = "gw",
        marker_ttl_s: float = 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`marker_ttl_s`: how long a tenant's purge marker lives after it was last written; when it
        lapses the tenant's entries become misses, so set it to at least the longest cache TTL
        (and no more than the Momento cache's maximum item TTL)."""
        super().__init__(client, cache_name, prefix)
        self._marker_ttl = timedelta(seconds=marker_ttl_s)
        self._clock = clock

    def entry_key(self, key: str) -> str:
        return f"{self._prefix}:x:{key}"

    def marker_name(self, tenant: str) -> str:
        return f"{self._prefix}:purge:{tenant}"

    def get(self, key: str, now: float) -> ChatCompletion | None:
        entry = self._entry(key)
        if entry is None or entry.expires_at <= now:
            return None
        tokens = self._tokens(entry.tenant, marker_fields(entry.model, entry.tags))
        if tokens != entry.all_tokens:
            if tokens is not None:  # purged: free the memory early
                self._client.delete(self._cache, self.entry_key(key))
            return None
        try:
            return ChatCompletion.model_validate_json(entry.body)
        except ValueError:  # written by a release with another response schema: a miss, not a failure
            return None

    def _entry(self, key: str) -> _Entry | None:
        from momento.responses import CacheGet

        answer = self._client.get(self._cache, self.entry_key(key))
        if isinstance(answer, CacheGet.Hit):
            return _decode(answer.value_bytes)
        if isinstance(answer, CacheGet.Error):
            log.warning("momento cache get failed: %s", answer.message)
        return None

    def put(
        self,
        key: str,
        tenant: str,
        model: str,
        response: ChatCompletion,
        expires_at: float,
        tags: Sequence[str] = (),
    ) -> None:
        from momento.responses import CacheSet

        ttl_s = expires_at - self._clock()
        if ttl_s < 0.001:  # Momento TTLs are whole milliseconds and must be positive
            return
        tags = tuple(tags)
        tokens = self._tokens(tenant, marker_fields(model, tags))
        if tokens is not None and "" in tokens[:2]:
            created = self._create_marker_fields(tenant, model, (tokens[0], tokens[1]))
            tokens = None if created is None else [*created, *tokens[2:]]
        if tokens is None:
            return  # the marker could not be read or written: storing blind could outlive a purge
        body = response.model_dump_json().encode()
        entry = _Entry(tenant, model, (tokens[0], tokens[1]), expires_at, body, tags, tuple(tokens[2:]))
        answer = self._client.set(self._cache, self.entry_key(key), _encode(entry), ttl=timedelta(seconds=ttl_s))
        if not isinstance(answer, CacheSet.Success):
            log.warning("momento cache set failed: %s", getattr(answer, "message", answer))

    def purge(self, tenant: str, model: str | None = None, tag: str | None = None) -> int:
        from momento.requests import CollectionTtl
        from momento.responses import CacheDictionarySetField

        field = purge_field(model, tag)
        answer = self._client.dictionary_set_field(
            self._cache, self.marker_name(tenant), field, _new_token(), ttl=CollectionTtl.of(self._marker_ttl)
        )
        if not isinstance(answer, CacheDictionarySetField.Success):
            raise StoreUnavailable(f"the cache purge for tenant {tenant!r} did not happen: {answer}")
        return 0

    def _tokens(self, tenant: str, fields: list[str]) -> list[str] | None:
        """The current tokens of these marker fields ("" where none is set); None on error."""
        from momento.responses import CacheDictionaryGetField, CacheDictionaryGetFields

        answer = self._client.dictionary_get_fields(self._cache, self.marker_name(tenant), fields)
        if isinstance(answer, CacheDictionaryGetFields.Miss):
            return [""] * len(fields)
        if not isinstance(answer, CacheDictionaryGetFields.Hit):
            log.warning("momento purge marker read failed: %s", getattr(answer, "message", answer))
            return None
        return [part.value_string if isinstance(part, CacheDictionaryGetField.Hit) else "" for part in answer.responses]

    def _create_marker_fields(self, tenant: str, model: str, tokens: tuple[str, str]) -> tuple[str, str] | None:
        from momento.requests import CollectionTtl
        from momento.responses import CacheDictionarySetFields

        whole, per_model = (token or _new_token() for token in tokens)
        fields = {TENANT_FIELD: whole, f"m:{model}": per_model}
        missing = {field: value for (field, value), old in zip(fields.items(), tokens, strict=True) if not old}
        answer = self._client.dictionary_set_fields(
            self._cache, self.marker_name(tenant), missing, ttl=CollectionTtl.of(self._marker_ttl)
        )
        if not isinstance(answer, CacheDictionarySetFields.Success):
            log.warning("momento purge marker write failed: %s", getattr(answer, "message", answer))
            return None
        # Two first writers racing here may overwrite each other's token; the loser's entry is then
        # a miss, never a wrong hit.
        return whole, per_model


# --------------------------------------------------------------------------- rate limiter


def sliding_window_wait(previous: int, others: int, capacity: int, window_s: float, start: float, now: float) -> float:
    """Seconds from `now` until one more request fits, assuming nobody else asks meanwhile.

    `previous`: the previous window's count; `others`: requests counted in the current window
    (which began at `start`), this refused one excluded. A request fits while
    `previous * (1 - elapsed / window) + others < capacity`."""
    room = capacity - others
    if room > 0:
        if previous <= 0:  # only under a race: the count fell since the refusal was decided
            return _MIN_WAIT_S
        elapsed = window_s * (1.0 - room / previous)
        if elapsed < window_s:
            return max(start + elapsed - now, 0.0) + _NUDGE_S
    # Not within this window: in the next one, this window's count is the one that decays.
    elapsed = window_s * (1.0 - capacity / others) if others >= capacity else 0.0
    return max(start + window_s + elapsed - now, 0.0) + _NUDGE_S


class MomentoRateLimiter(_MomentoAdapter):
    """`RateLimiter` as a sliding-window counter on Momento `increment`, correct across concurrent Lambdas.

    For `RateLimit(requests_per_minute, burst)`: capacity L = `limit.capacity()`, rate r = rpm/60,
    window W = L / r. Time is cut into fixed windows of length W, each with a counter that
    `increment` bumps atomically (TTL 2W + margin). A request at offset e into window k is admitted
    when the load already there is below L: `count[k-1] * (1 - e/W) + (count[k] - 1) < L`, where
    `count[k]` is what its own increment returned; the previous window's requests are assumed to
    have been spread evenly over it. A refused request takes its increment back (`increment -1`),
    so refusals do not eat the allowance. Two round trips per admitted request, three per refusal.

    Bounds, for callers whose clocks agree:
    - each fixed window admits at most L (the counter is atomic and a request is admitted only if
      its own increment returned at most L), so concurrent Lambdas cannot overshoot together;
    - any span of W seconds admits at most 2L, which is what a token bucket of the same rate and
      burst allows too (L + rW); under saturation it admits r per second, so at most rT + 2L
      over any T seconds;
    - right after a burst it is stricter than a token bucket: having spent L at once, a client is
      next admitted when the following window opens (within W) rather than after 1/r.
    The returned wait is exact for this model when no one else asks meanwhile.

    Store errors: with `fail_open` (default) the request is admitted and a warning logged; without
    it `StoreUnavailable` is raised.
    """

    def __init__(
        self,
        client: CacheClient | Callable[[], CacheClient],
        cache_name: str,
        *,
        prefix: str = "gw",
        fail_open: bool = True,
        ttl_margin_s: float = 10.0,
    ) -> None:
        super().__init__(client, cache_name, prefix)
        self._fail_open = fail_open
        self._ttl_margin_s = ttl_margin_s

    def window_key(self, bucket: str, window_s: float, index: int) -> str:
        digest = hashlib.sha256(bucket.encode()).hexdigest()[:32]
        return f"{self._prefix}:rl:{digest}:{round(window_s * 1000)}:{index}"

    def acquire(self, bucket: str, limit: RateLimit, now: float) -> float:
        from momento.responses import CacheGet, CacheIncrement

        capacity = limit.capacity()
        window_s = capacity / (limit.requests_per_minute / 60.0)
        index = math.floor(now / window_s)
        start = index * window_s
        weight = 1.0 - (now - start) / window_s
        current_key = self.window_key(bucket, window_s, index)
        ttl = timedelta(seconds=2 * window_s + self._ttl_margin_s)

        counted = self._client.increment(self._cache, current_key, 1, ttl=ttl)
        if not isinstance(counted, CacheIncrement.Success):
            return self._unavailable(counted)
        answer = self._client.get(self._cache, self.window_key(bucket, window_s, index - 1))
        if isinstance(answer, CacheGet.Hit):
            previous = int(answer.value_string)
        elif isinstance(answer, CacheGet.Miss):
            previous = 0
        else:
            return self._unavailable(answer)
        if previous * weight + (counted.value - 1) < capacity:
            return 0.0
        self._client.increment(self._cache, current_key, -1, ttl=ttl)  # best effort: a lost one only over-counts
        return sliding_window_wait(previous, counted.value - 1, capacity, window_s, start, now)

    def _unavailable(self, answer: object) -> float:
        message = getattr(answer, "message", answer)
        if self._fail_open:
            log.warning("rate limiter store failed, admitting: %s", message)
            return 0.0
        raise StoreUnavailable(f"the rate limiter store failed: {message}")
