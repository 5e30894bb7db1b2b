"""What the rollout and experiment stores share in the rollout table: items keyed by the route
(`pk` `<tenant>#<route>`) whose `sk` starts with their kind (`rollout#`, `experiment#`) and whose
`body` is the model as JSON; a route's items read at most once a `REFRESH_S` per process."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

REFRESH_S = 1.0
Stored = TypeVar("Stored", bound=BaseModel)
log = logging.getLogger("llm_gateway.rollouts")


class RouteItems(Generic[Stored]):
    def __init__(
        self, table: str, client: Any, kind: str, model: type[Stored], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._table, self._client, self._clock = table, client, clock
        self._kind, self._model = kind, model
        self._cache: dict[tuple[str, str], tuple[float, Stored | None]] = {}

    def parsed(self, item: dict[str, Any]) -> Stored | None:
        try:
            return self._model.model_validate_json(item["body"]["S"])
        except (KeyError, ValueError):  # a damaged item is passed over, never the router stopped
            log.exception("a stored %s cannot be read; it is ignored", self._kind.rstrip("#"))
            return None

    def latest(self, tenant: str, route: str, pick: Callable[[list[Stored]], Stored | None]) -> Stored | None:
        """`pick` of the route's items, read again at most once a `REFRESH_S`."""
        now = self._clock()
        cached = self._cache.get((tenant, route))
        if cached is not None and now - cached[0] < REFRESH_S:
            return cached[1]
        found = self._client.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :kind)",
            ExpressionAttributeValues={":pk": {"S": f"{tenant}#{route}"}, ":kind": {"S": self._kind}},
        )["Items"]
        chosen = pick([s for s in map(self.parsed, found) if s is not None])
        self._cache[(tenant, route)] = (now, chosen)
        return chosen

    def forget(self, tenant: str, route: str) -> None:
        """This process sees its own change at once."""
        self._cache.pop((tenant, route), None)

    def every(self) -> list[Stored]:
        """Every item of the kind in the table (a scan: the table holds few)."""
        items: list[dict[str, Any]] = []
        pages = self._client.get_paginator("scan").paginate(
            TableName=self._table,
            FilterExpression="begins_with(sk, :kind)",
            ExpressionAttributeValues={":kind": {"S": self._kind}},
        )
        for page in pages:
            items += page["Items"]
        return [s for s in map(self.parsed, items) if s is not None]
