"""The synthesized stack, deployed on local AWS, answering the official openai SDK.

openai SDK → REST front (the StartSyncExecution integration's mapping) → Step Functions
execution on moto → each step's Lambda handler in its own process → the local model endpoint
(the SageMaker container contract) → a completion. Stores are the AWS adapters: DynamoDB tables
from the template on moto, Momento on its gRPC stand-in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from cdk import constants as c
from cdk import lambda_bundles as bundles
from cdk.assembly import function_bundles
from llm_gateway.batch.runner import job_id_for
from llm_gateway.config import hash_key
from llm_gateway.pipeline import FAILED, FINISH, STEPS
from tests.support.api_front import RestFront, proxy_routes
from tests.support.batch_files import chat_line
from tests.support.fake_providers import FakeServer, fake_server
from tests.support.local_aws import REGION, LocalAws, connect_bucket_notifications, deploy_assembly, local_aws
from tests.support.momento_standin import MomentoStandIn
from tests.support.servers import serve

pytestmark = pytest.mark.model

cdk_synth = pytest.importorskip("tests.infrastructure.synth", reason="needs aws-cdk-lib (the dev extra)")

KEY = "sk-e2e-acme"
OTHER_TENANT_KEY = "sk-e2e-globex"
STACK = "LlmGateway-dev"
MOMENTO_CACHE = "llm-gateway"
DISTILL_TENANT = "umbrella"  # opted in to training, keeps content


@dataclass
class Deployed:
    aws: LocalAws
    front: RestFront
    base_url: str
    resources: dict[str, str]
    template: dict[str, Any]
    batch_provider: FakeServer

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=180)

    def last_tasks(self) -> list[str]:
        """The task states the last execution ran, in order (choices and pass states left out)."""
        tasks = {step.name for step in STEPS} | {FINISH.name, FAILED.name}
        return [name for name in self.front.history(self.front.executions[-1]) if name in tasks]


@pytest.fixture(scope="module")
def model_endpoint() -> Iterator[str]:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    process = subprocess.Popen(
        [sys.executable, "-m", "model_server", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("ready "), line
        yield line.split()[1]
    finally:
        process.terminate()
        process.wait(timeout=20)


def gateway_config(path: Path, endpoint: str, batch_provider: str) -> Path:
    path.write_text(
        f"""
models:
  smollm2-135m-instruct-q4_1:
    provider: sagemaker
    endpoint: {endpoint}
    timeout_s: 120
    default_max_tokens: 8
    price: {{input_per_mtok: 0.02, output_per_mtok: 0.08}}
    allows_training: true
  gpt-batch:
    provider: openai
    provider_model: gpt-fake
    base_url: {batch_provider}
    api_key_env: FAKE_OPENAI_KEY
    price: {{input_per_mtok: 1000.0, output_per_mtok: 1000.0}}
tenants:
  acme:
    api_keys: [{{id: e2e, sha256: {hash_key(KEY)}}}]
    routes: {{default: {{model: smollm2-135m-instruct-q4_1}}}}
    allowed_models: [gpt-batch]
    rate_limit: {{requests_per_minute: 600, burst: 50}}
    input_blocklist: {{keywords: [codename]}}
    semantic_cache: {{enabled: true, target_precision: 0.90}}
  globex:
    api_keys: [{{id: e2e, sha256: {hash_key(OTHER_TENANT_KEY)}}}]
    routes: {{default: {{model: smollm2-135m-instruct-q4_1}}}}
  {DISTILL_TENANT}:
    api_keys: [{{id: e2e, sha256: {hash_key("sk-e2e-umbrella")}}}]
    routes: {{default: {{model: smollm2-135m-instruct-q4_1}}}}
    traces: {{store_content: true}}
    training: {{opt_in: true, min_quality_ratio: 0.9}}
"""
    )
    return path


def resource_of(template: dict[str, Any], resources: dict[str, str], kind: str, contains: str = "") -> str:
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == kind and contains.lower() in logical_id.lower():
            return resources[logical_id]
    raise AssertionError(f"no {kind} matching {contains!r} in the template")


def request_schema(template: dict[str, Any]) -> dict[str, Any]:
    models = [r for r in template["Resources"].values() if r["Type"] == "AWS::ApiGateway::Model"]
    assert len(models) == 1, "the API validates requests against one model"
    schema: dict[str, Any] = models[0]["Properties"]["Schema"]
    return schema


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, model_endpoint: str) -> Iterator[Deployed]:
    workdir = tmp_path_factory.mktemp("local-aws")
    # The real bundles, built for this machine: each handler runs with only its code and layers
    synthesized = cdk_synth.synthesize("dev", outdir=workdir / "cdk.out", bundled=True, for_this_machine=True)
    runtime = str(bundles.build_runtime_provided(bundles.Target.this_machine(), workdir / "runtime-provided"))
    by_name = {c.resource_name("dev", f): b for f, b in function_bundles(synthesized.outdir, STACK).items()}
    template = synthesized.to_json()
    with MomentoStandIn(caches=(MOMENTO_CACHE,)) as momento, fake_server("openai") as batch_provider:
        config = gateway_config(workdir / "gateway.yaml", model_endpoint, batch_provider.base_url)
        overrides = {
            "FAKE_OPENAI_KEY": "sk-fake-batch-provider",
            "BATCH_POLL_S": "1",
            "GATEWAY_CONFIG_PATH": str(config),
            "GATEWAY_STORE": "aws",
            "MOMENTO_LOCAL_ENDPOINT": momento.endpoint,
            "MOMENTO_CACHE_NAME": MOMENTO_CACHE,
            "PROVIDER_KEYS_SECRET_ARN": "",  # the local model needs no provider key
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "LlmGatewayE2E",
        }
        with local_aws(workdir, overrides, bundles=by_name, runtime_provided=runtime) as aws:
            resources = deploy_assembly(aws, synthesized.outdir, STACK)
            # What CloudFormation's custom resource and the recreated workflow would give on AWS.
            connect_bucket_notifications(aws, template, resources)
            aws.lambdas.env_overrides["BATCH_STATE_MACHINE_ARN"] = resource_of(
                template, resources, "AWS::StepFunctions::StateMachine", "Batch"
            )
            # The pseudonym key, read by the functions from Secrets Manager as on AWS (the local
            # CloudFormation does not generate secret values).
            secret = aws.client("secretsmanager").create_secret(Name="pseudonym-key", SecretString="k" * 64)
            aws.lambdas.env_overrides["PSEUDONYM_SECRET_ARN"] = secret["ARN"]
            front = RestFront(
                aws,
                state_machine_arn=resource_of(template, resources, "AWS::StepFunctions::StateMachine", "Workflow"),
                authorizer_function=resource_of(template, resources, "AWS::Lambda::Function", "authorizer"),
                request_schema=request_schema(template),
                proxies=proxy_routes(template, resources),
            )
            with serve(front.app()) as url:
                yield Deployed(aws, front, url + "/v1", resources, template, batch_provider)


QUESTION = [{"role": "user", "content": "What is the capital of France? One word."}]


def test_the_sdk_gets_a_completion_through_the_deployed_chain(deployed: Deployed) -> None:
    raw = deployed.client().chat.completions.with_raw_response.create(
        model="default",
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=8,
        temperature=0,
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert raw.headers["x-gateway-cache"] == "miss"
    assert deployed.last_tasks() == [*(s.name for s in STEPS), "finish"]
    invoked = [name for name, _, _ in deployed.aws.lambdas.invocations]
    assert len(invoked) >= len(STEPS) + 2  # authorizer, each step, finish


def test_the_second_identical_call_is_a_cache_hit(deployed: Deployed) -> None:
    messages = [{"role": "user", "content": "Say hello to the cache."}]
    first = deployed.client().chat.completions.with_raw_response.create(
        model="default",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=6,
        temperature=0,
    )
    second = deployed.client().chat.completions.with_raw_response.create(
        model="default",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=6,
        temperature=0,
    )
    assert (first.headers["x-gateway-cache"], second.headers["x-gateway-cache"]) == ("miss", "exact")
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert deployed.last_tasks() == ["guard", "cache", "finish"]


def test_a_paraphrase_is_a_semantic_hit_through_momento(deployed: Deployed) -> None:
    """The cache Lambda embeds and searches the Momento LSH index; finish stored the first answer there."""
    brief = {"role": "system", "content": "Answer in a few words."}
    asked = [
        deployed.client().chat.completions.with_raw_response.create(
            model="default",
            messages=[brief, {"role": "user", "content": question}],  # type: ignore[list-item]
            max_tokens=48,
        )
        for question in ("What is the capital of France?", "What is France's capital?")
    ]
    assert asked[0].parse().choices[0].finish_reason == "stop"
    assert asked[1].headers["x-gateway-cache"] == "semantic"
    assert float(asked[1].headers["x-gateway-cache-score"]) >= 0.8
    assert deployed.last_tasks() == ["guard", "cache", "finish"]


def test_a_blocked_request_ends_in_the_guards_refusal(deployed: Deployed) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        deployed.client().chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "tell me the codename"}],
        )
    assert caught.value.code == "blocklist"
    assert deployed.last_tasks() == ["guard", "finish"]


def test_an_unknown_key_is_refused_by_the_guard_through_the_failure_path(deployed: Deployed) -> None:
    with pytest.raises(openai.AuthenticationError):
        deployed.client("sk-not-a-key").chat.completions.create(model="default", messages=QUESTION)  # type: ignore[arg-type]
    assert deployed.last_tasks() == ["guard", "failed"]


def test_usage_and_audit_landed_in_dynamodb(deployed: Deployed) -> None:
    dynamodb = deployed.aws.client("dynamodb")
    tables = dynamodb.list_tables()["TableNames"]
    audit = next(t for t in tables if "audit" in t.lower())
    deadline = time.monotonic() + 5
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(items) < 3:
        items = dynamodb.scan(TableName=audit)["Items"]
    outcomes = {item["outcome"]["S"] for item in items}
    assert {"ok", "cache_hit", "blocked"} <= outcomes
    assert KEY not in json.dumps(items) and "capital of France" not in json.dumps(items)
    # each request's trace, written by the finish (or failure) function, names the steps it took
    traces_table = next(t for t in tables if "traces" in t.lower())
    traces = [json.loads(item["trace"]["S"]) for item in dynamodb.scan(TableName=traces_table)["Items"]]
    answered = [t for t in traces if t["outcome"] == "ok"]
    assert answered and [s["name"] for s in answered[0]["steps"]] == [
        "guard", "cache", "router", "invoke", "moderate", "finish"
    ]  # fmt: skip
    assert any(t["outcome"] == "blocked" and t["steps"][-1]["name"] == "failed" for t in traces)
    assert "capital of France" not in json.dumps(traces)  # the tenants keep no content


# ----------------------------------------------------------------------------- batch jobs


def _batch_line(i: int, question: str) -> str:
    return chat_line(f"line-{i}", question, "gpt-batch", max_tokens=20)


def test_an_uploaded_batch_file_comes_back_answered_in_order_with_its_errors(deployed: Deployed) -> None:
    """200 lines (5 invalid, 20 answered online before: cache hits) -> S3 notification ->
    batch_submit -> the Standard workflow on moto -> batch_work (provider batch API) -> results."""
    invalid = {17: "{not json", 63: '{"custom_id": "x", "method": "GET", "url": "/v1/chat/completions", "body": {}}'}
    invalid |= {i: _batch_line(i, "")[:-2] for i in (99, 151)}  # cut short: not JSON
    invalid[183] = json.dumps({"custom_id": "line-183", "method": "POST", "url": "/v1/embeddings", "body": {}})
    cached = list(range(0, 200, 10))  # asked online first, word for word
    for i in cached:
        deployed.client().chat.completions.create(
            model="gpt-batch", messages=[{"role": "user", "content": f"batch question {i}"}], max_tokens=20
        )
    lines = [invalid.get(i) or _batch_line(i, f"batch question {i}") for i in range(200)]
    assert len(invalid) == 5 and not set(invalid) & set(cached)
    bucket = resource_of(deployed.template, deployed.resources, "AWS::S3::Bucket", "BatchBucket")
    s3 = deployed.aws.client("s3")
    key = "batches/in/acme/nightly run.jsonl"
    put = s3.put_object(Bucket=bucket, Key=key, Body=("\n".join(lines) + "\n").encode())
    # S3 delivers the same event again: the same job, no second workflow.
    deployed.aws.client("lambda").invoke(
        FunctionName=resource_of(deployed.template, deployed.resources, "AWS::Lambda::Function", "BatchSubmit"),
        Payload=json.dumps(
            {
                "Records": [
                    {
                        "s3": {
                            "bucket": {"name": bucket},
                            "object": {"key": "batches/in/acme/nightly+run.jsonl", "versionId": put["VersionId"]},
                        }
                    }
                ]
            }
        ),
    )
    sfn = deployed.aws.client("stepfunctions")
    machine = deployed.aws.lambdas.env_overrides["BATCH_STATE_MACHINE_ARN"]
    deadline = time.monotonic() + 240
    executions: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        executions = sfn.list_executions(stateMachineArn=machine)["executions"]
        if executions and executions[0]["status"] != "RUNNING":
            break
        time.sleep(1)
    (execution,) = executions
    assert execution["status"] == "SUCCEEDED", sfn.get_execution_history(executionArn=execution["executionArn"])
    job_id = execution["name"]
    prefix = f"batches/out/acme/{job_id}/"
    results = [json.loads(x) for x in s3.get_object(Bucket=bucket, Key=prefix + "results.jsonl")["Body"].iter_lines()]
    errors = [json.loads(x) for x in s3.get_object(Bucket=bucket, Key=prefix + "errors.jsonl")["Body"].iter_lines()]
    assert [r["custom_id"] for r in results] == [f"line-{i}" for i in range(200) if i not in invalid]
    assert all(r["response"]["status_code"] == 200 for r in results)
    assert sorted(e["line"] for e in errors) == sorted(i + 1 for i in invalid)
    # The cache answered 20 lines; the provider's batch API the other 175, in one batch.
    (provider_batch,) = deployed.batch_provider.script.batches.batches.values()
    asked = {r["body"]["messages"][0]["content"] for r in provider_batch.requests}
    assert len(asked) == 175 and not asked & {f"batch question {i}" for i in cached}
    # Usage at the batch price (half of 1,000 $/Mtok for 12 + 6 tokens), once per answered line.
    dynamodb = deployed.aws.client("dynamodb")
    usage = next(t for t in dynamodb.list_tables()["TableNames"] if "usage" in t.lower())
    items = [i for page in dynamodb.get_paginator("scan").paginate(TableName=usage) for i in page["Items"]]
    batch_costs = [float(i["cost_usd"]["N"]) for i in items if job_id in json.dumps(i)]
    assert len(batch_costs) == 175 and {round(c, 9) for c in batch_costs} == {round(18 * 500 / 1e6, 9)}


def test_a_tenant_reads_its_batch_through_the_rest_api_and_no_other_tenant_can(deployed: Deployed) -> None:
    """Upload -> batch_submit -> the job table; `GET /v1/batches[/{id}]` through the REST front
    (the authorizer, the template's proxy integration, the batch_status function) with the SDK."""
    assert set(deployed.front.proxies) == {("GET", "/v1/batches"), ("GET", "/v1/batches/{batch_id}")}
    bucket = resource_of(deployed.template, deployed.resources, "AWS::S3::Bucket", "BatchBucket")
    key = "batches/in/acme/status check.jsonl"
    lines = [chat_line(f"status-{i}", f"Say the number {i}.", max_tokens=4) for i in range(2)]
    put = deployed.aws.client("s3").put_object(Bucket=bucket, Key=key, Body=("\n".join(lines) + "\n").encode())
    job_id = job_id_for("acme", key, put["VersionId"])
    owner = deployed.client()

    # The owner sees the job from its creation until it completes
    deadline, batch = time.monotonic() + 240, None
    while time.monotonic() < deadline:
        try:
            batch = owner.batches.retrieve(job_id)
        except openai.NotFoundError:  # batch_submit has not created it yet
            batch = None
        if batch is not None and batch.status == "completed":
            break
        time.sleep(1)
    assert batch is not None and batch.status == "completed", batch
    body = batch.to_dict()
    assert body["object"] == "batch" and body["input_file"] == key
    assert body["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    assert body["output_file"] == f"batches/out/acme/{job_id}/results.jsonl"
    assert job_id in [b.id for b in owner.batches.list().data]

    # Another tenant's key: the job does not exist, and is not in its list
    other = deployed.client(OTHER_TENANT_KEY)
    with pytest.raises(openai.NotFoundError) as missing:
        other.batches.retrieve(job_id)
    assert missing.value.code == "not_found"
    assert job_id not in [b.id for b in other.batches.list().data]
    # A key of no tenant passes the authorizer (it only hashes) and is refused by the function
    with pytest.raises(openai.AuthenticationError):
        deployed.client("sk-not-a-key").batches.retrieve(job_id)


# ----------------------------------------------------------------------------- staged rollouts


def ask_as_one_user(deployed: Deployed, question: str) -> Any:
    """A question of one user of acme, past the cache: the raw answer."""
    return deployed.client().chat.completions.with_raw_response.create(
        model="default",
        messages=[{"role": "user", "content": question}],
        user="e2e-rollout-user",
        max_tokens=8,
        extra_headers={"cache-control": "no-store"},
    )


def test_a_rollout_in_the_deployed_table_puts_callers_on_its_arm_and_the_gates_function_judges_it(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rollout start --table` writes the stack's rollout table; the deployed guard function reads
    it and sends the caller to the candidate; the scheduled gates function, invoked as the
    schedule invokes it, reads the rollout's audit records; `rollout rollback --table` ends it."""
    from llm_gateway.cli.main import main

    for name, value in deployed.aws.moto.environment(REGION).items():
        monkeypatch.setenv(name, value)
    table = resource_of(deployed.template, deployed.resources, "AWS::DynamoDB::Table", "Rollouts")
    config = deployed.aws.lambdas.env_overrides["GATEWAY_CONFIG_PATH"]
    command = ["rollout", "start", "--tenant", "acme", "--route", "default", "--to", "gpt-batch", "--stages", "100"]
    assert main([*command, "--no-alerts", "--table", table, "--config", config]) == 0
    from llm_gateway.adapters.aws.rollouts import DynamoRolloutStore

    rollout_id = DynamoRolloutStore(table, deployed.aws.client("dynamodb")).all("acme")[-1].rollout_id
    try:
        raw = ask_as_one_user(deployed, "Which arm answers me?")
        assert raw.headers.get("x-gateway-variant") == f"{rollout_id}:candidate", dict(raw.headers)
        assert raw.headers["x-gateway-model"] == "gpt-batch"
        gates = resource_of(deployed.template, deployed.resources, "AWS::Lambda::Function", "RolloutGates")
        answer = deployed.aws.client("lambda").invoke(FunctionName=gates, Payload=json.dumps({"source": "aws.events"}))
        assert "FunctionError" not in answer, answer["Payload"].read()
        assert json.loads(answer["Payload"].read()) == {"moved": [], "stopped": []}  # one request: too few to judge
        audit = next(t for t in deployed.aws.client("dynamodb").list_tables()["TableNames"] if "audit" in t.lower())
        variants = [
            i.get("variant", {}).get("S") for i in deployed.aws.client("dynamodb").scan(TableName=audit)["Items"]
        ]
        assert f"{rollout_id}:candidate" in variants
    finally:
        assert main(["rollout", "rollback", rollout_id, "--table", table, "--config", config]) == 0
    after = ask_as_one_user(deployed, "Which arm answers me now?")
    assert "x-gateway-variant" not in after.headers


# ----------------------------------------------------------------------------- evals


def test_an_eval_suite_runs_as_a_batch_job_of_the_deployment_and_is_scored(
    deployed: Deployed, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`eval run --batch-bucket`: the shipped extraction suite's first cases uploaded under
    batches/in/acme/evals/, answered by the deployed batch workflow, the output scored here."""
    from llm_gateway.cli.main import main

    for name, value in deployed.aws.moto.environment(REGION).items():
        monkeypatch.setenv(name, value)
    bucket = resource_of(deployed.template, deployed.resources, "AWS::S3::Bucket", "BatchBucket")
    config = deployed.aws.lambdas.env_overrides["GATEWAY_CONFIG_PATH"]
    command = ["eval", "run", "extraction", "--model", "gpt-batch", "--tenant", "acme", "--limit", "2"]
    options = ["--batch-bucket", bucket, "--poll-s", "1", "--wait", "240", "--out", str(tmp_path / "run")]
    assert main([*command, *options, "--config", config]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["cases"] == 2 and report["outcomes"] == {"answered": 2}
    assert report["batch"]["input"].startswith("batches/in/acme/evals/extraction-gpt-batch-")
    assert report["batch"]["job_id"].startswith("batch_") and report["cost_usd"] > 0
    assert all(r["request_id"].startswith(report["batch"]["job_id"]) for r in report["results"])


# ----------------------------------------------------------------------------- distillation


def run_execution(deployed: Deployed, machine: str, name: str, started: dict[str, Any]) -> dict[str, Any]:
    """Start a named execution and wait for it to end: its description and its history's events."""
    sfn = deployed.aws.client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=machine, name=name, input=json.dumps(started))["executionArn"]
    deadline = time.monotonic() + 240
    while (execution := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the distillation workflow did not end"
        time.sleep(1)
    events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return {**execution, "events": events}


def entered(events: list[dict[str, Any]]) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]


def distill_run(deployed: Deployed, run_id: str, answers: list[str]) -> tuple[dict[str, Any], Any, str]:
    """The opted-in tenant's traffic (and globex's, of the same hour) in the deployed trace table,
    the model package group, the transform's output (the student's `answers` to the two test
    tickets: moto's transform writes nothing), then the run's execution: it, the run's files and
    the bucket. Traces are put once whatever the test (a repeated put keeps the first)."""
    from llm_gateway.adapters.aws.traces import DynamoTraceStore
    from llm_gateway.aws.distill_run import RunFiles
    from tests.support.distill_traces import ticket_trace

    aws, now = deployed.aws, time.time()
    bucket = resource_of(deployed.template, deployed.resources, "AWS::S3::Bucket", "BatchBucket")
    table = resource_of(deployed.template, deployed.resources, "AWS::DynamoDB::Table", "Traces")
    machine = resource_of(deployed.template, deployed.resources, "AWS::StepFunctions::StateMachine", "Distill")
    traces = DynamoTraceStore(table, aws.client("dynamodb"))
    model = "smollm2-135m-instruct-q4_1"
    for i in range(20):  # 16 train, 2 validation, 2 test
        traces.put(ticket_trace(i, ts=now - 3600 + 60 * i, tenant=DISTILL_TENANT, model=model))
        traces.put(ticket_trace(100 + i, ts=now - 3600 + 60 * i, tenant="globex", model=model))
    # What CloudFormation would have made (moto's skips model package groups)
    group = c.resource_name("dev", c.DISTILL_PACKAGE_GROUP)
    sagemaker = aws.client("sagemaker")
    if not sagemaker.list_model_package_groups(NameContains=group)["ModelPackageGroupSummaryList"]:
        sagemaker.create_model_package_group(ModelPackageGroupName=group)
    files = RunFiles(bucket, DISTILL_TENANT, run_id)
    usage = {"prompt_tokens": 9, "completion_tokens": 6}
    lines = [{"text": text, "finish_reason": "stop", "usage": usage, "model": "m"} for text in answers]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    aws.client("s3").put_object(Bucket=bucket, Key=files.transform_output, Body=body)
    started = {"tenant": DISTILL_TENANT, "route": "default", "since": now - 86_400, "run_id": run_id}
    return run_execution(deployed, machine, run_id, started), files, bucket


def test_the_distillation_workflow_collects_trains_evaluates_and_registers_on_sagemaker(deployed: Deployed) -> None:
    """An opted-in tenant's traces in the deployed trace table -> the Standard workflow on moto:
    `distill_collect` writes the collection to the bucket (another tenant's traces absent); a
    SageMaker training job is submitted with the `train` channel on that prefix, the stage's
    hyperparameters and the run's model prefix; the student's model and a batch transform of the
    test split's endpoint requests follow; `distill_evaluate` scores the transform's output and
    the student is registered for approval. moto runs no container: its jobs complete at once and
    write nothing, so the transform's output (the student's answers) is put by the test."""
    from llm_gateway.aws.distill_run import job_name
    from tests.support.distill_traces import question, teacher_answer

    # Given a student that answers both test tickets as the teacher did
    execution, files, bucket = distill_run(deployed, "e2e-run", [teacher_answer(i) for i in (18, 19)])
    s3, sagemaker = deployed.aws.client("s3"), deployed.aws.client("sagemaker")
    group = c.resource_name("dev", c.DISTILL_PACKAGE_GROUP)
    assert deployed.template["Outputs"]["DistillModelPackageGroup"]["Value"] == group

    assert execution["status"] == "SUCCEEDED", execution["events"][-3:]
    assert entered(execution["events"]) == [
        "collect", "train", "student", "transform", "evaluate", "meets_bar", "register", "registered"
    ]  # fmt: skip
    # The collection: counts, split by time, globex absent
    card = json.loads(s3.get_object(Bucket=bucket, Key=files.data + "card.json")["Body"].read())
    assert card["examples"] == {"train": 16, "validation": 2, "test": 2} and card["tenant"] == DISTILL_TENANT
    train = s3.get_object(Bucket=bucket, Key=files.data + "train.jsonl")["Body"].read().decode()
    assert [json.loads(x)["messages"][1]["content"] for x in train.splitlines()] == [question(i) for i in range(16)]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=files.data)["Contents"]]
    collected = "".join(s3.get_object(Bucket=bucket, Key=k)["Body"].read().decode() for k in keys)
    assert not any(question(100 + i) in collected for i in range(20))  # globex's tickets
    # The training job: the train channel on the collection, the hyperparameters, the model prefix
    job = sagemaker.describe_training_job(TrainingJobName=job_name(DISTILL_TENANT, "e2e-run"))
    (channel,) = job["InputDataConfig"]
    assert channel["ChannelName"] == "train"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{bucket}/{files.data}"
    assert channel["DataSource"]["S3DataSource"]["S3DataType"] == "S3Prefix"
    assert job["HyperParameters"] == {"epochs": "4", "learning_rate": "0.001", "rank": "16", "batch": "8"}
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{bucket}/{files.model}"
    assert job["AlgorithmSpecification"]["TrainingImage"] == (
        f"123456789012.dkr.ecr.{REGION}.amazonaws.com/{c.DISTILL_DEFAULT_REPOSITORY}:latest"
    )
    assert job["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert job["StoppingCondition"]["MaxRuntimeInSeconds"] == 4 * 3600
    assert "TrainingRole" in job["RoleArn"]
    # The student's batch transform: the test split's endpoint requests in, the eval prefix out
    transform = sagemaker.describe_transform_job(TransformJobName=job_name(DISTILL_TENANT, "e2e-run"))
    source = transform["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    assert source == f"s3://{bucket}/{files.data}test-invocations.jsonl"
    assert transform["TransformOutput"]["S3OutputPath"] == f"s3://{bucket}/{files.transform}"
    # The report, and the registered student awaiting an operator's approval
    report = json.loads(s3.get_object(Bucket=bucket, Key=files.eval + "report.json")["Body"].read())
    assert (report["quality_ratio"], report["meets_bar"], report["cases"]) == (1.0, True, 2)
    packages = sagemaker.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    runs = [sagemaker.describe_model_package(ModelPackageName=p["ModelPackageArn"]) for p in packages]
    (described,) = [d for d in runs if d["CustomerMetadataProperties"]["run_id"] == "e2e-run"]
    assert described["ModelApprovalStatus"] == "PendingManualApproval"
    assert described["CustomerMetadataProperties"]["quality_ratio"] == "1.0"
    assert described["CustomerMetadataProperties"]["tenant"] == DISTILL_TENANT
    assert described["InferenceSpecification"]["Containers"][0]["ModelDataUrl"].startswith(
        f"s3://{bucket}/{files.model}"
    )


def test_a_student_below_its_tenants_bar_ends_the_distillation_workflow_unregistered(deployed: Deployed) -> None:
    from tests.support.distill_traces import teacher_answer

    # Given a student that gets one of the two test tickets wrong: quality ratio 0.5, bar 0.9
    execution, files, bucket = distill_run(deployed, "e2e-below", [teacher_answer(18), '{"product": "toaster"}'])
    assert execution["status"] == "FAILED"
    assert entered(execution["events"])[-3:] == ["evaluate", "meets_bar", "below_bar"]
    (failed,) = [e["executionFailedEventDetails"] for e in execution["events"] if "executionFailedEventDetails" in e]
    assert failed["error"] == "StudentBelowBar"
    report = json.loads(
        deployed.aws.client("s3").get_object(Bucket=bucket, Key=files.eval + "report.json")["Body"].read()
    )
    assert (report["quality_ratio"], report["bar"], report["meets_bar"]) == (0.5, 0.9, False)
    sagemaker = deployed.aws.client("sagemaker")
    group = c.resource_name("dev", c.DISTILL_PACKAGE_GROUP)
    for package in sagemaker.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]:
        described = sagemaker.describe_model_package(ModelPackageName=package["ModelPackageArn"])
        assert described["CustomerMetadataProperties"]["run_id"] != "e2e-below"


def test_a_refused_collection_fails_the_distillation_workflow_with_the_reason(deployed: Deployed) -> None:
    """globex has not opted in: the collect step refuses, the execution fails with its error."""
    machine = resource_of(deployed.template, deployed.resources, "AWS::StepFunctions::StateMachine", "Distill")
    started = {"tenant": "globex", "route": "default", "since": "7d", "run_id": "e2e-refused"}
    execution = run_execution(deployed, machine, "e2e-refused", started)
    assert execution["status"] == "FAILED"
    assert entered(execution["events"]) == ["collect"]
    (failed,) = [e["executionFailedEventDetails"] for e in execution["events"] if "executionFailedEventDetails" in e]
    assert failed["error"] == "CollectionRefused"
    assert "tenant globex has not opted in to training on its traffic" in failed["cause"]
    jobs = deployed.aws.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    assert not any("globex" in j["TrainingJobName"] for j in jobs)
