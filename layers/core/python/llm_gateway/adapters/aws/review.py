"""The human review queue (moderation tier 4) on AWS: SQS in the request path, DynamoDB as the record.

The guard and moderate functions only send a message to SQS (`SqsReviewQueue.submit`: one small
call, no table write while a client waits; a burst of flagged traffic queues up instead of
throttling a table). The `review_ingest` function consumes the queue in batches and puts each item
into the review table (`DynamoReviewStore.put`, conditional: a redelivered message never makes a
second item); what it cannot store goes back to the queue and, after its retries, to the
dead-letter queue. Reviewers list and decide items in the table (`llm-gateway review --table`).

Table layout: partition key `item_id` (S). Attributes: `tenant`, `status`, `created_sk`
(`f"{created_at:017.6f}#{item_id}"`, time order as string order) and `item` (the whole item as
JSON). Global secondary index `by_status` (partition `status`, sort `created_sk`): the pending
items, oldest first, without a scan. A decision is a conditional put: only a `pending` item can be
decided, once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ...ports import ReviewItem, ReviewStatus
from .dynamodb import sort_key

STATUS_INDEX = "by_status"


def review_key_schema() -> dict[str, Any]:
    """`create_table` arguments for the review table (tests and local tooling; CDK defines the same)."""
    return {
        "KeySchema": [{"AttributeName": "item_id", "KeyType": "HASH"}],
        "AttributeDefinitions": [
            {"AttributeName": "item_id", "AttributeType": "S"},
            {"AttributeName": "status", "AttributeType": "S"},
            {"AttributeName": "created_sk", "AttributeType": "S"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": STATUS_INDEX,
                "KeySchema": [
                    {"AttributeName": "status", "KeyType": "HASH"},
                    {"AttributeName": "created_sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    }


def _attributes(item: ReviewItem) -> dict[str, dict[str, str]]:
    return {
        "item_id": {"S": item.item_id},
        "tenant": {"S": item.tenant},
        "status": {"S": item.status},
        "created_sk": {"S": sort_key(item.created_at, item.item_id)},
        "item": {"S": item.model_dump_json()},
    }


class DynamoReviewStore:
    def __init__(self, table: str, client: Any) -> None:
        self._table = table
        self._client = client

    def put(self, item: ReviewItem) -> bool:
        """Store a new item; False when it was already there (a redelivered message)."""
        try:
            self._client.put_item(
                TableName=self._table,
                Item=_attributes(item),
                ConditionExpression="attribute_not_exists(item_id)",
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def items(
        self, status: ReviewStatus | None = "pending", tenant: str | None = None, limit: int = 100
    ) -> list[ReviewItem]:
        statuses: list[ReviewStatus] = [status] if status is not None else ["pending", "approved", "rejected"]
        found: list[ReviewItem] = []
        for each in statuses:
            found += self._by_status(each, tenant, limit)
        found.sort(key=lambda item: (item.created_at, item.item_id))
        return found[:limit]

    def _by_status(self, status: ReviewStatus, tenant: str | None, limit: int) -> list[ReviewItem]:
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": STATUS_INDEX,
            "KeyConditionExpression": "#s = :s",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":s": {"S": status}},
        }
        if tenant is not None:
            query["FilterExpression"] = "tenant = :t"
            query["ExpressionAttributeValues"][":t"] = {"S": tenant}
        found: list[ReviewItem] = []
        while len(found) < limit:
            page = self._client.query(**query)
            found += [ReviewItem.model_validate_json(row["item"]["S"]) for row in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found[:limit]

    def decide(self, item_id: str, approved: bool, reviewer: str, now: float) -> ReviewItem:
        row = self._client.get_item(TableName=self._table, Key={"item_id": {"S": item_id}}, ConsistentRead=True)
        if "Item" not in row:
            raise KeyError(item_id)
        item = ReviewItem.model_validate_json(row["Item"]["item"]["S"])
        if item.status != "pending":
            raise ValueError(f"item {item_id} was already {item.status}")
        decided = item.model_copy(
            update={"status": "approved" if approved else "rejected", "reviewer": reviewer, "decided_at": now}
        )
        try:
            self._client.put_item(
                TableName=self._table,
                Item=_attributes(decided),
                ConditionExpression="#s = :pending",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":pending": {"S": "pending"}},
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            raise ValueError(f"item {item_id} was decided by someone else meanwhile") from None
        return decided


class SqsReviewQueue:
    """The `ReviewQueue` port on AWS: submissions go to SQS, reads and decisions to the table."""

    def __init__(self, queue_url: str, sqs: Any, store: DynamoReviewStore) -> None:
        self._queue_url = queue_url
        self._sqs = sqs
        self.store = store

    def submit(self, item: ReviewItem) -> None:
        self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=item.model_dump_json())

    def items(
        self, status: ReviewStatus | None = "pending", tenant: str | None = None, limit: int = 100
    ) -> list[ReviewItem]:
        return self.store.items(status, tenant, limit)

    def decide(self, item_id: str, approved: bool, reviewer: str, now: float) -> ReviewItem:
        return self.store.decide(item_id, approved, reviewer, now)


def ingest(store: DynamoReviewStore, bodies: Iterable[str]) -> int:
    """Put queued items into the table; returns how many were new. A body that is not a review
    item raises (the batch processor sends it back, and on to the dead-letter queue)."""
    return sum(store.put(ReviewItem.model_validate_json(body)) for body in bodies)
