"""The `RolloutStore` port: the SQLite adapter (embedded default) and the DynamoDB one (on moto's
server) keep the same promises: a route's active rollout is its latest running or completed one;
a route never has two running, whoever starts them; a change made on a rollout read before
someone else changed it is refused; every transition is kept in order; a damaged stored rollout is
passed over."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_gateway.adapters.aws.rollouts import DynamoRolloutStore, rollout_key_schema
from llm_gateway.adapters.local.rollouts import SqliteRolloutStore
from llm_gateway.ports import Rollout, RolloutEvent, RolloutStore
from tests.support.moto_server import MotoServer

NOW = 1_790_000_000.0


@pytest.fixture(params=["sqlite", "aws"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RolloutStore]:
    clock = iter(range(10**9)).__next__  # every read is past the cache: the stores' own state
    if request.param == "sqlite":
        local = SqliteRolloutStore(tmp_path / "rollouts.db", clock=lambda: float(clock()) * 10)
        yield local
        local.close()
        return
    moto: MotoServer = request.getfixturevalue("moto")
    dynamodb = moto.client("dynamodb")
    table = f"rollouts-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **rollout_key_schema())
    yield DynamoRolloutStore(table, dynamodb, clock=lambda: float(clock()) * 10)


def rollout(rollout_id: str, route: str = "default", status: str = "running", at: float = NOW) -> Rollout:
    return Rollout(
        rollout_id=rollout_id,
        tenant="acme",
        route=route,
        baseline="gpt-old",
        candidate="gpt-new",
        stages=[5.0, 100.0],
        status=status,  # type: ignore[arg-type]
        started_at=at,
        stage_started_at=at,
        updated_at=at,
    )


def event(rollout_id: str, action: str, at: float) -> RolloutEvent:
    return RolloutEvent(rollout_id=rollout_id, at=at, action=action, stage=0, share=5.0, actor="test")  # type: ignore[arg-type]


def test_the_active_rollout_is_the_routes_latest_running_or_completed_one(store: RolloutStore) -> None:
    assert store.active("acme", "default") is None
    first = rollout("ro_1")
    store.save(first, event("ro_1", "start", NOW))
    assert store.active("acme", "default") == first and store.active("acme", "other") is None
    assert store.get("ro_1") == first and store.get("ro_missing") is None
    done = first.model_copy(update={"status": "completed", "updated_at": NOW + 5})
    store.save(done, event("ro_1", "complete", NOW + 5), expected_updated_at=NOW)
    assert store.active("acme", "default") == done
    rolled = done.model_copy(update={"status": "rolled_back", "updated_at": NOW + 9})
    store.save(rolled, event("ro_1", "rollback", NOW + 9), expected_updated_at=NOW + 5)
    assert store.active("acme", "default") is None
    assert [e.action for e in store.events("ro_1")] == ["start", "complete", "rollback"]
    assert [r.rollout_id for r in store.all("acme")] == ["ro_1"] and store.all("globex") == []


def test_a_route_never_has_two_running_rollouts(store: RolloutStore) -> None:
    store.save(rollout("ro_1"), event("ro_1", "start", NOW))
    with pytest.raises(ValueError, match="already rolling out"):
        store.save(rollout("ro_2", at=NOW + 1), event("ro_2", "start", NOW + 1))
    assert store.get("ro_2") is None and store.events("ro_2") == []  # nothing of it was kept
    store.save(rollout("ro_3", route="other"), event("ro_3", "start", NOW))  # another route may
    ended = rollout("ro_1").model_copy(update={"status": "rolled_back", "updated_at": NOW + 2})
    store.save(ended, event("ro_1", "rollback", NOW + 2), expected_updated_at=NOW)
    store.save(rollout("ro_4", at=NOW + 3), event("ro_4", "start", NOW + 3))  # now the route may again
    assert store.active("acme", "default").rollout_id == "ro_4"  # type: ignore[union-attr]


def test_a_change_made_on_a_stale_read_is_refused(store: RolloutStore) -> None:
    read = rollout("ro_1")
    store.save(read, event("ro_1", "start", NOW))
    rolled = read.model_copy(update={"status": "rolled_back", "updated_at": NOW + 1})
    store.save(rolled, event("ro_1", "rollback", NOW + 1), expected_updated_at=NOW)
    advanced = read.model_copy(update={"stage": 1, "updated_at": NOW + 2})
    with pytest.raises(ValueError, match="changed meanwhile"):
        store.save(advanced, event("ro_1", "advance", NOW + 2), expected_updated_at=NOW)
    assert store.get("ro_1").status == "rolled_back"  # type: ignore[union-attr]
    assert [e.action for e in store.events("ro_1")] == ["start", "rollback"]


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        # JSON a rollout is not: a stage past its stages, a share over 100 %, an id a header cannot carry
        rollout("ro_bad").model_dump_json().replace('"stage":0', '"stage":7'),
        rollout("ro_bad").model_dump_json().replace("[5.0,100.0]", "[5000.0]"),
        rollout("ro_bad").model_dump_json().replace('"ro_bad"', '"ro_a\\r\\nSet-Cookie: x"'),
    ],
    ids=["not-json", "stage-past-stages", "share-over-100", "header-injection"],
)
def test_a_damaged_stored_rollout_is_passed_over(store: RolloutStore, body: str) -> None:
    store.save(rollout("ro_1", route="other"), event("ro_1", "start", NOW))
    if isinstance(store, SqliteRolloutStore):
        with store._lock, store._db:
            store._db.execute("INSERT INTO rollouts VALUES ('ro_bad', 'acme', 'default', 'running', 1.0, ?)", (body,))
    else:
        assert isinstance(store, DynamoRolloutStore)
        bad = {"pk": {"S": "acme#default"}, "sk": {"S": "rollout#ro_bad"}, "rollout_id": {"S": "ro_bad"}}
        store._client.put_item(TableName=store._table, Item={**bad, "body": {"S": body}})
    assert store.active("acme", "default") is None  # the router goes on as if there were none
    assert [r.rollout_id for r in store.all()] == ["ro_1"] and store.get("ro_bad") is None
