"""The `TraceStore` port: the SQLite adapter (embedded default) and the DynamoDB one (on moto's
server) keep the same promises: a trace is found only under its tenant and until it expires,
feedback is appended to it (and to no other tenant's), a repeated put keeps the first."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

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
