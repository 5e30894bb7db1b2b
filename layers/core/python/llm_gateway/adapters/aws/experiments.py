"""`ExperimentStore` on DynamoDB: the same promises as the SQLite store (`tests/contract/
test_experiment_store.py`), in the rollout table (`adapters/aws/rollouts.py`: what changes how a
route answers lives in one table, read with one permission by the functions that plan routes).

Items, string keys `pk` and `sk`:

- an experiment: `pk` `<tenant>#<route>`, `sk` `experiment#<id>`, with `status`, `started_at`
  and `body` (the experiment as JSON);
- the route's running experiment: `pk` `<tenant>#<route>`, `sk` `experiment-running`, naming it:
  created with the experiment in one transaction only where none exists, so a route never runs
  two, whichever process starts them; deleted in the transaction that stops it;
- its latest report (`save_report`, written by the gates function every minute): `pk`
  `<tenant>#<route>`, `sk` `report#<id>`, with `at` and `body`.

The router reads a route's experiments at most once a second.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from ...ports import Experiment
from .rollouts import EXPERIMENT_RUNNING, RUNNING
from .route_table import RouteItems


class DynamoExperimentStore:
    def __init__(self, table: str, client: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self._table, self._client = table, client
        self._items = RouteItems(table, client, "experiment#", Experiment, clock)

    def active(self, tenant: str, route: str) -> Experiment | None:
        def latest_running(found: list[Experiment]) -> Experiment | None:
            return max((e for e in found if e.status == "running"), key=lambda e: e.started_at, default=None)

        return self._items.latest(tenant, route, latest_running)

    def get(self, experiment_id: str) -> Experiment | None:
        return next((e for e in self.all() if e.experiment_id == experiment_id), None)

    def all(self, tenant: str | None = None) -> list[Experiment]:
        found = [e for e in self._items.every() if tenant in (None, e.tenant)]
        return sorted(found, key=lambda e: e.started_at)

    def save(self, experiment: Experiment) -> None:
        pk = {"S": f"{experiment.tenant}#{experiment.route}"}
        item = {
            "pk": pk,
            "sk": {"S": f"experiment#{experiment.experiment_id}"},
            "status": {"S": experiment.status},
            "started_at": {"N": repr(experiment.started_at)},
            "body": {"S": experiment.model_dump_json()},
        }
        running = {"pk": pk, "sk": {"S": EXPERIMENT_RUNNING}}
        if experiment.status == "running":  # a new experiment: the route's only running one
            pointer = {**running, "experiment_id": {"S": experiment.experiment_id}}
            steps: list[dict[str, Any]] = [
                {"Put": {"TableName": self._table, "Item": item, "ConditionExpression": "attribute_not_exists(sk)"}},
                {"Put": {"TableName": self._table, "Item": pointer, "ConditionExpression": "attribute_not_exists(sk)"}},
                {  # and none while the route rolls out
                    "ConditionCheck": {
                        "TableName": self._table,
                        "Key": {"pk": pk, "sk": {"S": RUNNING}},
                        "ConditionExpression": "attribute_not_exists(sk)",
                    }
                },
            ]
        else:  # it stops: the route may run another
            steps = [
                {"Put": {"TableName": self._table, "Item": item}},
                {
                    "Delete": {
                        "TableName": self._table,
                        "Key": running,
                        "ConditionExpression": "attribute_not_exists(sk) OR experiment_id = :id",
                        "ExpressionAttributeValues": {":id": {"S": experiment.experiment_id}},
                    }
                },
            ]
        try:
            self._client.transact_write_items(TransactItems=steps)
        except self._client.exceptions.TransactionCanceledException as exc:
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
            where = f"route {experiment.route} of tenant {experiment.tenant}"
            if len(reasons) > 2 and reasons[2] == "ConditionalCheckFailed":
                raise ValueError(f"{where} is rolling out: an experiment waits for the rollout's end") from None
            raise ValueError(f"{where} already runs an experiment") from None
        self._items.forget(experiment.tenant, experiment.route)

    def save_report(self, experiment: Experiment, report: dict[str, Any], at: float) -> None:
        """The experiment's latest report (the gates function's, every minute), without the
        experiment itself (its variants' prompts are in its own item): numbers, small."""
        report = {k: v for k, v in report.items() if k != "experiment"}
        self._client.put_item(
            TableName=self._table,
            Item={
                "pk": {"S": f"{experiment.tenant}#{experiment.route}"},
                "sk": {"S": f"report#{experiment.experiment_id}"},
                "at": {"N": repr(at)},
                "body": {"S": json.dumps(report, ensure_ascii=False)},
            },
        )

    def report(self, experiment: Experiment) -> tuple[float, dict[str, Any]] | None:
        """(when, the report) last saved for the experiment, or None."""
        item = self._client.get_item(
            TableName=self._table,
            Key={
                "pk": {"S": f"{experiment.tenant}#{experiment.route}"},
                "sk": {"S": f"report#{experiment.experiment_id}"},
            },
        ).get("Item")
        if item is None:
            return None
        return float(item["at"]["N"]), json.loads(item["body"]["S"])
