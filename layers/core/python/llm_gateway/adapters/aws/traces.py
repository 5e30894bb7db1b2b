"""`TraceStore` on DynamoDB.

Table layout: partition key `tenant` (S), sort key `request_id` (S): every read names the tenant,
so one tenant's request id never finds another's trace. Attributes: `trace` (S, the `Trace` as
JSON, feedback left out), `feedback` (L of S, each a `Feedback` as JSON, appended by
`add_feedback`), `expires_at` (N, the table's TTL attribute; reads also compare it, as DynamoDB
deletes expired items up to days late). An item holds at most 400 KB: a trace with its content
past that is kept without the content (`content_dropped` in the trace).
"""

from __future__ import annotations

from typing import Any

from ...ports import Feedback, Trace

MAX_ITEM_BYTES = 380_000  # DynamoDB's 400 KB item limit, less the keys, names and some feedback


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

    @staticmethod
    def _key(tenant: str, request_id: str) -> dict[str, dict[str, str]]:
        return {"tenant": {"S": tenant}, "request_id": {"S": request_id}}


def _trace(item: dict[str, Any] | None, now: float) -> Trace | None:
    if item is None or float(item["expires_at"]["N"]) <= now:
        return None
    trace = Trace.model_validate_json(item["trace"]["S"])
    trace.feedback = [Feedback.model_validate_json(f["S"]) for f in item.get("feedback", {}).get("L", [])]
    return trace
