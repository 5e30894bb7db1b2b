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

from llm_gateway.config import hash_key
from llm_gateway.pipeline import FAILED, FINISH, STEPS
from tests.support.api_front import RestFront
from tests.support.local_aws import LocalAws, deploy_assembly, local_aws
from tests.support.momento_standin import MomentoStandIn
from tests.support.servers import serve

pytestmark = pytest.mark.model

cdk_synth = pytest.importorskip("tests.infrastructure.synth", reason="needs aws-cdk-lib (the dev extra)")

KEY = "sk-e2e-acme"
STACK = "LlmGateway-dev"
MOMENTO_CACHE = "llm-gateway"


@dataclass
class Deployed:
    aws: LocalAws
    front: RestFront
    base_url: str
    resources: dict[str, str]

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
        [sys.executable, "-m", "gpu_endpoint", "--host", "127.0.0.1", "--port", "0"],
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


def gateway_config(path: Path, endpoint: str) -> Path:
    path.write_text(
        f"""
models:
  smollm2-135m-instruct-q4_1:
    provider: sagemaker
    endpoint: {endpoint}
    timeout_s: 120
    default_max_tokens: 8
    price: {{input_per_mtok: 0.02, output_per_mtok: 0.08}}
tenants:
  acme:
    api_keys: [{{id: e2e, sha256: {hash_key(KEY)}}}]
    routes: {{default: {{model: smollm2-135m-instruct-q4_1}}}}
    rate_limit: {{requests_per_minute: 600, burst: 50}}
    input_blocklist: {{keywords: [codename]}}
    semantic_cache: {{enabled: true, target_precision: 0.90}}
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
    synthesized = cdk_synth.synthesize("dev", outdir=workdir / "cdk.out")
    template = synthesized.to_json()
    config = gateway_config(workdir / "gateway.yaml", model_endpoint)
    with MomentoStandIn(caches=(MOMENTO_CACHE,)) as momento:
        overrides = {
            "GATEWAY_CONFIG_PATH": str(config),
            "GATEWAY_STORE": "aws",
            "MOMENTO_LOCAL_ENDPOINT": momento.endpoint,
            "MOMENTO_CACHE_NAME": MOMENTO_CACHE,
            "PROVIDER_KEYS_SECRET_ARN": "",  # the local model needs no provider key
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "LlmGatewayE2E",
        }
        with local_aws(workdir, overrides) as aws:
            resources = deploy_assembly(aws, synthesized.outdir, STACK)
            front = RestFront(
                aws,
                state_machine_arn=resource_of(template, resources, "AWS::StepFunctions::StateMachine", "Workflow"),
                authorizer_function=resource_of(template, resources, "AWS::Lambda::Function", "authorizer"),
                request_schema=request_schema(template),
            )
            with serve(front.app()) as url:
                yield Deployed(aws, front, url + "/v1", resources)


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
