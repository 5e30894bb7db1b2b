"""The distillation workflow's two functions on moto's DynamoDB and S3, with the real embedding model:
`distill_collect` turns the opted-in tenant's traces into the collection under
distill/<tenant>/<run_id>/data/ (the same splits as `distill collect`, another tenant's traffic
absent, the test split also as the model endpoint's requests) or refuses with the reason;
`distill_evaluate` scores a batch transform's answers against the teacher's and writes the report
with the quality ratio and whether the tenant's bar is met. (tests/e2e/test_local_aws.py runs
them deployed, in the workflow.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from llm_gateway.adapters.aws.traces import DynamoTraceStore, trace_key_schema
from llm_gateway.aws.distill_collect import collect_run
from llm_gateway.aws.distill_evaluate import EvaluateInput, evaluate_run
from llm_gateway.aws.distill_run import DistillRunInvalid, RunFiles, RunStart, job_name
from llm_gateway.config import GatewayConfig, load_config
from llm_gateway.distill.collect import CollectionRefused
from llm_gateway.endpoint_contract import InvocationRequest, InvocationResponse
from llm_gateway.semantic.embeddings import default_embedder
from tests.support.distill_traces import PRODUCTS, SYSTEM, config_yaml, question, teacher_answer, ticket_trace
from tests.support.moto_server import MotoServer, moto_server

NOW = 1_790_000_000.0
BUCKET = "deployment-bucket"
TICKETS = 20  # 16 train, 2 validation, 2 test


@dataclass
class Deployment:
    moto: MotoServer
    traces: DynamoTraceStore
    config: GatewayConfig

    @property
    def s3(self) -> Any:
        return self.moto.client("s3")

    def collect(self, tenant: str = "acme", run_id: str = "run-1", **start: Any) -> dict[str, Any]:
        run = RunStart(tenant=tenant, route="default", since=start.pop("since", NOW - 86_400), run_id=run_id, **start)
        embed = default_embedder().embed
        return collect_run(run, config=self.config, traces=self.traces, embed=embed, s3=self.s3, bucket=BUCKET, now=NOW)

    def read(self, key: str) -> str:
        return str(self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode())

    def objects(self) -> list[str]:
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("distill-aws")
    (folder / "gateway.yaml").write_text(config_yaml())
    with moto_server() as moto:
        dynamodb = moto.client("dynamodb")
        dynamodb.create_table(TableName="traces", BillingMode="PAY_PER_REQUEST", **trace_key_schema())
        moto.client("s3").create_bucket(Bucket=BUCKET)
        traces = DynamoTraceStore("traces", dynamodb)
        for i in range(TICKETS):
            traces.put(ticket_trace(i, ts=NOW - 3600 + 60 * i))
            traces.put(ticket_trace(100 + i, ts=NOW - 3600 + 60 * i, tenant="globex"))
        traces.put(ticket_trace(1, ts=NOW - 30, tenant="initech"))
        yield Deployment(moto, traces, load_config(str(folder / "gateway.yaml")))


def test_the_collection_lands_under_the_runs_data_prefix_split_by_time(deployment: Deployment) -> None:
    found = deployment.collect()

    files = RunFiles(BUCKET, "acme", "run-1")
    assert found["examples"] == {"train": 16, "validation": 2, "test": 2}
    assert found["data"] == f"s3://{BUCKET}/distill/acme/run-1/data/"
    assert found["model"] == f"s3://{BUCKET}/distill/acme/run-1/model/"
    assert found["transform"] == f"s3://{BUCKET}/distill/acme/run-1/eval/transform/"
    assert found["invocations"] == f"s3://{BUCKET}/distill/acme/run-1/data/test-invocations.jsonl"
    assert found["job_name"] == job_name("acme", "run-1") and found["job_name"].startswith("distill-acme-run-1-")
    written = {k.removeprefix(files.data) for k in deployment.objects() if k.startswith(files.data)}
    assert written == {"train.jsonl", "validation.jsonl", "test.jsonl", "card.json", "test-invocations.jsonl"}
    # the oldest tickets train, the newest test; each line a conversation ending with the teacher's answer
    splits = {
        s: [json.loads(x) for x in deployment.read(f"{files.data}{s}.jsonl").splitlines()] for s in found["examples"]
    }
    assert [e["messages"][1]["content"] for e in splits["train"]] == [question(i) for i in range(16)]
    assert [e["messages"][-1] for e in splits["test"]] == [
        {"role": "assistant", "content": teacher_answer(i)} for i in (18, 19)
    ]
    everything = "".join(deployment.read(k) for k in deployment.objects())
    assert "Ticket 100" not in everything and "Ticket 1:" in everything  # globex's traffic is not there
    card = json.loads(deployment.read(files.data + "card.json"))
    assert (card["tenant"], card["route"], card["run_id"], card["teachers"]) == (
        "acme",
        "default",
        "run-1",
        ["teacher"],
    )
    assert card["examples"] == found["examples"] and card["traces_read"] == TICKETS
    # the test split as the endpoint's requests, greedy, in the test split's order
    requests = [
        InvocationRequest.model_validate_json(x)
        for x in deployment.read(files.data + "test-invocations.jsonl").splitlines()
    ]
    assert [[m.content for m in r.messages] for r in requests] == [[SYSTEM, question(i)] for i in (18, 19)]
    assert all(r.temperature == 0 and r.max_tokens == 64 and not r.stream for r in requests)


@pytest.mark.parametrize(
    ("tenant", "start", "reason"),
    [
        ("globex", {}, "tenant globex has not opted in to training on its traffic"),
        ("initech", {}, "tenant initech keeps no content in its traces"),
        ("umbrella", {}, "tenant umbrella is not in this configuration"),
        ("acme", {"since": NOW - 150}, "too few examples of tenant acme on route default"),
    ],
    ids=["not-opted-in", "no-content", "unknown-tenant", "too-few"],
)
def test_a_refused_collection_says_why_and_writes_nothing(
    deployment: Deployment, tenant: str, start: dict[str, Any], reason: str
) -> None:
    before = deployment.objects()
    with pytest.raises(CollectionRefused, match=reason):
        deployment.collect(tenant, run_id="refused", **start)
    assert deployment.objects() == before


def test_a_window_is_epoch_seconds_or_what_distill_collect_takes(deployment: Deployment) -> None:
    assert deployment.collect(run_id="by-duration", since="2h")["examples"]["train"] == 16
    with pytest.raises(DistillRunInvalid, match="not an ISO date or date-time: 'yesterday'"):
        deployment.collect(run_id="bad-since", since="yesterday")
    with pytest.raises(DistillRunInvalid, match="is not before until"):
        deployment.collect(run_id="empty-window", since=NOW - 10, until=NOW - 20)


def test_the_split_is_the_runs_own_and_shares_that_are_not_three_are_refused(deployment: Deployment) -> None:
    assert deployment.collect(run_id="held-out", split="50,20,30")["examples"] == {
        "train": 10,
        "validation": 4,
        "test": 6,
    }
    card = json.loads(deployment.read(RunFiles(BUCKET, "acme", "held-out").data + "card.json"))
    assert card["split"].startswith("by time: the oldest 50 % train")
    for bad in ("80,20", "0,50,50", "x" * 40):
        with pytest.raises(ValueError, match="split"):
            deployment.collect(run_id="bad-split", split=bad)
    assert not [k for k in deployment.objects() if "/bad-split/" in k]


def transform_output(deployment: Deployment, run_id: str, answers: list[str]) -> None:
    """What the batch transform writes: one endpoint answer a line, in the input's order."""
    files = RunFiles(BUCKET, "acme", run_id)
    lines = [
        InvocationResponse(text=a, finish_reason="stop", usage={"prompt_tokens": 30, "completion_tokens": 8}, model="m")
        for a in answers
    ]
    body = "".join(line.model_dump_json() + "\n" for line in lines)
    deployment.s3.put_object(Bucket=BUCKET, Key=files.transform_output, Body=body.encode())


def evaluate(deployment: Deployment, run_id: str) -> dict[str, Any]:
    run = EvaluateInput(tenant="acme", route="default", run_id=run_id, model_data="s3://b/model.tar.gz")
    return evaluate_run(run, config=deployment.config, s3=deployment.s3, bucket=BUCKET)


def test_a_student_that_answers_as_the_teacher_meets_the_bar_and_the_report_says_so(deployment: Deployment) -> None:
    deployment.collect(run_id="good")
    transform_output(deployment, "good", [teacher_answer(18), '```json\n{"product": "' + PRODUCTS[19 % 10] + '"}\n```'])

    found = evaluate(deployment, "good")

    assert (found["quality_ratio"], found["bar"], found["meets_bar"], found["passed"]) == (1.0, 0.9, True, 2)
    report = json.loads(deployment.read("distill/acme/good/eval/report.json"))
    assert report["meets_bar"] is True and report["teacher_pass_rate"] == 1.0 and report["cases"] == 2
    assert report["model_data"] == "s3://b/model.tar.gz"
    # what the model package carries: strings only (SageMaker's customer metadata)
    assert found["metadata"]["quality_ratio"] == "1.0" and found["metadata"]["bar"] == "0.9"
    assert found["metadata"]["report"] == f"s3://{BUCKET}/distill/acme/good/eval/report.json"
    assert all(isinstance(v, str) for v in found["metadata"].values())


def test_a_student_below_the_bar_is_reported_and_not_fit_to_register(deployment: Deployment) -> None:
    deployment.collect(run_id="poor")
    transform_output(deployment, "poor", [teacher_answer(18), '{"product": "toaster"}'])
    found = evaluate(deployment, "poor")
    assert (found["quality_ratio"], found["meets_bar"], found["passed"]) == (0.5, False, 1)
    report = json.loads(deployment.read("distill/acme/poor/eval/report.json"))
    assert [r["passed"] for r in report["results"]] == [True, False]


def test_a_transform_that_answered_another_number_of_lines_fails_the_evaluation(deployment: Deployment) -> None:
    deployment.collect(run_id="short")
    transform_output(deployment, "short", [teacher_answer(18)])
    with pytest.raises(DistillRunInvalid, match="answered 1 lines for 2 test cases"):
        evaluate(deployment, "short")


def test_a_line_that_is_not_an_endpoint_answer_fails_its_case(deployment: Deployment) -> None:
    deployment.collect(run_id="garbled")
    transform_output(deployment, "garbled", [teacher_answer(18), teacher_answer(19)])
    key = RunFiles(BUCKET, "acme", "garbled").transform_output
    first, _ = deployment.read(key).splitlines()
    deployment.s3.put_object(Bucket=BUCKET, Key=key, Body=(first + "\n<html>502</html>\n").encode())
    found = evaluate(deployment, "garbled")
    assert (found["passed"], found["meets_bar"]) == (1, False)
