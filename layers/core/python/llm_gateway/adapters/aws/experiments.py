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
import logging
import time
from collections.abc import Callable
from typing import Any

from ...ports import Experiment

REFRESH_S = 1.0
_RUNNING = "experiment-running"
log = logging.getLogger("llm_gateway.experiments")


def _parsed(item: dict[str, Any]) -> Experiment | None:
    try:
        return Experiment.model_validate_json(item["body"]["S"])
    except (KeyError, ValueError):  # a damaged item is passed over, never the router stopped
        log.exception("a stored experiment cannot be read; it is ignored")
        return None


class DynamoExperimentStore:
    def __init__(self, table: str, client: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self._table, self._client, self._clock = table, client, clock
        self._cache: dict[tuple[str, str], tuple[float, Experiment | None]] = {}

    def active(self, tenant: str, route: str) -> Experiment | None:
        now = self._clock()
        cached = self._cache.get((tenant, route))
        if cached is not None and now - cached[0] < REFRESH_S:
            return cached[1]
        found = self._client.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :kind)",
            ExpressionAttributeValues={":pk": {"S": f"{tenant}#{route}"}, ":kind": {"S": "experiment#"}},
        )["Items"]
        running = [e for e in map(_parsed, found) if e is not None and e.status == "running"]
        latest = max(running, key=lambda e: e.started_at, default=None)
        self._cache[(tenant, route)] = (now, latest)
        return latest

    def get(self, experiment_id: str) -> Experiment | None:
        return next((e for e in self.all() if e.experiment_id == experiment_id), None)

    def all(self, tenant: str | None = None) -> list[Experiment]:
        items: list[dict[str, Any]] = []
        pages = self._client.get_paginator("scan").paginate(
            TableName=self._table,
            FilterExpression="begins_with(sk, :kind)",
            ExpressionAttributeValues={":kind": {"S": "experiment#"}},
        )
        for page in pages:
            items += page["Items"]
        found = [e for e in map(_parsed, items) if e is not None and tenant in (None, e.tenant)]
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
        running = {"pk": pk, "sk": {"S": _RUNNING}}
        if experiment.status == "running":  # a new experiment: the route's only running one
            pointer = {**running, "experiment_id": {"S": experiment.experiment_id}}
            steps: list[dict[str, Any]] = [
                {"Put": {"TableName": self._table, "Item": item, "ConditionExpression": "attribute_not_exists(sk)"}},
                {"Put": {"TableName": self._table, "Item": pointer, "ConditionExpression": "attribute_not_exists(sk)"}},
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
        except self._client.exceptions.TransactionCanceledException:
            raise ValueError(
                f"route {experiment.route} of tenant {experiment.tenant} already runs an experiment"
            ) from None
        self._cache.pop((experiment.tenant, experiment.route), None)  # this process sees its own change at once

    def save_report(self, experiment: Experiment, report: dict[str, Any], at: float) -> None:
        """The experiment's latest report (the gates function's, every minute)."""
        self._client.put_item(
            TableName=self._table,
            Item={
                "pk": {"S": f"{experiment.tenant}#{experiment.route}"},
                "sk": {"S": f"report#{experiment.experiment_id}"},
                "at": {"N": repr(at)},
                "body": {"S": json.dumps(report)},
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
