"""What the Momento adapters promise beyond the shared port contract: real TTLs on the server,
what is stored, purge markers that fail safe, round trips, and store errors.

The real `momento` SDK talks gRPC to the stand-in (tests/support/momento_standin.py)."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from llm_gateway.adapters.aws import StoreUnavailable
from llm_gateway.adapters.aws.momento import MomentoExactCache, MomentoRateLimiter, build_cache_client
from llm_gateway.config import RateLimit
from tests.contract.conftest import MOMENTO_CACHE
from tests.contract.records import completion
from tests.support.momento_standin import MomentoStandIn


@pytest.fixture
def cache(momento: MomentoStandIn, momento_client: Any) -> MomentoExactCache:
    return MomentoExactCache(momento_client, MOMENTO_CACHE)


def test_the_item_ttl_is_expires_at_minus_now(cache: MomentoExactCache, momento: MomentoStandIn) -> None:
    cache.put("k1", "acme", "echo", completion(), time.time() + 120)
    remaining = momento.ttl_remaining(MOMENTO_CACHE, cache.entry_key("k1"))
    assert remaining is not None and 118 < remaining <= 120


def test_the_server_drops_an_entry_when_its_ttl_runs_out(cache: MomentoExactCache) -> None:
    # Given an entry with a 0.3 s TTL
    written_at = time.time()
    cache.put("k1", "acme", "echo", completion(), written_at + 0.3)
    assert cache.get("k1", written_at) is not None
    # When 0.45 s pass in real time
    time.sleep(0.45)
    # Then it is gone even when asked with the old `now`: the server expired it, not the adapter
    assert cache.get("k1", written_at) is None


def test_stored_values_hold_the_response_and_its_scope_only(cache: MomentoExactCache, momento: MomentoStandIn) -> None:
    response = completion()
    expires_at = time.time() + 60
    cache.put("k1", "acme", "echo", response, expires_at)
    items = momento.items(MOMENTO_CACHE)
    assert set(items) == {cache.entry_key("k1").encode(), cache.marker_name("acme").encode()}
    stored = items[cache.entry_key("k1").encode()]
    assert isinstance(stored, bytes)
    head, _, body = stored.partition(b"\n")
    header = json.loads(head)
    assert set(header) == {"t", "m", "g", "e"}
    assert (header["t"], header["m"], header["e"]) == ("acme", "echo", expires_at)
    assert json.loads(body) == response.model_dump(mode="json")
    marker = items[cache.marker_name("acme").encode()]
    assert isinstance(marker, dict) and set(marker) == {b"*", b"m:echo"}
    assert header["g"] == [marker[b"*"].decode(), marker[b"m:echo"].decode()]


def test_a_lost_purge_marker_turns_hits_into_misses(cache: MomentoExactCache, momento_client: Any) -> None:
    now = time.time()
    cache.put("k1", "acme", "echo", completion(), now + 60)
    momento_client.delete(MOMENTO_CACHE, cache.marker_name("acme"))  # as if evicted or expired
    assert cache.get("k1", now) is None
    cache.put("k1", "acme", "echo", completion("again"), now + 60)
    assert cache.get("k1", now) is not None


def test_an_entry_purged_before_its_marker_is_lost_never_comes_back(
    cache: MomentoExactCache, momento_client: Any
) -> None:
    # Given an entry, purged, and then the purge marker lost
    now = time.time()
    cache.put("k1", "acme", "echo", completion(), now + 60)
    cache.purge("acme")
    momento_client.delete(MOMENTO_CACHE, cache.marker_name("acme"))
    # When the tenant caches something else (a new marker is created)
    cache.put("k2", "acme", "echo", completion(), now + 60)
    # Then the purged entry stays unreachable: tokens are never reused
    assert cache.get("k1", now) is None
    assert cache.get("k2", now) is not None


def test_round_trips_per_operation(cache: MomentoExactCache, momento: MomentoStandIn) -> None:
    now = time.time()

    def calls(operation: Any) -> dict[str, int]:
        momento.calls.clear()
        operation()
        return dict(momento.calls)

    assert calls(lambda: cache.get("k1", now)) == {"Get": 1}
    assert calls(lambda: cache.put("k1", "acme", "echo", completion(), now + 60)) == {
        "DictionaryGet": 1,
        "DictionarySet": 1,
        "Set": 1,
    }
    assert calls(lambda: cache.put("k2", "acme", "echo", completion(), now + 60)) == {"DictionaryGet": 1, "Set": 1}
    assert calls(lambda: cache.get("k1", now)) == {"Get": 1, "DictionaryGet": 1}
    assert calls(lambda: cache.purge("acme")) == {"DictionarySet": 1}
    assert calls(lambda: cache.get("k1", now)) == {"Get": 1, "DictionaryGet": 1, "Delete": 1}


def test_cache_errors_read_as_misses_and_a_failed_purge_raises(momento: MomentoStandIn, momento_client: Any) -> None:
    cache = MomentoExactCache(momento_client, "no-such-cache")
    now = time.time()
    cache.put("k1", "acme", "echo", completion(), now + 60)
    assert cache.get("k1", now) is None
    with pytest.raises(StoreUnavailable):
        cache.purge("acme")


def test_the_client_factory_reaches_a_local_endpoint(momento: MomentoStandIn) -> None:
    with build_cache_client(local_endpoint=momento.endpoint, for_lambda=False) as client:
        cache = MomentoExactCache(client, MOMENTO_CACHE)
        now = time.time()
        cache.put("k1", "acme", "echo", completion(), now + 60)
        assert cache.get("k1", now) == cache.get("k1", now) is not None
    with pytest.raises(ValueError, match="API key"):
        build_cache_client()


# --------------------------------------------------------------------------- rate limiter

LIMIT = RateLimit(requests_per_minute=600, burst=3)
WINDOW = LIMIT.capacity() / (LIMIT.requests_per_minute / 60)


def test_concurrent_lambdas_never_exceed_the_capacity_in_any_fixed_window(momento: MomentoStandIn) -> None:
    # Given four "Lambdas" (one client each) sharing a bucket, asking at random instants over five windows
    clients = [momento.cache_client() for _ in range(4)]
    limiters = [MomentoRateLimiter(client, MOMENTO_CACHE, fail_open=False) for client in clients]
    base = 7_200.0 * WINDOW  # a window boundary
    rng = random.Random(7)
    instants = [base + rng.uniform(0, 5 * WINDOW) for _ in range(200)]
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            waits = list(pool.map(lambda i: limiters[i % 4].acquire("t:shared", LIMIT, instants[i]), range(200)))
    finally:
        for client in clients:
            client.__exit__(None, None, None)
    # Then each fixed window admitted at most L, and the refused counts were taken back
    per_window = Counter(int((t - base) // WINDOW) for t, w in zip(instants, waits, strict=True) if w == 0.0)
    assert per_window and max(per_window.values()) <= LIMIT.capacity()
    counters = [v for k, v in momento.items(MOMENTO_CACHE).items() if b":rl:" in k]
    assert sorted(int(v) for v in counters if isinstance(v, bytes)) == sorted(per_window.values())


def test_bucket_names_are_not_stored_in_clear(momento: MomentoStandIn, momento_client: Any) -> None:
    limiter = MomentoRateLimiter(momento_client, MOMENTO_CACHE)
    limiter.acquire("u:acme:alice@example.com", LIMIT, 10_000.0)
    keys = list(momento.items(MOMENTO_CACHE))
    assert keys and not any(b"alice" in key or b"acme" in key for key in keys)


def test_store_errors_admit_by_default_and_raise_when_failing_closed(
    momento: MomentoStandIn, momento_client: Any
) -> None:
    bucket = f"t:{uuid.uuid4().hex[:8]}"
    assert MomentoRateLimiter(momento_client, "no-such-cache").acquire(bucket, LIMIT, 10_000.0) == 0.0
    with pytest.raises(StoreUnavailable):
        MomentoRateLimiter(momento_client, "no-such-cache", fail_open=False).acquire(bucket, LIMIT, 10_000.0)


def test_a_client_factory_is_called_once_on_first_use(momento: MomentoStandIn, momento_client: Any) -> None:
    built: list[Any] = []

    def factory() -> Any:
        built.append(momento_client)
        return momento_client

    cache = MomentoExactCache(factory, MOMENTO_CACHE)
    limiter = MomentoRateLimiter(factory, MOMENTO_CACHE)
    assert built == []  # building the adapters touches neither the key nor the network
    cache.get("k1", time.time())
    cache.get("k1", time.time())
    limiter.acquire("t:lazy", LIMIT, 10_000.0)
    assert len(built) == 2  # once per adapter (share a cached factory to share the client)


def test_an_unreadable_entry_is_a_miss(cache: MomentoExactCache, momento_client: Any) -> None:
    now = time.time()
    cache.put("k1", "acme", "echo", completion(), now + 60)
    head = momento_client.get(MOMENTO_CACHE, cache.entry_key("k1")).value_bytes.partition(b"\n")[0]
    momento_client.set(MOMENTO_CACHE, cache.entry_key("k1"), head + b'\n{"id": "from another schema"}')
    assert cache.get("k1", now) is None
    momento_client.set(MOMENTO_CACHE, cache.entry_key("k1"), b"not an entry")
    assert cache.get("k1", now) is None
