"""`RolloutStore` on DynamoDB: the same promises as the SQLite store (`tests/contract/
test_rollout_store.py`), for a deployment whose functions share the rollouts.

One table, string keys `pk` and `sk`:

- a rollout: `pk` `<tenant>#<route>`, `sk` `rollout#<id>`, with `rollout_id`, `status`,
  `updated_at` and `body` (the rollout as JSON); the sparse index `by_id` (partition key
  `rollout_id`) finds one by its id;
- the route's running rollout: `pk` `<tenant>#<route>`, `sk` `running`, naming it: created with
  the rollout in one transaction only where none exists, so a route never has two, whichever
  function or process starts one; deleted in the transaction that ends it;
- a transition: `pk` `events#<id>`, `sk` `<when>#<random>`, `body`.

A change made with `expected_updated_at` is written only if the rollout's `updated_at` is still
that (a condition in the same transaction as its event). The router reads a route's rollouts at
most once a second.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from ...ports import Experiment, Feedback, Rollout, RolloutEvent
from .route_table import RouteItems

BY_ID = "by_id"
RUNNING = "running"  # a route's running rollout
EXPERIMENT_RUNNING = "experiment-running"  # a route's running experiment (`adapters/aws/experiments.py`)


def rollout_key_schema() -> dict[str, Any]:
    """`create_table` arguments for the rollout table (tests and local tooling)."""
    return {
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "rollout_id", "AttributeType": "S"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": BY_ID,
                "KeySchema": [{"AttributeName": "rollout_id", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    }


class DynamoRolloutStore:
    def __init__(self, table: str, client: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self._table, self._client = table, client
        self._items = RouteItems(table, client, "rollout#", Rollout, clock)

    def active(self, tenant: str, route: str) -> Rollout | None:
        def latest_live(found: list[Rollout]) -> Rollout | None:
            live = [r for r in found if r.status in ("running", "completed")]
            return max(live, key=lambda r: r.updated_at, default=None)

        return self._items.latest(tenant, route, latest_live)

    def get(self, rollout_id: str) -> Rollout | None:
        found = self._client.query(
            TableName=self._table,
            IndexName=BY_ID,
            KeyConditionExpression="rollout_id = :id",
            ExpressionAttributeValues={":id": {"S": rollout_id}},
        )["Items"]
        # the index holds the rollout and, while it runs, the route's pointer naming it
        found = [item for item in found if item["sk"]["S"].startswith("rollout#")]
        return self._items.parsed(found[0]) if found else None

    def all(self, tenant: str | None = None) -> list[Rollout]:
        found = [r for r in self._items.every() if tenant in (None, r.tenant)]
        return sorted(found, key=lambda r: r.updated_at)

    def save(self, rollout: Rollout, event: RolloutEvent, expected_updated_at: float | None = None) -> None:
        pk = {"S": f"{rollout.tenant}#{rollout.route}"}
        put: dict[str, Any] = {
            "TableName": self._table,
            "Item": {
                "pk": pk,
                "sk": {"S": f"rollout#{rollout.rollout_id}"},
                "rollout_id": {"S": rollout.rollout_id},
                "status": {"S": rollout.status},
                "updated_at": {"N": repr(rollout.updated_at)},
                "body": {"S": rollout.model_dump_json()},
            },
        }
        if expected_updated_at is None:
            put["ConditionExpression"] = "attribute_not_exists(sk)"
        else:
            put["ConditionExpression"] = "updated_at = :expected"
            put["ExpressionAttributeValues"] = {":expected": {"N": repr(expected_updated_at)}}
        steps: list[dict[str, Any]] = [{"Put": put}]
        running = {"pk": pk, "sk": {"S": RUNNING}}
        if expected_updated_at is None and rollout.status == "running":  # a new rollout: the route's only one
            item = {**running, "rollout_id": {"S": rollout.rollout_id}}
            steps.append(
                {"Put": {"TableName": self._table, "Item": item, "ConditionExpression": "attribute_not_exists(sk)"}}
            )
            steps.append(  # and none while the route runs an experiment (`adapters/aws/experiments.py`)
                {
                    "ConditionCheck": {
                        "TableName": self._table,
                        "Key": {"pk": pk, "sk": {"S": EXPERIMENT_RUNNING}},
                        "ConditionExpression": "attribute_not_exists(sk)",
                    }
                }
            )
        elif rollout.status != "running":  # it ends: the route may run another
            steps.append(
                {
                    "Delete": {
                        "TableName": self._table,
                        "Key": running,
                        "ConditionExpression": "attribute_not_exists(sk) OR rollout_id = :id",
                        "ExpressionAttributeValues": {":id": {"S": rollout.rollout_id}},
                    }
                }
            )
        steps.append(
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        "pk": {"S": f"events#{rollout.rollout_id}"},
                        "sk": {"S": f"{event.at:020.6f}#{uuid.uuid4().hex}"},
                        "body": {"S": event.model_dump_json()},
                    },
                }
            }
        )
        try:
            self._client.transact_write_items(TransactItems=steps)
        except self._client.exceptions.TransactionCanceledException as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            if expected_updated_at is not None and reasons and reasons[0] == "ConditionalCheckFailed":
                raise ValueError(f"rollout {rollout.rollout_id} changed meanwhile: look at it again") from None
            if len(reasons) > 2 and reasons[2] == "ConditionalCheckFailed":
                raise ValueError(
                    f"route {rollout.route} of tenant {rollout.tenant} runs an experiment: stop it first"
                ) from None
            raise ValueError(f"route {rollout.route} of tenant {rollout.tenant} is already rolling out") from None
        self._items.forget(rollout.tenant, rollout.route)

    def events(self, rollout_id: str) -> list[RolloutEvent]:
        found = self._client.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"events#{rollout_id}"}},
        )["Items"]
        return [RolloutEvent.model_validate_json(item["body"]["S"]) for item in found]


class DynamoEvidence:
    """What the gates read on AWS: the rollout's audit records (DynamoDB audit table), the feedback
    on them (the trace table), and the deployment's error-rate and latency alarms (CloudWatch); an
    experiment's report from the same tables.
    The alarms watch the whole service: one in ALARM rolls back every running rollout that
    watches alerts."""

    def __init__(self, audit: Any, traces: Any, cloudwatch: Any, alarms: dict[str, str]) -> None:
        self.audit, self.traces, self.cloudwatch, self.alarms = audit, traces, cloudwatch, alarms

    def readings(self, rollout: Rollout) -> Any:
        from ...experiments.rollouts import GATED_OUTCOMES, readings, satisfaction_of

        arms = [f"{rollout.rollout_id}:candidate", f"{rollout.rollout_id}:baseline"]
        records = self._on_arms(rollout.tenant, rollout.route, arms, rollout.started_at)
        rows = [
            (r.variant, r.outcome, r.model, r.latency_ms, r.ts, r.request_id)
            for r in records
            if r.outcome in GATED_OUTCOMES
        ]

        return readings(rows, rollout, lambda arms: satisfaction_of(self._feedback(rollout.tenant, arms)))

    def _on_arms(self, tenant: str, route: str, arms: list[str], since: float) -> list[Any]:
        """The tenant's records on the route's arms since `since` (the audit table's variant index:
        the arms' requests only, however much else the tenant sends)."""
        found = [r for arm in arms for r in self.audit.on_arm(arm, since) if r.tenant == tenant and r.route == route]
        return sorted(found, key=lambda r: (r.ts, r.request_id))

    def _feedback(self, tenant: str, groups: dict[str, str]) -> dict[str, list[Feedback]]:
        """The feedback on some of the tenant's requests (request id -> group), by group."""
        by_group: dict[str, list[Feedback]] = {}
        if self.traces is None:
            return by_group
        for request_id, given in self.traces.feedback_of(tenant, list(groups)).items():
            by_group.setdefault(groups[request_id], []).extend(given)
        return by_group

    def analyse(self, experiment: Experiment) -> dict[str, Any]:
        """An A/B experiment's report (`experiments.ab.analysed`) over the audit and trace tables."""
        from ...experiments.ab import analysed

        labels = [f"{experiment.experiment_id}:{v.name}" for v in experiment.variants]
        records = self._on_arms(experiment.tenant, experiment.route, labels, experiment.started_at)
        rows = [
            (r.variant, r.outcome, r.latency_ms, r.cost_usd, r.prompt_tokens, r.completion_tokens, r.request_id)
            for r in records
        ]
        return analysed(rows, self._feedback(experiment.tenant, {r[6]: r[0] for r in rows}), experiment)

    def firing(self, tenants: set[str], now: float) -> dict[str, list[str]]:
        names = {name: rule for rule, name in self.alarms.items() if name}
        if not names:
            return {}
        found = self.cloudwatch.describe_alarms(AlarmNames=sorted(names))
        rules = sorted(names[a["AlarmName"]] for a in found.get("MetricAlarms", []) if a.get("StateValue") == "ALARM")
        return {tenant: rules for tenant in tenants} if rules else {}
