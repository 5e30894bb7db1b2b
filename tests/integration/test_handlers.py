"""The Lambda handlers run the same step functions as the local runner, on Step Functions-shaped events."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from llm_gateway.aws import runtime
from llm_gateway.contracts import (
    CacheResult,
    FinishResult,
    GatewayState,
    GuardResult,
    InvokeResult,
    ModerateResult,
    RouteResult,
)
from llm_gateway.errors import AuthenticationFailed
from llm_gateway.pipeline import FAILED, FINISH, STEPS
from llm_gateway.runner import load_step

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"


@dataclass
class FakeLambdaContext:
    function_name: str = "llm-gateway-test"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:llm-gateway-test"
    aws_request_id: str = "c0ffee00-0000-4000-8000-000000000001"
    log_group_name: str = "/aws/lambda/llm-gateway-test"
    log_stream_name: str = "2026/11/27/[$LATEST]0123"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def load_handler(folder: str) -> ModuleType:
    path = ROOT / "functions" / folder / "handler.py"
    spec = importlib.util.spec_from_file_location(f"handler_{folder}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return loaded


@pytest.fixture(autouse=True)
def lambda_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("GATEWAY_CONFIG_PATH", str(EVENTS / "config.yaml"))
    monkeypatch.setenv("GATEWAY_SQLITE_PATH", str(tmp_path / "lambda.db"))
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    runtime.settings.cache_clear()
    runtime.deps.cache_clear()
    yield
    runtime.deps.cache_clear()
    runtime.settings.cache_clear()


def without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k != "latency_ms"}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def run(folder: str, payload: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = load_handler(folder).lambda_handler(payload, FakeLambdaContext())
    return result


def test_every_pipeline_step_has_a_handler_folder() -> None:
    """The state machine can find a function for each step of pipeline.py (and for finish)."""
    for step in (*STEPS, FINISH, FAILED):
        assert (ROOT / "functions" / step.handler / "handler.py").is_file(), step.handler


@pytest.mark.parametrize("step", [*STEPS, FINISH, FAILED], ids=lambda s: s.handler)
def test_handler_returns_exactly_what_the_step_function_returns(step: Any) -> None:
    """No logic in handlers: the handler's output equals the step function called directly on the same state."""
    payload = event(step.handler)
    from_handler = run(step.handler, payload)
    direct = load_step(step)(GatewayState.model_validate(payload), runtime.deps())
    if step.handler in ("finish", "record_failure"):  # they write records; compare the result model only
        assert FinishResult.model_validate(from_handler) == direct
    else:
        assert without_timings(from_handler) == without_timings(direct.model_dump(mode="json"))


def test_guard_handler_resolves_the_tenant_from_the_key_digest() -> None:
    result = GuardResult.model_validate(run("guard", event("guard")))
    assert result.outcome == "allowed"
    assert result.tenant is not None and result.tenant.tenant == "globex"


def test_guard_handler_raises_the_typed_error_step_functions_catches() -> None:
    """An unknown key surfaces as AuthenticationFailed (the Lambda errorType the state machine's Catch matches)."""
    payload = event("guard")
    payload["caller"]["api_key_sha256"] = "0" * 64
    with pytest.raises(AuthenticationFailed):
        run("guard", payload)


def test_cache_lookup_handler_misses_on_an_empty_cache() -> None:
    result = CacheResult.model_validate(run("cache_lookup", event("cache_lookup")))
    assert result.status == "miss"
    assert result.key is not None and len(result.key) == 64


def test_router_handler_returns_the_pinned_candidates() -> None:
    assert RouteResult.model_validate(run("router", event("router"))).candidates == ["echo"]


def test_invoke_handler_calls_the_model_and_prices_the_answer() -> None:
    result = InvokeResult.model_validate(run("invoke", event("invoke")))
    assert result.response.text() == "the forbidden word is here"
    usage = result.response.usage
    expected = (usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1_000_000
    assert usage.cost_usd == pytest.approx(expected)


def test_moderate_handler_filters_the_tenant_blocklist() -> None:
    result = ModerateResult.model_validate(run("moderate", event("moderate")))
    assert result.outcome == "filtered"
    assert result.rule == "keyword[0]"


def test_finish_handler_writes_usage_and_audit_without_the_prompt() -> None:
    run("finish", event("finish"))
    store = runtime.deps().audit
    rows = store.query("SELECT tenant, outcome, model, client_ip_hash FROM audit")  # type: ignore[attr-defined]
    assert rows == [("globex", "filtered", "echo", rows[0][3])]
    assert rows[0][3] != "203.0.113.7"
    dump = json.dumps(store.query("SELECT * FROM audit") + store.query("SELECT * FROM usage"))  # type: ignore[attr-defined]
    assert "forbidden" not in dump and "203.0.113.7" not in dump


def test_failure_handler_turns_a_caught_error_into_the_clients_answer() -> None:
    """Step Functions' Catch output ($.error) becomes the OpenAI error, status and Retry-After; it is audited."""
    result = FinishResult.model_validate(run("record_failure", event("record_failure")))
    assert result.status == 429 and result.retry_after_s == 2.5
    assert result.error is not None and result.error.error.code == "rate_limit_exceeded"
    assert "stackTrace" not in result.model_dump_json() and "handler.py" not in result.model_dump_json()
    rows = runtime.deps().audit.query("SELECT outcome, error_code FROM audit")  # type: ignore[attr-defined]
    assert rows == [("error", "rate_limit_exceeded")]


def test_authorizer_passes_only_the_key_digest_on() -> None:
    """The TOKEN authorizer allows the call and hands the chain the SHA-256 of the key, never the key."""
    from llm_gateway.config import hash_key

    result = run("authorizer", event("authorizer"))
    assert result["context"] == {"api_key_sha256": hash_key("sk-test-globex")}
    assert result["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert "sk-test-globex" not in json.dumps(result)


def test_authorizer_refuses_a_missing_token_with_unauthorized() -> None:
    payload = event("authorizer")
    payload["authorizationToken"] = "Bearer "
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        run("authorizer", payload)


def test_review_ingest_stores_a_batch_and_reports_only_the_bad_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the review table on moto's server and the function's environment pointing at it
    import uuid

    from llm_gateway.adapters.aws.review import DynamoReviewStore, review_key_schema
    from llm_gateway.aws import review_ingest
    from llm_gateway.ports import ReviewItem
    from tests.support.moto_server import moto_server

    with moto_server() as moto:
        dynamodb = moto.client("dynamodb")
        table = f"review-{uuid.uuid4().hex[:8]}"
        dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **review_key_schema())
        for name, value in moto.environment().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("REVIEW_TABLE", table)
        review_ingest.store.cache_clear()
        item = ReviewItem(
            item_id="r1:output:llm_judge",
            request_id="r1",
            tenant="acme",
            kind="output",
            layer="llm_judge",
            text="an answer",
            created_at=1_790_000_000.0,
        )
        records = [
            {"messageId": "m1", "body": item.model_dump_json()},
            {"messageId": "m2", "body": "not json"},
            {"messageId": "m3", "body": item.model_dump_json()},  # redelivered
        ]
        event = {
            "Records": [
                {**r, "receiptHandle": r["messageId"], "attributes": {}, "eventSource": "aws:sqs"} for r in records
            ]
        }

        # When the function handles the batch
        response = load_handler("review_ingest").lambda_handler(event, FakeLambdaContext())
        review_ingest.store.cache_clear()

        # Then only the bad message goes back to the queue, and the item is stored once
        assert response == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
        assert DynamoReviewStore(table, dynamodb).items() == [item]


def test_batch_submit_makes_one_job_per_object_version_and_batch_work_finishes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the batch bucket, job table, idempotency table and a workflow on moto's server
    import uuid

    from llm_gateway.adapters.aws.batch import batch_jobs_key_schema
    from llm_gateway.aws import batch
    from tests.support.batch_files import chat_line
    from tests.support.moto_server import moto_server

    with moto_server() as moto:
        s3, dynamodb, sfn = moto.client("s3"), moto.client("dynamodb"), moto.client("stepfunctions")
        suffix = uuid.uuid4().hex[:8]
        bucket, table, idempotency = f"batches-{suffix}", f"jobs-{suffix}", f"idem-{suffix}"
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **batch_jobs_key_schema())
        dynamodb.create_table(
            TableName=idempotency,
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        )
        machine = sfn.create_state_machine(
            name=f"batch-{suffix}",
            definition=json.dumps({"StartAt": "done", "States": {"done": {"Type": "Succeed"}}}),
            roleArn="arn:aws:iam::123456789012:role/batch",
        )["stateMachineArn"]
        for name, value in moto.environment().items():
            monkeypatch.setenv(name, value)
        for name, value in {
            "BATCH_BUCKET": bucket,
            "BATCH_TABLE": table,
            "IDEMPOTENCY_TABLE": idempotency,
            "BATCH_STATE_MACHINE_ARN": machine,
        }.items():
            monkeypatch.setenv(name, value)
        runtime.settings.cache_clear()
        batch.runner.cache_clear()
        batch._idempotency.cache_clear()
        lines = [chat_line(f"c{i}", f"echo {i}") for i in range(5)]
        key = "batches/in/acme/my file.jsonl"
        version = s3.put_object(Bucket=bucket, Key=key, Body="\n".join([*lines, "{broken"]).encode())["VersionId"]
        record = {
            "s3": {"bucket": {"name": bucket}, "object": {"key": "batches/in/acme/my+file.jsonl", "versionId": version}}
        }

        # When S3 delivers the event twice, and once for a key outside the batch prefix
        first = run("batch_submit", {"Records": [record]})
        again = run("batch_submit", {"Records": [record]})
        stray = {"s3": {"bucket": {"name": bucket}, "object": {"key": "elsewhere/x.jsonl", "versionId": "v"}}}
        refused = run("batch_submit", {"Records": [stray]})

        # Then one job, one execution named after it; the stray file is refused, not retried
        (job,) = first["jobs"]
        assert job["created"] and again["jobs"] == first["jobs"]
        assert "refused" in refused["jobs"][0]
        executions = sfn.list_executions(stateMachineArn=machine)["executions"]
        assert [e["name"] for e in executions] == [job["job_id"]]

        # And the workflow's task finishes the job: results and errors in the bucket
        answer = run("batch_work", {"job_id": job["job_id"]})
        assert answer["done"] and answer["status"] == "completed" and answer["wait_s"] == 0
        prefix = f"batches/out/acme/{job['job_id']}/"
        results = s3.get_object(Bucket=bucket, Key=prefix + "results.jsonl")["Body"].read().decode().splitlines()
        errors = s3.get_object(Bucket=bucket, Key=prefix + "errors.jsonl")["Body"].read().decode().splitlines()
        assert [json.loads(r)["custom_id"] for r in results] == [f"c{i}" for i in range(5)]
        assert json.loads(errors[0])["line"] == 6
        batch.runner.cache_clear()
        batch._idempotency.cache_clear()


def test_a_lambda_on_the_sqlite_store_is_wired_as_the_local_server_is(tmp_path: Path) -> None:
    # One wiring for both runtimes: the review queue, the allow-list, budgets and batch jobs too,
    # on the function's SQLite file; its pseudonym key is not a file beside the store
    deps = runtime.deps()
    assert deps.review is not None and deps.allowlist is not None
    assert deps.budgets is not None and deps.batch_jobs is not None
    assert (tmp_path / "lambda.db").is_file()
    assert not (tmp_path / "pseudonym.key").exists()
