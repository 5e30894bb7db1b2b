"""Shadow copies on AWS, on moto's server: the finish step hands a sampled copy of each answered
request to the shadow queue (the request as the model saw it: PII masked), the `shadow` function's
handler sends the queued copies to the shadow model and keeps the pairs in DynamoDB once each
(a redelivered message adds nothing, a message that is not a copy is dropped, a spent budget
stops them), and `llm-gateway shadow report --table` sums them up, scoring them as it reads."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest

from llm_gateway.adapters.aws.shadow import SqsShadowHandOff
from llm_gateway.aws import runtime
from llm_gateway.aws import shadow as shadow_function
from llm_gateway.cli.main import main
from llm_gateway.config import load_config
from llm_gateway.http.app import create_app
from llm_gateway.observability import InMemoryMetrics
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, make_deps
from tests.integration.test_shadow import answer
from tests.support.aws_gates import Context
from tests.support.fake_providers import FakeServer, Script, fake_server
from tests.support.model_configs import acme_config
from tests.support.moto_server import MotoServer, moto_server
from tests.support.servers import serve


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    with fake_server("openai", Script(responder=answer)) as server:  # type: ignore[arg-type]
        yield server


@pytest.fixture
def deployed(
    upstream: FakeServer, moto: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    route = "{model: gpt-live, shadow: {model: gpt-shadow, sample: 1.0, budget_usd_per_day: 1.0}}"
    pii = "    guards: {pii: {enabled: true, default: mask, restore: [EMAIL]}}\n"
    path = acme_config(tmp_path, upstream.base_url, ["gpt-live", "gpt-shadow"], route, pii)
    sqs, dynamodb = moto.client("sqs"), moto.client("dynamodb")
    queue = sqs.create_queue(QueueName=f"shadow-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    table = f"shadow-pairs-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
    )
    # the shadow function's environment: its own store file for what it does not keep in DynamoDB
    for name, value in {
        **moto.environment(),
        "FAKE_OPENAI_KEY": "sk-fake",
        "GATEWAY_CONFIG_PATH": str(path),
        "GATEWAY_SQLITE_PATH": str(tmp_path / "shadow-function.db"),
        "SHADOW_TABLE": table,
    }.items():
        monkeypatch.setenv(name, value)

    def forget() -> None:
        runtime.settings.cache_clear()
        runtime.deps.cache_clear()
        shadow_function.pairs.cache_clear()

    forget()
    metrics = InMemoryMetrics()
    deps = make_deps(load_config(str(path)), db=tmp_path / "gateway.db", metrics=metrics)
    deps.shadows = SqsShadowHandOff(queue, sqs, seed=0)
    try:
        with serve(create_app(InProcessRunner(deps))) as url:
            yield {
                "url": url,
                "config": path,
                "queue": queue,
                "sqs": sqs,
                "table": table,
                "metrics": metrics,
                "deps": deps,
                "dynamodb": dynamodb,
            }
    finally:
        forget()


def queued(deployed: dict[str, Any]) -> list[dict[str, Any]]:
    """Every message on the shadow queue, received (and deleted) as the event source would."""
    found: list[dict[str, Any]] = []
    while True:
        got = deployed["sqs"].receive_message(QueueUrl=deployed["queue"], MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return found
        for message in got:
            deployed["sqs"].delete_message(QueueUrl=deployed["queue"], ReceiptHandle=message["ReceiptHandle"])
        found += got


def sqs_event(bodies: list[str]) -> dict[str, Any]:
    """The event the queue's event source gives the function."""
    return {
        "Records": [
            {
                "messageId": f"m{i}",
                "receiptHandle": f"r{i}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:shadow",
                "awsRegion": "us-east-1",
            }
            for i, body in enumerate(bodies)
        ]
    }


def test_copies_go_through_the_queue_to_the_shadow_function_and_into_the_pair_table(
    deployed: dict[str, Any], upstream: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    client = openai.OpenAI(base_url=deployed["url"] + "/v1", api_key=ACME_KEY, max_retries=0)
    questions = [f"Capital of France, question {i}?" for i in range(3)] + ["Please fail now.", "Mail ana@example.com"]
    for question in questions:
        raw = client.chat.completions.with_raw_response.create(
            model="default",
            messages=[{"role": "user", "content": question}],
            user="user-7f3a",
            metadata={"note": "John Doe 123-45-6789"},
        )
        assert raw.headers["x-gateway-model"] == "gpt-live"  # the user has the live answer, whatever the shadow does
    bodies = [m["Body"] for m in queued(deployed)]
    assert len(bodies) == len(questions)
    for raw_value in (
        "ana@example.com",
        "user-7f3a",
        "John Doe",
        "127.0.0.1",
    ):  # what the caller sent, where it came from
        assert not any(raw_value in body for body in bodies), raw_value  # the copy is what the model saw: masked
    answered = shadow_function.lambda_handler(sqs_event([*bodies, "not a copy"]), Context())  # type: ignore[arg-type]
    assert answered == {"batchItemFailures": []}  # a message that is not a copy is dropped, not retried
    called = len(upstream.script.requests)
    again = shadow_function.lambda_handler(sqs_event(bodies[:2]), Context())  # type: ignore[arg-type]
    assert again == {"batchItemFailures": []}
    assert len(upstream.script.requests) == called  # redelivered copies whose pairs are kept: not sent again
    # a copy whose route's budget (the configuration's, not the message's) is spent is not sent
    spent = json.loads(bodies[0])
    spent["state"]["request_id"], spent["budget_usd"] = "over-budget", 1e308
    day = datetime.now(UTC).date().isoformat()
    deployed["dynamodb"].update_item(
        TableName=deployed["table"],
        Key={"pk": {"S": "spend#acme#default"}, "sk": {"S": day}},
        UpdateExpression="ADD usd :spent",
        ExpressionAttributeValues={":spent": {"N": "1.0"}},
    )
    # a damaged pair is passed over by the report
    deployed["dynamodb"].put_item(
        TableName=deployed["table"],
        Item={"pk": {"S": "acme#default"}, "sk": {"S": f"{time.time():017.6f}#x"}, "pair": {"S": '{"ts": 1}'}},
    )
    # and one whose configuration shadows to another model now, or not at all, is dropped
    elsewhere = json.loads(bodies[1])
    elsewhere["state"]["request_id"], elsewhere["shadow_model"] = "elsewhere", "gpt-live"
    called = len(upstream.script.requests)
    shadow_function.lambda_handler(sqs_event([json.dumps(spent), json.dumps(elsewhere)]), Context())  # type: ignore[arg-type]
    assert len(upstream.script.requests) == called
    capsys.readouterr()  # the function's logs
    assert main(["shadow", "report", "--json", "--table", deployed["table"], "--config", str(deployed["config"])]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pairs"] == len(questions)  # once each, the redelivered ones too; none over budget
    assert report["models"] == ["gpt-live -> gpt-shadow"]
    assert report["agreement"] is not None and report["agreement"] >= 0.75  # scored as read: similar answers
    assert report["cost_usd"]["shadow"] > 0


def test_a_copy_that_cannot_be_handed_off_never_reaches_the_user(deployed: dict[str, Any]) -> None:
    client = openai.OpenAI(base_url=deployed["url"] + "/v1", api_key=ACME_KEY, max_retries=0)
    missing = deployed["queue"].rsplit("/", 1)[0] + "/no-such-queue"
    deployed["deps"].shadows = SqsShadowHandOff(missing, deployed["sqs"], seed=0)
    for question in ("Capital of France?", "x" * 300_000):  # a lost queue; a copy over SQS's limit
        raw = client.chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "user", "content": question}]
        )
        assert raw.http_response.status_code == 200 and raw.headers["x-gateway-model"] == "gpt-live"
    dropped = deployed["metrics"].counters
    reasons = {dict(labels).get("reason") for (name, labels) in dropped if name == "shadow_dropped"}
    assert reasons == {"hand_off", "too_large"}
