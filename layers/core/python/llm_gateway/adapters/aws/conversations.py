"""`ConversationStore` on DynamoDB.

Table layout: partition key `tenant` (S), sort key `id` (S): every read and delete names the
tenant, so one tenant's id never finds another's response. Attributes: `body` (B, the packed
`StoredResponse`), `expires_at` (N, the table's TTL attribute; reads also compare it, as DynamoDB
deletes expired items up to days late) and, for a response that continues another, `parent`
(S, `f"{tenant}#{previous_response_id}"`): the partition key of the sparse index `by_parent`,
through which a deletion finds the responses that continue a deleted one.

An item holds at most 400 KB: a larger packed response raises `ConversationTooLarge`.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ...ports import ConversationTooLarge, StoredResponse

PARENT_INDEX = "by_parent"
MAX_ITEM_BYTES = 390_000  # DynamoDB's 400 KB item limit, less the key and attribute names


def conversation_key_schema() -> dict[str, Any]:
    """`create_table` arguments for the conversation table (tests and local tooling; CDK defines the same)."""
    return {
        "KeySchema": [
            {"AttributeName": "tenant", "KeyType": "HASH"},
            {"AttributeName": "id", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": "tenant", "AttributeType": "S"},
            {"AttributeName": "id", "AttributeType": "S"},
            {"AttributeName": "parent", "AttributeType": "S"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": PARENT_INDEX,
                "KeySchema": [{"AttributeName": "parent", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    }


class DynamoConversationStore:
    def __init__(self, table: str, client: Any) -> None:
        self._table = table
        self._client = client

    def put(self, item: StoredResponse) -> bool:
        body = item.packed()
        if len(body) > MAX_ITEM_BYTES:
            raise ConversationTooLarge(
                f"the stored response is {len(body)} bytes packed; an item holds {MAX_ITEM_BYTES}"
            )
        attributes: dict[str, Any] = {
            "tenant": {"S": item.tenant},
            "id": {"S": item.id},
            "expires_at": {"N": str(int(item.expires_at))},
            "body": {"B": body},
        }
        put = {"TableName": self._table, "Item": attributes, "ConditionExpression": "attribute_not_exists(id)"}
        if item.previous_response_id is None:
            with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
                self._client.put_item(**put)  # a retried write fails its condition: the first copy stays
            return True
        attributes["parent"] = {"S": f"{item.tenant}#{item.previous_response_id}"}
        parent = {
            "TableName": self._table,
            "Key": self._key(item.tenant, item.previous_response_id),
            "ConditionExpression": "attribute_exists(id)",
        }
        try:  # written only while the response it continues is there (not deleted meanwhile)
            self._client.transact_write_items(TransactItems=[{"ConditionCheck": parent}, {"Put": put}])
        except self._client.exceptions.TransactionCanceledException:
            # the parent is gone, or this response was written before (a retry: the first copy stays)
            found = self._client.get_item(
                TableName=self._table, Key=self._key(item.tenant, item.previous_response_id), ConsistentRead=True
            )
            return "Item" in found
        return True

    @staticmethod
    def _key(tenant: str, response_id: str) -> dict[str, dict[str, str]]:
        return {"tenant": {"S": tenant}, "id": {"S": response_id}}

    def get(self, tenant: str, response_id: str, now: float) -> StoredResponse | None:
        found = self._client.get_item(
            TableName=self._table, Key={"tenant": {"S": tenant}, "id": {"S": response_id}}, ConsistentRead=True
        ).get("Item")
        if found is None or float(found["expires_at"]["N"]) <= now:
            return None
        return StoredResponse.unpacked(found["body"]["B"])

    def delete(self, tenant: str, response_id: str) -> int:
        removed = 0
        pending = [response_id]
        while pending:
            current = pending.pop()
            gone = self._client.delete_item(
                TableName=self._table, Key={"tenant": {"S": tenant}, "id": {"S": current}}, ReturnValues="ALL_OLD"
            ).get("Attributes")
            if gone is None and current == response_id:
                return 0
            removed += gone is not None
            pending += self._children(tenant, current)
        return removed

    def _children(self, tenant: str, response_id: str) -> list[str]:
        ids: list[str] = []
        arguments: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": PARENT_INDEX,
            "KeyConditionExpression": "parent = :parent",
            "ExpressionAttributeValues": {":parent": {"S": f"{tenant}#{response_id}"}},
        }
        while True:
            page = self._client.query(**arguments)
            ids += [item["id"]["S"] for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return ids
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]
