"""`TraceStore` on DynamoDB.

Table layout: partition key `tenant` (S), sort key `request_id` (S): every read names the tenant,
so one tenant's request id never finds another's trace. Attributes: `trace` (S, the `Trace` as
JSON, feedback left out), `feedback` (L of S, each a `Feedback` as JSON, appended by
`add_feedback`), `expires_at` (N, the table's TTL attribute; reads also compare it, as DynamoDB
deletes expired items up to days late). An item holds at most 400 KB: a trace with its content
past that is kept without the content (`content_dropped` in the trace).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ...ports import Feedback, Trace

log = logging.getLogger("llm_gateway.traces")

MAX_ITEM_BYTES = 380_000  # DynamoDB's 400 KB item limit, less the keys, names and some feedback
_BATCH_GET = 100  # keys per BatchGetItem, DynamoDB's most
_BATCH_GET_ATTEMPTS = 8


def trace_key_schema() -> dict[str, Any]:
    """`create_table` arguments for the trace table (tests and local tooling; CDK defines the same)."""
    return {
        "KeySchema": [
            {"AttributeName": "tenant", "KeyType": "HASH"},
            {"AttributeName": "request_id", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": "tenant", "AttributeType": "S"},
            {"AttributeName": "request_id", "AttributeType": "S"},
        ],
    }


class DynamoTraceStore:
    def __init__(self, table: str, client: Any) -> None:
        self._table = table
        self._client = client

    def put(self, trace: Trace) -> None:
        body = trace.model_copy(update={"feedback": []}).model_dump_json()
        if len(body.encode()) > MAX_ITEM_BYTES:
            body = trace.model_copy(update={"feedback": [], "content": {"content_dropped": True}}).model_dump_json()
        item = {
            "tenant": {"S": trace.tenant},
            "request_id": {"S": trace.request_id},
            "expires_at": {"N": str(int(trace.expires_at))},
            "trace": {"S": body},
        }
        try:
            self._client.put_item(
                TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(request_id)"
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return  # a retried finish: the first trace stays

    def get(self, tenant: str, request_id: str, now: float) -> Trace | None:
        found = self._client.get_item(
            TableName=self._table, Key=self._key(tenant, request_id), ConsistentRead=True
        ).get("Item")
        return _trace(found, now)

    def add_feedback(self, tenant: str, request_id: str, feedback: Feedback, now: float) -> Trace | None:
        try:
            updated = self._client.update_item(
                TableName=self._table,
                Key=self._key(tenant, request_id),
                UpdateExpression="SET feedback = list_append(if_not_exists(feedback, :none), :one)",
                ConditionExpression="attribute_exists(request_id) AND expires_at > :now",
                ExpressionAttributeValues={
                    ":none": {"L": []},
                    ":one": {"L": [{"S": feedback.model_dump_json()}]},
                    ":now": {"N": str(int(now))},
                },
                ReturnValues="ALL_NEW",
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return None  # no such trace of this tenant, or it expired
        return _trace(updated.get("Attributes"), now)

    def feedback_of(self, tenant: str, request_ids: Sequence[str]) -> dict[str, list[Feedback]]:
        """The feedback given on some of the tenant's requests (those with any), by request id:
        read 100 at a time (BatchGetItem), the feedback attribute only."""
        found: dict[str, list[Feedback]] = {}
        ids = list(dict.fromkeys(request_ids))
        for at in range(0, len(ids), _BATCH_GET):
            wanted: dict[str, Any] = {
                self._table: {
                    "Keys": [self._key(tenant, request_id) for request_id in ids[at : at + _BATCH_GET]],
                    "ProjectionExpression": "request_id, feedback",
                }
            }
            for attempt in range(_BATCH_GET_ATTEMPTS):
                page = self._client.batch_get_item(RequestItems=wanted)
                for item in page.get("Responses", {}).get(self._table, []):
                    given = _feedback(item)
                    if given:
                        found[item["request_id"]["S"]] = given
                wanted = page.get("UnprocessedKeys") or {}
                if not wanted:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))  # DynamoDB throttled part of the batch
            else:
                raise RuntimeError("the trace table kept throttling the feedback reads")
        return found

    def with_content(self, tenant: str, since: float, until: float) -> Iterator[Trace]:
        """The tenant's unexpired traces made in [since, until) that kept their content, replays
        left out, oldest first, each with its feedback (what the `distill_collect` function reads);
        a damaged one is passed over. A trace's time is inside its JSON, not in a key: one
        paginated Query reads the tenant's partition (DynamoDB leaves out the items expired by
        `until`), and the window is applied to what it returns."""
        found: list[Trace] = []
        pages = self._client.get_paginator("query").paginate(
            TableName=self._table,
            KeyConditionExpression="tenant = :tenant",
            FilterExpression="expires_at > :until",
            ExpressionAttributeValues={":tenant": {"S": tenant}, ":until": {"N": repr(float(until))}},
            ConsistentRead=True,
        )
        for page in pages:
            for item in page.get("Items", []):
                try:
                    trace = Trace.model_validate_json(item["trace"]["S"])
                except (KeyError, ValueError):
                    log.warning("a damaged trace was passed over")
                    continue
                kept = isinstance((trace.content or {}).get("answer"), list) and trace.replay_of is None
                if kept and since <= trace.ts < until:
                    trace.feedback = _feedback(item)
                    found.append(trace)
        found.sort(key=lambda t: (t.ts, t.request_id))
        return iter(found)

    @staticmethod
    def _key(tenant: str, request_id: str) -> dict[str, dict[str, str]]:
        return {"tenant": {"S": tenant}, "request_id": {"S": request_id}}


def _trace(item: dict[str, Any] | None, now: float) -> Trace | None:
    if item is None or float(item["expires_at"]["N"]) <= now:
        return None
    trace = Trace.model_validate_json(item["trace"]["S"])
    trace.feedback = _feedback(item)
    return trace


def _feedback(item: dict[str, Any]) -> list[Feedback]:
    given = []
    for entry in item.get("feedback", {}).get("L", []):
        try:
            given.append(Feedback.model_validate_json(entry["S"]))
        except (KeyError, ValueError):  # a damaged entry is passed over
            continue
    return given
