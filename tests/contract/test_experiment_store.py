"""The `ExperimentStore` port: the SQLite adapter (embedded default) and the DynamoDB one (on
moto's server, in the rollout table) keep the same promises: a route's active experiment is its
running one; a route never runs two, whoever starts them; a stopped one frees the route; a damaged
stored experiment is passed over; rollouts in the same table are not experiments."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_gateway.adapters.aws.experiments import DynamoExperimentStore
from llm_gateway.adapters.aws.rollouts import DynamoRolloutStore, rollout_key_schema
from llm_gateway.adapters.local.experiments import SqliteExperimentStore
from llm_gateway.ports import Experiment, ExperimentStore, Rollout, RolloutEvent, Variant
from tests.support.moto_server import MotoServer

NOW = 1_790_000_000.0


@pytest.fixture(params=["sqlite", "aws"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ExperimentStore]:
    clock = iter(range(10**9)).__next__  # every read is past the cache: the stores' own state
    if request.param == "sqlite":
        local = SqliteExperimentStore(tmp_path / "experiments.db", clock=lambda: float(clock()) * 10)
        yield local
        local.close()
        return
    moto: MotoServer = request.getfixturevalue("moto")
    dynamodb = moto.client("dynamodb")
    table = f"rollouts-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **rollout_key_schema())
    start_rollout(DynamoRolloutStore(table, dynamodb), "ro_1", "rolling")
    yield DynamoExperimentStore(table, dynamodb, clock=lambda: float(clock()) * 10)


def start_rollout(rollouts: DynamoRolloutStore, rollout_id: str, route: str) -> None:
    """A running rollout of acme's route, saved as `rollout start` saves one."""
    rollout = Rollout(
        rollout_id=rollout_id,
        tenant="acme",
        route=route,
        baseline="gpt-a",
        candidate="gpt-b",
        stages=[100.0],
        started_at=NOW,
        stage_started_at=NOW,
        updated_at=NOW,
    )
    event = RolloutEvent(rollout_id=rollout_id, at=NOW, action="start", stage=0, share=100.0, actor="t")
    rollouts.save(rollout, event)


def experiment(experiment_id: str, route: str = "default", at: float = NOW) -> Experiment:
    return Experiment(
        experiment_id=experiment_id,
        tenant="acme",
        route=route,
        variants=[Variant(name="control"), Variant(name="terse", model="gpt-b")],
        mde=0.05,
        started_at=at,
    )


def test_a_route_runs_one_experiment_at_a_time_and_a_stopped_one_frees_it(store: ExperimentStore) -> None:
    assert store.active("acme", "default") is None and store.all() == []
    first = experiment("ex_1")
    store.save(first)
    assert store.active("acme", "default") == first and store.get("ex_1") == first
    with pytest.raises(ValueError, match="already runs an experiment"):
        store.save(experiment("ex_2", at=NOW + 1))
    store.save(experiment("ex_3", route="other", at=NOW + 2))  # another route may
    stopped = first.model_copy(update={"status": "stopped", "stopped_at": NOW + 3, "winner": "terse"})
    store.save(stopped)
    assert store.active("acme", "default") is None and store.get("ex_1") == stopped
    second = experiment("ex_2", at=NOW + 4)
    store.save(second)
    assert store.active("acme", "default") == second
    assert [e.experiment_id for e in store.all()] == ["ex_1", "ex_3", "ex_2"]
    assert store.all("globex") == [] and store.get("ex_missing") is None


def test_a_damaged_stored_experiment_is_passed_over(store: ExperimentStore, tmp_path: Path) -> None:
    store.save(experiment("ex_1"))
    if isinstance(store, SqliteExperimentStore):
        with store._db:
            store._db.execute("UPDATE experiments SET experiment = '{not json' WHERE experiment_id = 'ex_1'")
    else:
        store._client.update_item(  # type: ignore[attr-defined]
            TableName=store._table,  # type: ignore[attr-defined]
            Key={"pk": {"S": "acme#default"}, "sk": {"S": "experiment#ex_1"}},
            UpdateExpression="SET body = :bad",
            ExpressionAttributeValues={":bad": {"S": "{not json"}},
        )
    assert store.active("acme", "default") is None and store.all() == []


def test_on_aws_a_route_runs_a_rollout_or_an_experiment_never_both(store: ExperimentStore) -> None:
    """In one table, each start checks the other kind's pointer in its own transaction."""
    if not isinstance(store, DynamoExperimentStore):
        pytest.skip("the local stores check each other when a command starts one (docs/experiments.md)")
    rollouts = DynamoRolloutStore(store._table, store._client)
    with pytest.raises(ValueError, match="is rolling out"):
        store.save(experiment("ex_9", route="rolling"))  # the fixture's running rollout is on `rolling`
    store.save(experiment("ex_1"))
    with pytest.raises(ValueError, match="runs an experiment"):
        start_rollout(rollouts, "ro_2", "default")
    assert rollouts.get("ro_1") is not None and rollouts.get("ro_1").status == "running"  # type: ignore[union-attr]
