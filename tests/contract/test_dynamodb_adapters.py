"""What the DynamoDB adapters promise beyond the shared port contract: the table layout, exact
numbers, the TTL attribute, first-write-wins on retries, and paged reads (boto3 -> moto server)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from llm_gateway.adapters.aws.dynamodb import DynamoAuditLog, DynamoUsageLedger, key_schema
from tests.contract.records import audit_record, usage_record
from tests.support.moto_server import MotoServer

DAY = 86_400


@pytest.fixture
def dynamodb(moto: MotoServer) -> Any:
    return moto.client("dynamodb")


@pytest.fixture
def table(dynamodb: Any) -> str:
    name = f"records-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **key_schema())
    return name


def _only_item(dynamodb: Any, table: str) -> dict[str, Any]:
    (item,) = dynamodb.scan(TableName=table)["Items"]
    return dict(item)


def test_a_usage_item_is_keyed_by_tenant_and_time_and_expires_after_the_retention(dynamodb: Any, table: str) -> None:
    entry = usage_record(ts=1_790_000_000.25, cost_usd=0.0000123, user_hash=None)
    DynamoUsageLedger(table, dynamodb).record(entry)
    item = _only_item(dynamodb, table)
    assert item["tenant"] == {"S": "acme"}
    assert item["sk"] == {"S": f"1790000000.250000#{entry.request_id}"}
    assert item["expires_at"] == {"N": str(1_790_000_000 + 800 * DAY)}
    assert item["cost_usd"] == {"N": "0.0000123"}  # exact decimal, no exponent, no binary noise
    assert item["prompt_tokens"] == {"N": "12"}
    assert "user_hash" not in item  # None is left out


def test_an_audit_item_without_a_tenant_goes_to_the_none_partition(dynamodb: Any, table: str) -> None:
    entry = audit_record(tenant=None, ts=1_790_000_000.0)
    DynamoAuditLog(table, dynamodb, retention_days=30).record(entry)
    item = _only_item(dynamodb, table)
    assert item["tenant"] == {"S": "_none"}
    assert item["expires_at"] == {"N": str(1_790_000_000 + 30 * DAY)}
    assert {"key_id", "route", "model", "user_hash"}.isdisjoint(item)


def test_a_retry_keeps_the_first_copy(dynamodb: Any, table: str) -> None:
    log = DynamoAuditLog(table, dynamodb)
    first = audit_record(latency_ms=40.0)
    log.record(first)
    log.record(first.model_copy(update={"latency_ms": 95.0}))  # the finish step ran again
    assert log.query("acme", 0.0, consistent=True) == [first]


def test_queries_return_oldest_first_across_pages_and_honour_an_end_time(dynamodb: Any, table: str) -> None:
    class OneItemPages:
        """The real client, but every query page holds one item."""

        def __init__(self, client: Any) -> None:
            self._client = client
            self.exceptions = client.exceptions

        def put_item(self, **kwargs: Any) -> Any:
            return self._client.put_item(**kwargs)

        def query(self, **kwargs: Any) -> Any:
            return self._client.query(Limit=1, **kwargs)

    ledger = DynamoUsageLedger(table, OneItemPages(dynamodb))
    entries = [usage_record(ts=1_790_000_000.0 + offset) for offset in (30.0, 10.0, 20.0)]
    for entry in entries:
        ledger.record(entry)
    oldest_first = sorted(entries, key=lambda e: e.ts)
    assert ledger.query("acme", 0.0, consistent=True) == oldest_first
    assert ledger.query("acme", 1_790_000_010.0, 1_790_000_030.0, consistent=True) == oldest_first[:2]
