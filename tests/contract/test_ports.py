"""One contract per port, run against every adapter of that port.

ExactCache: SQLite | Momento (real SDK -> gRPC stand-in). RateLimiter: in-process token bucket |
Momento sliding window. UsageLedger and AuditLog: SQLite | DynamoDB (boto3 -> moto server).
Where adapters legitimately differ (a purge count Momento cannot know, the shape of the rate
limiter's refill) the contract states the bound both must meet.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.adapters.aws.dynamodb import SORT_KEY, TTL_ATTRIBUTE, DynamoAuditLog, DynamoUsageLedger, key_schema
from llm_gateway.adapters.aws.momento import MomentoExactCache, MomentoRateLimiter
from llm_gateway.adapters.local.memory import MemoryRateLimiter
from llm_gateway.adapters.local.sqlite import SqliteStore
from llm_gateway.cache.keys import kb_tag, prompt_tag
from llm_gateway.config import RateLimit
from llm_gateway.ports import AuditRecord, ExactCache, RateLimiter, UsageRecord
from tests.contract.conftest import MOMENTO_CACHE
from tests.contract.records import RAW_IP, RAW_USER, audit_record, completion, usage_record

# --------------------------------------------------------------------------- ExactCache


@pytest.fixture(params=["sqlite", "momento"])
def exact_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ExactCache]:
    if request.param == "sqlite":
        store = SqliteStore(tmp_path / "cache.db")
        yield store
        store.close()
    else:
        request.getfixturevalue("momento")
        yield MomentoExactCache(request.getfixturevalue("momento_client"), MOMENTO_CACHE)


def test_get_after_put_returns_the_equal_response(exact_cache: ExactCache) -> None:
    now = time.time()
    response = completion("The capital of France is Paris.")
    exact_cache.put("k1", "acme", "echo", response, now + 60)
    assert exact_cache.get("k1", now) == response
    assert exact_cache.get("k-unknown", now) is None


def test_a_second_put_replaces_the_entry(exact_cache: ExactCache) -> None:
    now = time.time()
    exact_cache.put("k1", "acme", "echo", completion("first"), now + 60)
    exact_cache.put("k1", "acme", "echo", completion("second"), now + 60)
    stored = exact_cache.get("k1", now)
    assert stored is not None and stored.text() == "second"


def test_an_entry_is_not_returned_at_or_after_its_expiry(exact_cache: ExactCache) -> None:
    now = time.time()
    exact_cache.put("k1", "acme", "echo", completion(), now + 30)
    assert exact_cache.get("k1", now + 29) is not None
    assert exact_cache.get("k1", now + 30) is None
    assert exact_cache.get("k1", now + 31) is None


def test_an_already_expired_entry_is_never_served(exact_cache: ExactCache) -> None:
    now = time.time()
    exact_cache.put("k1", "acme", "echo", completion(), now - 1)
    assert exact_cache.get("k1", now) is None


def _fill(cache: ExactCache, now: float) -> None:
    for tenant in ("acme", "globex"):
        for model in ("echo", "echo-b"):
            cache.put(f"{tenant}/{model}", tenant, model, completion(f"{tenant} {model}", model), now + 60)


def _present(cache: ExactCache, now: float) -> set[str]:
    keys = [f"{tenant}/{model}" for tenant in ("acme", "globex") for model in ("echo", "echo-b")]
    return {key for key in keys if cache.get(key, now) is not None}


def test_purge_of_a_tenant_removes_only_that_tenants_entries(exact_cache: ExactCache) -> None:
    now = time.time()
    _fill(exact_cache, now)
    removed = exact_cache.purge("acme")
    assert _present(exact_cache, now) == {"globex/echo", "globex/echo-b"}
    # SQLite counts what it deleted; Momento cannot enumerate keys and reports 0 (see its module doc).
    assert removed == (2 if isinstance(exact_cache, SqliteStore) else 0)


def test_purge_of_a_model_removes_only_that_models_entries_of_that_tenant(exact_cache: ExactCache) -> None:
    now = time.time()
    _fill(exact_cache, now)
    exact_cache.purge("acme", "echo")
    assert _present(exact_cache, now) == {"acme/echo-b", "globex/echo", "globex/echo-b"}
    exact_cache.purge("globex", "echo-b")
    assert _present(exact_cache, now) == {"acme/echo-b", "globex/echo"}


def test_entries_stored_after_a_purge_are_served(exact_cache: ExactCache) -> None:
    now = time.time()
    exact_cache.put("k1", "acme", "echo", completion("old"), now + 60)
    exact_cache.purge("acme")
    exact_cache.purge("acme", "echo")
    exact_cache.put("k1", "acme", "echo", completion("new"), now + 60)
    stored = exact_cache.get("k1", now)
    assert stored is not None and stored.text() == "new"


def test_purge_by_tag_removes_only_entries_carrying_it(exact_cache: ExactCache) -> None:
    # Given entries tagged with a system prompt and a knowledge-base version, for two tenants
    now = time.time()
    tags = {"a-v1": (prompt_tag("A"), kb_tag("v1")), "a-v2": (prompt_tag("A"), kb_tag("v2")), "b-v1": (kb_tag("v1"),)}
    for tenant in ("acme", "globex"):
        for name, entry_tags in tags.items():
            exact_cache.put(f"{tenant}/{name}", tenant, "echo", completion(name), now + 60, entry_tags)
    keys = [f"{tenant}/{name}" for tenant in ("acme", "globex") for name in tags]
    untagged = "acme/plain"
    exact_cache.put(untagged, "acme", "echo", completion(), now + 60)

    removed = exact_cache.purge("acme", tag=kb_tag("v1"))

    present = {k for k in [*keys, untagged] if exact_cache.get(k, now) is not None}
    assert present == {"acme/a-v2", untagged, "globex/a-v1", "globex/a-v2", "globex/b-v1"}
    assert removed == (2 if isinstance(exact_cache, SqliteStore) else 0)
    exact_cache.purge("acme", tag=prompt_tag("A"))
    assert {k for k in [*keys, untagged] if exact_cache.get(k, now) is not None} == {
        untagged,
        "globex/a-v1",
        "globex/a-v2",
        "globex/b-v1",
    }
    with pytest.raises(ValueError, match="not both"):
        exact_cache.purge("acme", "echo", kb_tag("v2"))


def test_purging_a_tenant_without_entries_touches_no_one_else(exact_cache: ExactCache) -> None:
    now = time.time()
    _fill(exact_cache, now)
    exact_cache.purge("initech")
    exact_cache.purge("initech", "echo")
    assert len(_present(exact_cache, now)) == 4


def test_a_store_written_before_tags_existed_is_upgraded_in_place(tmp_path: Path) -> None:
    # Given a cache table of an earlier release (no tags column) holding an entry
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE exact_cache (key TEXT PRIMARY KEY, tenant TEXT NOT NULL, model TEXT NOT NULL,"
        " response TEXT NOT NULL, expires_at REAL NOT NULL)"
    )
    old.execute("INSERT INTO exact_cache VALUES ('k0', 'acme', 'echo', ?, ?)", (completion().model_dump_json(), 1e12))
    old.commit()
    old.close()

    store = SqliteStore(path)
    store.put("k1", "acme", "echo", completion(), 1e12, (kb_tag("v1"),))

    assert store.get("k0", 0) is not None
    assert store.purge("acme", tag=kb_tag("v1")) == 1
    assert store.get("k0", 0) is not None and store.get("k1", 0) is None
    store.close()


# --------------------------------------------------------------------------- RateLimiter

LIMIT = RateLimit(requests_per_minute=600, burst=3)  # r = 10/s, L = 3
RATE = LIMIT.requests_per_minute / 60
WINDOW = LIMIT.capacity() / RATE  # the sliding window's W = L / r = 0.3 s
T0 = 10_000.0  # injected clock: small epoch values keep float error far below the tolerances


@pytest.fixture(params=["memory", "momento"])
def new_limiter(request: pytest.FixtureRequest) -> Iterator[Callable[[], RateLimiter]]:
    """Builds a limiter as one more gateway process would: memory shares one, Momento one client each."""
    if request.param == "memory":
        shared = MemoryRateLimiter()
        yield lambda: shared
        return
    standin = request.getfixturevalue("momento")
    clients: list[Any] = []

    def build() -> RateLimiter:
        clients.append(standin.cache_client())
        return MomentoRateLimiter(clients[-1], MOMENTO_CACHE, fail_open=False)

    yield build
    for client in clients:
        client.__exit__(None, None, None)


def _bucket() -> str:
    return f"t:{uuid.uuid4().hex[:8]}"


def test_admits_the_burst_then_refuses_with_a_positive_wait_then_admits_after_it(
    new_limiter: Callable[[], RateLimiter],
) -> None:
    limiter, bucket = new_limiter(), _bucket()
    assert [limiter.acquire(bucket, LIMIT, T0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire(bucket, LIMIT, T0)
    # Token bucket: one token's refill (1/r). Sliding window: until the next window opens (<= W).
    assert 0 < wait <= max(WINDOW, 1 / RATE) + 0.001
    assert limiter.acquire(bucket, LIMIT, T0 + wait / 2) > 0
    assert limiter.acquire(bucket, LIMIT, T0 + wait) == 0.0


def test_buckets_are_independent(new_limiter: Callable[[], RateLimiter]) -> None:
    limiter, tenant, user = new_limiter(), _bucket(), _bucket()
    for _ in range(3):
        limiter.acquire(tenant, LIMIT, T0)
    assert limiter.acquire(tenant, LIMIT, T0) > 0
    assert limiter.acquire(user, LIMIT, T0) == 0.0


def test_concurrent_callers_at_one_instant_get_exactly_the_burst(new_limiter: Callable[[], RateLimiter]) -> None:
    limiters, bucket = [new_limiter() for _ in range(4)], _bucket()
    with ThreadPoolExecutor(max_workers=8) as pool:
        waits = list(pool.map(lambda i: limiters[i % 4].acquire(bucket, LIMIT, T0), range(24)))
    assert waits.count(0.0) == LIMIT.capacity()
    assert all(wait > 0 for wait in waits if wait != 0.0)


def test_two_hundred_simultaneous_callers_get_exactly_the_burst(new_limiter: Callable[[], RateLimiter]) -> None:
    # The same concurrency as the budget test: 200 requests at once from 8 workers, a burst of 50.
    limit = RateLimit(requests_per_minute=1, burst=50)
    limiters, bucket = [new_limiter() for _ in range(8)], _bucket()
    start = threading.Barrier(200)

    def one(i: int) -> float:
        start.wait()
        return limiters[i % 8].acquire(bucket, limit, T0)

    with ThreadPoolExecutor(max_workers=200) as pool:
        waits = list(pool.map(one, range(200)))
    assert waits.count(0.0) == 50
    assert all(wait > 0 for wait in waits if wait != 0.0)


def test_a_saturating_caller_stays_within_the_documented_bounds(new_limiter: Callable[[], RateLimiter]) -> None:
    # Given a caller asking every 10 ms for 3 s
    limiter, bucket, span = new_limiter(), _bucket(), 3.0
    times = [T0 + i * 0.01 for i in range(int(span / 0.01))]
    admitted = [t for t in times if limiter.acquire(bucket, LIMIT, t) == 0.0]
    capacity = LIMIT.capacity()
    # Then any W-long span admits at most 2L (a token bucket: L + rW = 2L; the sliding window: < 2L)
    for start in admitted:
        assert sum(start <= t < start + WINDOW for t in admitted) <= 2 * capacity
    # And over the whole span the rate is r, give or take two bursts
    assert RATE * span - 2 * capacity <= len(admitted) <= RATE * span + 2 * capacity


# --------------------------------------------------------------------------- UsageLedger / AuditLog


@dataclass
class RecordStore:
    """A ledger or audit log under test and the adapter's own ways to read it back."""

    port: Any
    make: Callable[..., UsageRecord | AuditRecord]
    read: Callable[[str | None, float], list[Any]]
    raw_items: Callable[[], list[dict[str, object]]]
    key_attributes: frozenset[str]  # storage-only attributes besides the record's fields


def _sqlite_store(store: SqliteStore, table: str, record_type: type[UsageRecord | AuditRecord]) -> RecordStore:
    columns = tuple(record_type.model_fields)
    select = f"SELECT {', '.join(columns)} FROM {table} WHERE tenant IS ? AND ts >= ? ORDER BY ts"  # noqa: S608

    def read(tenant: str | None, since: float) -> list[Any]:
        rows = store.query(select, (tenant, since))
        return [record_type.model_validate(dict(zip(columns, row, strict=True))) for row in rows]

    def raw_items() -> list[dict[str, object]]:
        names = [str(row[1]) for row in store.query(f"PRAGMA table_info({table})")]
        rows = store.query(f"SELECT * FROM {table}")  # noqa: S608
        return [{n: v for n, v in zip(names, row, strict=True) if v is not None} for row in rows]

    make = usage_record if record_type is UsageRecord else audit_record
    return RecordStore(store, make, read, raw_items, frozenset())


def _dynamo_store(moto: Any, kind: str) -> RecordStore:
    client = moto.client("dynamodb")
    table = f"{kind}-{uuid.uuid4().hex[:8]}"
    client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **key_schema())
    client.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
    )
    port = DynamoUsageLedger(table, client) if kind == "usage" else DynamoAuditLog(table, client)

    def raw_items() -> list[dict[str, object]]:
        items = client.scan(TableName=table)["Items"]
        return [{name: next(iter(value.values())) for name, value in item.items()} for item in items]

    make = usage_record if kind == "usage" else audit_record
    read = lambda tenant, since: port.query(tenant, since, consistent=True)  # noqa: E731
    return RecordStore(port, make, read, raw_items, frozenset({SORT_KEY, TTL_ATTRIBUTE}))


@pytest.fixture(params=["usage-sqlite", "usage-dynamodb", "audit-sqlite", "audit-dynamodb"])
def records(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordStore]:
    kind, backend = request.param.split("-")
    if backend == "dynamodb":
        yield _dynamo_store(request.getfixturevalue("moto"), kind)
        return
    store = SqliteStore(tmp_path / "records.db")
    yield _sqlite_store(store, kind, UsageRecord if kind == "usage" else AuditRecord)
    store.close()


def test_records_are_written_and_read_back_equal(records: RecordStore) -> None:
    entry = records.make()
    records.port.record(entry)
    assert records.read("acme", 0.0) == [entry]


def test_a_retried_record_with_the_same_request_id_is_not_duplicated(records: RecordStore) -> None:
    entry = records.make()
    records.port.record(entry)
    records.port.record(entry)
    assert records.read("acme", 0.0) == [entry]
    assert len(records.raw_items()) == 1


def test_reads_are_scoped_to_a_tenant_and_a_time(records: RecordStore) -> None:
    first, later = records.make(ts=1_790_000_000.5), records.make(ts=1_790_000_100.0)
    other = records.make(tenant="globex", ts=1_790_000_000.5)
    for entry in (later, other, first):
        records.port.record(entry)
    assert records.read("acme", 0.0) == [first, later]
    assert records.read("acme", 1_790_000_000.5) == [first, later]
    assert records.read("acme", 1_790_000_000.6) == [later]
    assert records.read("globex", 0.0) == [other]
    assert records.read("initech", 0.0) == []


def test_stored_items_hold_the_records_fields_and_no_raw_identifiers(records: RecordStore) -> None:
    entry = records.make()
    records.port.record(entry)
    (item,) = records.raw_items()
    fields = set(type(entry).model_fields)
    assert set(item) - records.key_attributes == {name for name, value in entry if value is not None}
    assert set(item) - records.key_attributes <= fields
    assert RAW_USER not in repr(item) and RAW_IP not in repr(item)


@pytest.mark.parametrize("records", ["audit-sqlite", "audit-dynamodb"], indirect=True)
def test_audit_records_without_a_tenant_are_kept(records: RecordStore) -> None:
    entry = audit_record(tenant=None)
    records.port.record(entry)
    assert records.read(None, 0.0) == [entry]
