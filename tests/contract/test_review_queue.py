"""The `ReviewQueue` port: the SQLite adapter (embedded default) and the AWS one (SQS in, DynamoDB
as the record, on moto's server) keep the same promises: idempotent submission, oldest first,
filters by status and tenant, a decision recorded once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.adapters.aws.review import DynamoReviewStore, SqsReviewQueue, ingest, review_key_schema
from llm_gateway.adapters.local.review import SqliteReviewQueue
from llm_gateway.ports import ReviewItem, ReviewQueue
from tests.support.moto_server import MotoServer


class Drained:
    """The AWS queue as a reviewer sees it: what was submitted has been ingested by the
    `review_ingest` function (here: receive, ingest, delete, as its batch processor does)."""

    def __init__(self, queue: SqsReviewQueue, sqs: Any, url: str) -> None:
        self.queue, self.sqs, self.url = queue, sqs, url
        self.ingested = 0

    def submit(self, item: ReviewItem) -> None:
        self.queue.submit(item)

    def drain(self) -> None:
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return
            self.ingested += ingest(self.queue.store, [m["Body"] for m in messages])
            for message in messages:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])

    def items(self, *args: Any, **kwargs: Any) -> list[ReviewItem]:
        self.drain()
        return self.queue.items(*args, **kwargs)

    def decide(self, *args: Any, **kwargs: Any) -> ReviewItem:
        self.drain()
        return self.queue.decide(*args, **kwargs)


@pytest.fixture(params=["sqlite", "aws"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReviewQueue]:
    if request.param == "sqlite":
        local = SqliteReviewQueue(tmp_path / "review.db")
        yield local
        local.close()
        return
    moto: MotoServer = request.getfixturevalue("moto")
    dynamodb, sqs = moto.client("dynamodb"), moto.client("sqs")
    table = f"review-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **review_key_schema())
    url = sqs.create_queue(QueueName=table)["QueueUrl"]
    yield Drained(SqsReviewQueue(url, sqs, DynamoReviewStore(table, dynamodb)), sqs, url)  # type: ignore[misc]


def item(n: int, tenant: str = "acme", created_at: float | None = None) -> ReviewItem:
    return ReviewItem(
        item_id=f"req-{n}:input:prompt_injection",
        request_id=f"req-{n}",
        tenant=tenant,
        kind="input",
        layer="prompt_injection",
        reason="injection score 0.91 >= 0.87",
        score=0.91,
        text=f"text {n} for [EMAIL_1]",
        created_at=1_790_000_000.0 + n if created_at is None else created_at,
    )


def test_items_come_back_oldest_first_and_once(queue: ReviewQueue) -> None:
    for n in (3, 1, 2):
        queue.submit(item(n))
    queue.submit(item(1))  # the same item again (a retried step)
    assert [i.request_id for i in queue.items()] == ["req-1", "req-2", "req-3"]
    assert queue.items()[0] == item(1)


def test_filters_by_tenant_and_status(queue: ReviewQueue) -> None:
    queue.submit(item(1))
    queue.submit(item(2, tenant="globex"))
    queue.submit(item(3))
    queue.decide(item(3).item_id, approved=False, reviewer="ana", now=5.0)
    assert [i.request_id for i in queue.items(tenant="acme")] == ["req-1"]
    assert [i.request_id for i in queue.items(status="rejected")] == ["req-3"]
    assert [i.request_id for i in queue.items(status=None)] == ["req-1", "req-2", "req-3"]
    assert [i.request_id for i in queue.items(status=None, limit=2)] == ["req-1", "req-2"]


def test_a_decision_is_recorded_once(queue: ReviewQueue) -> None:
    queue.submit(item(1))
    decided = queue.decide(item(1).item_id, approved=True, reviewer="ana", now=7.5)
    assert (decided.status, decided.reviewer, decided.decided_at) == ("approved", "ana", 7.5)
    assert queue.items(status="approved") == [decided]
    assert queue.items() == []
    with pytest.raises(ValueError, match="already approved"):
        queue.decide(item(1).item_id, approved=False, reviewer="bo", now=8.0)
    with pytest.raises(KeyError):
        queue.decide("no-such-item", approved=True, reviewer="ana", now=8.0)


def test_many_pending_items_page_through(queue: ReviewQueue) -> None:
    for n in range(130):
        queue.submit(item(n))
    assert len(queue.items(limit=500)) == 130
    assert [i.request_id for i in queue.items(limit=3)] == ["req-0", "req-1", "req-2"]


def test_a_redelivered_message_makes_no_second_item(moto: MotoServer) -> None:
    dynamodb = moto.client("dynamodb")
    table = f"review-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **review_key_schema())
    store = DynamoReviewStore(table, dynamodb)
    body = item(1).model_dump_json()
    assert ingest(store, [body, body]) == 1
    store.decide(item(1).item_id, approved=True, reviewer="ana", now=3.0)
    assert ingest(store, [body]) == 0  # a late redelivery does not reset the decision
    assert store.items(status="approved")[0].reviewer == "ana"
    with pytest.raises(ValueError):
        ingest(store, ['{"not": "an item"}'])


def test_the_cli_lists_and_decides_a_deployment_s_items(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llm_gateway.cli.main import main

    dynamodb = moto.client("dynamodb")
    table = f"review-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **review_key_schema())
    ingest(DynamoReviewStore(table, dynamodb), [item(1).model_dump_json(), item(2, tenant="globex").model_dump_json()])
    for name, value in moto.environment().items():
        monkeypatch.setenv(name, value)

    assert main(["review", "list", "--table", table, "--tenant", "globex"]) == 0
    listed = capsys.readouterr().out
    assert item(2).item_id in listed and item(1).item_id not in listed
    assert main(["review", "reject", item(2).item_id, "--table", table, "--by", "ana"]) == 0
    assert f"{item(2).item_id} rejected by ana" in capsys.readouterr().out
    assert DynamoReviewStore(table, dynamodb).items(status="rejected")[0].reviewer == "ana"
