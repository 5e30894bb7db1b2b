"""Shadow copies on AWS: the functions that finish a request hand a sampled copy to an SQS queue
(`SqsShadowHandOff`), the `shadow` function sends it to the shadow model and keeps the pair in a
DynamoDB table (`DynamoShadowPairs`), off the user's path.

The message holds, from an allow-list, the request as the model saw it (the guard's PII-masked
messages and passages; no user id, metadata, address or restorable values), the route's plan,
the tenant, the live answer and the shadow model; the function takes the shadow model and its
budget from the configuration, and drops a copy the configuration no longer shadows. A copy
over SQS's 256 KiB is not sent (counted as `shadow_dropped{reason="too_large"}`); a failed send
is counted (`reason="hand_off"`) and never reaches the user.

Pair table, string keys `pk` and `sk`:

- a pair: `pk` `<tenant>#<route>`, `sk` `<received at>#<request id>` (the request's), `pair`
  (the pair as JSON), `expires_at` (TTL, 90 days): written once per request (a redelivered
  message keeps the first);
- the route's shadow spend of a day: `pk` `spend#<tenant>#<route>`, `sk` the day (UTC, ISO),
  `usd` (N, added to with each pair).
"""

from __future__ import annotations

import json
import logging
import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ...experiments.shadow import COLUMNS, ShadowJob, draw

if TYPE_CHECKING:
    from ...config import GatewayConfig
    from ...contracts import ChatCompletion, GatewayState
    from ...deps import Deps

log = logging.getLogger("llm_gateway.shadow")
MAX_MESSAGE_BYTES = 256 * 1024  # SQS's limit
PAIR_DAYS = 90
_DAY_S = 86_400


def message(job: ShadowJob) -> str:
    """The queue message of a copy, from an allow-list: the request as the model saw it (the guard's
    PII-masked messages and passages; no user id, metadata, address or restorable values), the
    route's plan, the tenant, and the live answer once. Never the caller's raw text."""
    from ...contracts import CallerContext, GatewayState, GuardResult, InvokeResult, TenantContext

    state, guard = job.state, job.state.guard
    assert guard is not None and guard.tenant is not None and state.router is not None and state.invoke is not None
    request = state.request.model_copy(update={"user": None, "metadata": None})
    if guard.masked_messages is not None:
        request = request.model_copy(update={"messages": guard.masked_messages})
    if guard.masked_context is not None:
        request = request.model_copy(update={"context": guard.masked_context})
    tenant = TenantContext(tenant=guard.tenant.tenant, key_id=guard.tenant.key_id)
    copied = GatewayState(
        request_id=state.request_id,
        received_at=state.received_at,
        request=request,
        caller=CallerContext(),
        guard=GuardResult(outcome="allowed", tenant=tenant),
        router=state.router,
        invoke=InvokeResult(
            model=state.invoke.model,
            provider=state.invoke.provider,
            response=job.live,
            attempts=[],
            latency_ms=state.invoke.latency_ms,
        ),
    )
    return json.dumps(
        {"state": json.loads(copied.model_dump_json(exclude_none=True)), "shadow_model": job.shadow_model},
        ensure_ascii=False,
    )


def job_of(body: str, config: GatewayConfig) -> ShadowJob | None:
    """A copy from its queue message, its shadow model and budget as the configuration says now;
    None for a message that is not a copy, or a copy whose tenant, route or shadow the
    configuration no longer has (ValueError for a message that cannot be read)."""
    from ...contracts import GatewayState

    found = json.loads(body)
    if not isinstance(found, dict):
        raise ValueError("not a copy")
    state = GatewayState.model_validate(found["state"])
    if state.guard is None or state.guard.tenant is None or state.router is None or state.invoke is None:
        return None
    policy = config.tenants.get(state.guard.tenant.tenant)
    route = policy.routes.get(state.router.route) if policy is not None else None
    shadow = route.shadow if route is not None else None
    if shadow is None or shadow.model != found.get("shadow_model") or shadow.model not in config.models:
        return None  # the configuration moved on: the copy is not sent
    return ShadowJob(state, state.invoke.response, shadow.model, shadow.budget_usd_per_day)


class SqsShadowHandOff:
    """`ShadowHandOff` on AWS: a sampled copy sent to the shadow queue. `client`: an SQS client, or
    a function that makes one (called at the first copy: a route without a shadow never pays for it)."""

    def __init__(self, queue_url: str, client: Any, seed: int | None = None) -> None:
        self._queue_url, self._make = queue_url, client if callable(client) else (lambda: client)
        self._client: Any = None
        self._draw = random.Random(seed)  # noqa: S311 - sampling traffic, not a secret

    def offer(self, state: GatewayState, deps: Deps, live: ChatCompletion) -> bool:
        job = draw(state, deps, self._draw, live)
        if job is None:
            return False
        tenant, route = job.state.tenant().tenant, job.state.router.route if job.state.router else ""
        body = message(job)
        if len(body.encode()) > MAX_MESSAGE_BYTES:
            deps.metrics.count("shadow_dropped", tenant=tenant, route=route, reason="too_large")
            return False
        try:
            if self._client is None:
                self._client = self._make()
            self._client.send_message(QueueUrl=self._queue_url, MessageBody=body)
        except Exception:  # the copy is lost, never the answer
            log.exception("handing a shadow copy to the queue failed", extra={"request_id": state.request_id})
            deps.metrics.count("shadow_dropped", tenant=tenant, route=route, reason="hand_off")
            return False
        return True


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


class DynamoShadowPairs:
    """The shadow pairs and each route's daily shadow spend (layout in the module doc)."""

    def __init__(self, table: str, client: Any) -> None:
        self._table, self._client = table, client

    def spent_today(self, tenant: str, route: str, now: float) -> float:
        item = self._client.get_item(
            TableName=self._table,
            Key={"pk": {"S": f"spend#{tenant}#{route}"}, "sk": {"S": _day(now)}},
            ConsistentRead=True,
        ).get("Item")
        return float(item["usd"]["N"]) if item else 0.0

    def kept(self, tenant: str, route: str, received_at: float, request_id: str) -> bool:
        """Whether the request's pair is kept already (a redelivered copy is not sent again)."""
        key = {"pk": {"S": f"{tenant}#{route}"}, "sk": {"S": f"{received_at:017.6f}#{request_id}"}}
        return "Item" in self._client.get_item(TableName=self._table, Key=key, ConsistentRead=True)

    def add(self, pair: dict[str, Any], received_at: float) -> bool:
        """Keep a pair (keyed by its request: when it was received and its id) and add its cost to
        the day's spend; False when the request's pair is kept already."""
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": f"{pair['tenant']}#{pair['route']}"},
                    "sk": {"S": f"{received_at:017.6f}#{pair['request_id']}"},
                    "request_id": {"S": pair["request_id"]},
                    "pair": {"S": json.dumps(pair)},
                    "expires_at": {"N": str(int(pair["ts"] + PAIR_DAYS * _DAY_S))},
                },
                ConditionExpression="attribute_not_exists(sk)",
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        self._client.update_item(
            TableName=self._table,
            Key={"pk": {"S": f"spend#{pair['tenant']}#{pair['route']}"}, "sk": {"S": _day(pair["ts"])}},
            UpdateExpression="ADD usd :cost",
            ExpressionAttributeValues={":cost": {"N": repr(float(pair["shadow_cost_usd"]))}},
        )
        return True

    def pairs(self, tenant: str | None = None, route: str | None = None, since: float = 0.0) -> list[dict[str, Any]]:
        """The pairs since `since` (of a tenant, of a route), oldest first."""
        items: list[dict[str, Any]] = []
        if tenant is not None and route is not None:
            pages = self._client.get_paginator("query").paginate(
                TableName=self._table,
                KeyConditionExpression="pk = :pk AND sk >= :since",
                ExpressionAttributeValues={":pk": {"S": f"{tenant}#{route}"}, ":since": {"S": f"{since:017.6f}"}},
            )
        else:
            pages = self._client.get_paginator("scan").paginate(
                TableName=self._table,
                FilterExpression="attribute_exists(pair)",
            )
        for page in pages:
            items += page["Items"]
        found = []
        for item in items:
            try:
                pair = json.loads(item["pair"]["S"])
            except (KeyError, ValueError):  # a damaged item is passed over
                continue
            if not isinstance(pair, dict) or not set(COLUMNS) <= set(pair) or not isinstance(pair["ts"], int | float):
                continue  # not a pair this version wrote
            if tenant in (None, pair["tenant"]) and route in (None, pair["route"]) and pair["ts"] >= since:
                found.append(pair)
        return sorted(found, key=lambda p: p["ts"])
