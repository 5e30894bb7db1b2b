"""DynamoDB adapters: the usage ledger and the audit log, one table each.

Table layout (both tables): partition key `tenant` (S; `"_none"` for audit records without a
tenant), sort key `sk` (S) = `f"{ts:017.6f}#{request_id}"`, so a tenant's records sort by time and
a time range is a key condition. The other attributes mirror the record's fields; numbers are
written as exact decimal strings, `None` fields are left out. `expires_at` (N, epoch seconds) is
the table's TTL attribute: `ts` plus the retention (800 days for usage, 400 for audit by default).

Writes are idempotent: `sk` is a function of the record (the finish step takes `ts` from the
request's `received_at`), and the put is conditional on the key being new, so a retried record
keeps the first copy and never makes a second one.

boto3's low-level client is used (no resource layer) and imported only when an adapter builds its
own client, so importing this module costs almost nothing.
"""

from __future__ import annotations

import contextlib
import math
from decimal import Decimal
from typing import Any, Generic, TypeVar

from ...ports import AuditRecord, UsageRecord

PARTITION_KEY = "tenant"
SORT_KEY = "sk"
TTL_ATTRIBUTE = "expires_at"
NO_TENANT = "_none"
VARIANT_INDEX = "by_variant"  # the audit table's requests on a rollout's or an experiment's arm
_DAY_S = 86_400

Record = TypeVar("Record", UsageRecord, AuditRecord)


def sort_key(ts: float, request_id: str) -> str:
    """Fixed-width time first, so string order is time order (for 0 <= ts < 1e10)."""
    return f"{ts:017.6f}#{request_id}"


def default_client() -> Any:
    """A DynamoDB client for the environment's region and credentials (a Lambda's role)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=2, read_timeout=5)
    return boto3.client("dynamodb", config=config)


def _number(value: int | float) -> dict[str, str]:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"DynamoDB cannot store {value}")
        return {"N": format(Decimal(repr(value)), "f")}  # exact: repr round-trips, "f" avoids exponents
    return {"N": str(value)}


def _attribute(value: object) -> dict[str, str]:
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number(value)
    raise TypeError(f"no DynamoDB mapping for {type(value).__name__}")


def _value(attribute: dict[str, str]) -> str | int | float:
    if "S" in attribute:
        return attribute["S"]
    number = attribute["N"]
    return int(number) if number.lstrip("-").isdigit() else float(number)


class _RecordTable(Generic[Record]):
    def __init__(self, table_name: str, record_type: type[Record], retention_days: float, client: Any) -> None:
        self.table_name = table_name
        self._type: type[Record] = record_type
        self._fields = tuple(record_type.model_fields)
        self._retention_s = retention_days * _DAY_S
        self._client = client if client is not None else default_client()

    def item(self, entry: Record) -> dict[str, dict[str, str]]:
        """The DynamoDB item for a record (what `record` writes)."""
        item = {name: _attribute(value) for name, value in entry.model_dump().items() if value is not None}
        item[PARTITION_KEY] = {"S": entry.tenant or NO_TENANT}
        item[SORT_KEY] = {"S": sort_key(entry.ts, entry.request_id)}
        item[TTL_ATTRIBUTE] = {"N": str(int(entry.ts + self._retention_s))}
        return item

    def _put(self, entry: Record) -> None:
        # Already recorded means a retry of the same request: keep the first copy.
        with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
            self._client.put_item(
                TableName=self.table_name,
                Item=self.item(entry),
                ConditionExpression="attribute_not_exists(#sk)",
                ExpressionAttributeNames={"#sk": SORT_KEY},
            )

    def query(
        self, tenant: str | None, since_ts: float, until_ts: float | None = None, *, consistent: bool = False
    ) -> list[Record]:
        """A tenant's records with `since_ts <= ts` (and `ts < until_ts` when given), oldest first.
        Bounds are compared at microsecond precision. `tenant=None` reads audit records without a tenant."""
        condition = "#pk = :pk AND #sk >= :lo"
        values: dict[str, dict[str, str]] = {
            ":pk": {"S": tenant or NO_TENANT},
            ":lo": {"S": f"{since_ts:017.6f}"},
        }
        if until_ts is not None:
            condition = "#pk = :pk AND #sk BETWEEN :lo AND :hi"
            values[":hi"] = {"S": f"{until_ts:017.6f}"}  # "...#id" sorts after ":hi" at equal time: excluded
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY, "#sk": SORT_KEY},
            "ExpressionAttributeValues": values,
            "ConsistentRead": consistent,
        }
        return self._queried(request)

    def _queried(self, request: dict[str, Any]) -> list[Record]:
        """Every record a query finds, page after page."""
        records: list[Record] = []
        while True:
            page = self._client.query(**request)
            records.extend(self._record(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return records
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _record(self, item: dict[str, dict[str, str]]) -> Record:
        fields: dict[str, object] = {name: _value(item[name]) if name in item else None for name in self._fields}
        if fields["tenant"] == NO_TENANT and self._type is AuditRecord:
            fields["tenant"] = None
        record: Record = self._type.model_validate(fields)
        return record


class DynamoUsageLedger(_RecordTable[UsageRecord]):
    """`UsageLedger` on a DynamoDB table (layout in the module doc)."""

    def __init__(self, table_name: str, client: Any = None, *, retention_days: float = 800) -> None:
        super().__init__(table_name, UsageRecord, retention_days, client)

    def record(self, usage: UsageRecord) -> None:
        self._put(usage)


class DynamoAuditLog(_RecordTable[AuditRecord]):
    """`AuditLog` on a DynamoDB table (layout in the module doc), with the sparse index `by_variant`
    (partition key `variant`, sort key `sk`): only the requests a rollout or an experiment put on
    an arm are in it, so their gates read those and nothing else of the tenant's traffic."""

    def __init__(self, table_name: str, client: Any = None, *, retention_days: float = 400) -> None:
        super().__init__(table_name, AuditRecord, retention_days, client)

    def record(self, entry: AuditRecord) -> None:
        self._put(entry)

    def on_arm(self, variant: str, since_ts: float) -> list[AuditRecord]:
        """The records of the requests put on one arm (`<rollout id>:candidate`, `<experiment id>:<variant>`)
        since `since_ts`, oldest first."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": VARIANT_INDEX,
            "KeyConditionExpression": "#v = :v AND #sk >= :lo",
            "ExpressionAttributeNames": {"#v": "variant", "#sk": SORT_KEY},
            "ExpressionAttributeValues": {":v": {"S": variant}, ":lo": {"S": f"{since_ts:017.6f}"}},
        }
        return self._queried(request)


def audit_key_schema() -> dict[str, Any]:
    """`create_table` arguments of the audit table: the key schema and the `by_variant` index."""
    found = key_schema()
    found["AttributeDefinitions"] = [*found["AttributeDefinitions"], {"AttributeName": "variant", "AttributeType": "S"}]
    found["GlobalSecondaryIndexes"] = [
        {
            "IndexName": VARIANT_INDEX,
            "KeySchema": [
                {"AttributeName": "variant", "KeyType": "HASH"},
                {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
    ]
    return found


def key_schema() -> dict[str, Any]:
    """`KeySchema` and `AttributeDefinitions` of both tables, for `create_table` (tests, tools)."""
    return {
        "KeySchema": [
            {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": SORT_KEY, "AttributeType": "S"},
        ],
    }
