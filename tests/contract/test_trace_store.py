"""The `TraceStore` port: the SQLite adapter (embedded default) and the DynamoDB one (on moto's
server) keep the same promises: a trace is found only under its tenant and until it expires,
feedback is appended to it (and to no other tenant's), a repeated put keeps the first; and what
distillation reads (`with_content`): the tenant's traces of a time window that kept content."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.adapters.aws.traces import DynamoTraceStore, trace_key_schema
from llm_gateway.adapters.local.traces import SqliteTraceStore
from llm_gateway.ports import Feedback, StepTrace, Trace, TraceStore
from tests.support.moto_server import MotoServer

NOW = 1_790_000_000.0


@pytest.fixture(params=["sqlite", "aws"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TraceStore]:
    if request.param == "sqlite":
        local = SqliteTraceStore(tmp_path / "traces.db")
        yield local
        local.close()
        return
    moto: MotoServer = request.getfixturevalue("moto")
    dynamodb = moto.client("dynamodb")
    table = f"traces-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **trace_key_schema())
    yield DynamoTraceStore(table, dynamodb)


def trace(request_id: str, tenant: str = "acme", ttl_s: float = 3600, outcome: str = "ok") -> Trace:
    return Trace(
        request_id=request_id,
        tenant=tenant,
        ts=NOW,
        expires_at=NOW + ttl_s,
        outcome=outcome,
        route="default",
        model="echo",
        latency_ms=12.5,
        steps=[StepTrace(name="guard", ms=1.5, detail={"outcome": "allowed"}), StepTrace(name="finish", detail={})],
    )


def test_a_trace_comes_back_under_its_tenant_until_it_expires(store: TraceStore) -> None:
    kept = trace("r1", ttl_s=60)
    store.put(kept)
    store.put(trace("r1", outcome="error"))  # a retried finish: the first stays
    assert store.get("acme", "r1", NOW) == kept
    assert store.get("globex", "r1", NOW) is None
    assert store.get("acme", "r1", NOW + 61) is None
    assert store.get("acme", "missing", NOW) is None


def test_feedback_is_appended_to_the_tenants_trace_only(store: TraceStore) -> None:
    store.put(trace("r2"))
    down = Feedback(kind="thumbs", score=-1, comment="wrong", at=NOW + 1)
    rated = Feedback(kind="rating", score=4, at=NOW + 2)
    assert store.add_feedback("globex", "r2", down, NOW) is None
    assert store.add_feedback("acme", "missing", down, NOW) is None
    first = store.add_feedback("acme", "r2", down, NOW)
    assert first is not None and first.feedback == [down]
    second = store.add_feedback("acme", "r2", rated, NOW)
    assert second is not None and second.feedback == [down, rated]
    again = store.get("acme", "r2", NOW)
    assert again is not None and [f.satisfaction for f in again.feedback] == [0.0, 0.75]
    store.put(trace("r3", ttl_s=10))
    assert store.add_feedback("acme", "r3", rated, NOW + 11) is None  # expired


def content_trace(request_id: str, ts: float, tenant: str = "acme", **fields: Any) -> Trace:
    kept = {"messages": [{"role": "user", "content": f"question {request_id}"}], "answer": [{"content": "yes"}]}
    return trace(request_id, tenant).model_copy(update={"ts": ts, "content": kept, **fields})


def damage(store: SqliteTraceStore | DynamoTraceStore, tenant: str, request_id: str) -> None:
    """Overwrite a stored trace with text that is not JSON, as a damaged write would leave it."""
    if isinstance(store, SqliteTraceStore):
        store.flush()
        with store._lock, store._db:
            store._db.execute(
                "UPDATE traces SET trace = '{not json' WHERE tenant = ? AND request_id = ?", (tenant, request_id)
            )
    else:
        store._client.update_item(
            TableName=store._table,
            Key={"tenant": {"S": tenant}, "request_id": {"S": request_id}},
            UpdateExpression="SET #trace = :bad",
            ExpressionAttributeNames={"#trace": "trace"},
            ExpressionAttributeValues={":bad": {"S": "{not json"}},
        )


def test_the_traces_that_kept_content_come_back_oldest_first_with_their_feedback(store: TraceStore) -> None:
    """`with_content(tenant, since, until)`: the tenant's unexpired traces of [since, until) that
    kept their content, replays left out, oldest first, feedback merged in, a damaged one passed
    over: what `distill collect` reads locally and the `distill_collect` function on AWS."""
    assert isinstance(store, SqliteTraceStore | DynamoTraceStore)
    since, until = NOW - 100, NOW
    # Given the tenant's traces inside the window, written newest first
    for request_id, ts in (("c3", NOW - 10), ("c1", NOW - 90), ("c2", NOW - 50), ("b2", NOW - 50)):
        store.put(content_trace(request_id, ts))
    # and traces that must not come back: outside the window (at since is in, at until is out),
    # without content, a replay, expired by `until`, another tenant's, damaged
    store.put(content_trace("at-since", since))
    store.put(content_trace("at-until", until))
    store.put(content_trace("too-old", since - 1))
    store.put(trace("no-content").model_copy(update={"ts": NOW - 40}))
    store.put(content_trace("a-replay", NOW - 30, replay_of="c1"))
    store.put(content_trace("expired", NOW - 20, expires_at=until))
    store.put(content_trace("theirs", NOW - 20, tenant="globex"))
    store.put(content_trace("damaged", NOW - 20))
    damage(store, "acme", "damaged")
    down = Feedback(kind="thumbs", score=-1, at=NOW - 5)
    assert store.add_feedback("acme", "c2", down, NOW - 5) is not None

    found = list(store.with_content("acme", since, until))

    assert [t.request_id for t in found] == ["at-since", "c1", "b2", "c2", "c3"]
    assert {t.tenant for t in found} == {"acme"}
    assert next(t for t in found if t.request_id == "c2").feedback == [down]
    assert found[1].content == content_trace("c1", NOW - 90).content
    assert list(store.with_content("acme", NOW + 1, NOW + 2)) == []


def test_the_rollout_gates_read_the_feedback_on_many_requests_at_once_from_dynamodb(moto: MotoServer) -> None:
    """`DynamoTraceStore.feedback_of` (the gates function's read): more ids than one BatchGetItem
    takes, only the tenant's, only those with feedback, a damaged entry passed over."""
    dynamodb = moto.client("dynamodb")
    table = f"traces-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **trace_key_schema())
    store = DynamoTraceStore(table, dynamodb)
    up = Feedback(kind="thumbs", score=1, at=NOW)
    for i in range(230):
        store.put(trace(f"q{i}"))
        if i % 3 == 0:
            store.add_feedback("acme", f"q{i}", up, NOW)
    store.put(trace("theirs", tenant="globex"))
    store.add_feedback("globex", "theirs", up, NOW)
    dynamodb.update_item(
        TableName=table,
        Key={"tenant": {"S": "acme"}, "request_id": {"S": "q0"}},
        UpdateExpression="SET feedback = list_append(feedback, :bad)",
        ExpressionAttributeValues={":bad": {"L": [{"S": "{not json"}]}},
    )
    found = store.feedback_of("acme", [f"q{i}" for i in range(230)] + ["theirs", "missing", "q3"])
    assert sorted(found) == sorted(f"q{i}" for i in range(0, 230, 3))
    assert all(given == [up] for given in found.values())
