"""Request traces and feedback over HTTP: `GET /v1/traces/{request_id}` names each step the request
went through with what it decided (the tenant's own requests only); `POST /v1/feedback` keeps a
verdict with the trace, moves the satisfaction metric and queues a negative one for review; another
tenant's request is a 404 for both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from llm_gateway.adapters.local.review import SqliteReviewQueue
from llm_gateway.adapters.local.traces import SqliteTraceStore
from llm_gateway.cli.main import main
from llm_gateway.config import parse_config
from llm_gateway.http.app import create_app
from llm_gateway.observability import InMemoryMetrics
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, GLOBEX_KEY, hash_key, make_deps
from tests.support.servers import serve

CONFIG = f"""
models:
  echo: {{provider: echo, price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}}}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes: {{default: {{model: echo}}}}
    guards: {{pii: {{enabled: true, default: mask}}}}
    traces: {{store_content: true}}
  globex:
    api_keys: [{{id: k1, sha256: {hash_key(GLOBEX_KEY)}}}]
    routes: {{default: {{model: echo}}}}
    input_blocklist: {{keywords: [codename]}}
"""


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("traces") / "gateway.db"


@pytest.fixture(scope="module")
def gateway(db: Path) -> Iterator[tuple[str, InProcessRunner]]:
    deps = make_deps(
        parse_config(CONFIG),
        db=db,
        traces=SqliteTraceStore(db),
        review=SqliteReviewQueue(db),
        metrics=InMemoryMetrics(),
    )
    runner = InProcessRunner(deps)
    with serve(create_app(runner)) as url:
        yield url, runner


def ask(gateway: tuple[str, InProcessRunner], key: str, content: str) -> str:
    """A chat completion's request id."""
    client = openai.OpenAI(base_url=gateway[0] + "/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="default",
        messages=[{"role": "user", "content": content}],  # type: ignore[arg-type]
    )
    return raw.headers["x-request-id"]


def get_trace(gateway: tuple[str, InProcessRunner], request_id: str, key: str) -> httpx.Response:
    return httpx.get(f"{gateway[0]}/v1/traces/{request_id}", headers={"authorization": f"Bearer {key}"})


def feedback(gateway: tuple[str, InProcessRunner], key: str, **body: object) -> httpx.Response:
    return httpx.post(f"{gateway[0]}/v1/feedback", json=body, headers={"authorization": f"Bearer {key}"})


def test_a_trace_names_each_step_with_what_it_decided_for_its_tenant_only(
    gateway: tuple[str, InProcessRunner],
) -> None:
    request_id = ask(gateway, ACME_KEY, "Write to ana@example.com about the invoice.")
    answer = get_trace(gateway, request_id, ACME_KEY)
    assert answer.status_code == 200
    trace = answer.json()
    assert [s["name"] for s in trace["steps"]] == ["guard", "cache", "router", "invoke", "moderate", "finish"]
    steps = {s["name"]: s for s in trace["steps"]}
    assert steps["guard"]["ms"] is not None and steps["guard"]["detail"]["outcome"] == "allowed"
    assert {"layer": "pii", "action": "mask"}.items() <= steps["guard"]["detail"]["decisions"][0].items()
    assert steps["cache"]["detail"]["status"] == "miss" and steps["router"]["detail"]["route"] == "default"
    assert steps["invoke"]["detail"]["model"] == "echo" and steps["invoke"]["detail"]["attempts"][0]["outcome"] == "ok"
    assert trace["outcome"] == "ok" and trace["cost_usd"] > 0 and trace["prompt_tokens"] > 0
    # acme keeps content: the prompt as the model saw it, the answer, both masked
    assert trace["content"]["messages"][-1]["content"] == "Write to [EMAIL_1] about the invoice."
    assert "ana@example.com" not in answer.text

    assert get_trace(gateway, request_id, GLOBEX_KEY).status_code == 404  # another tenant's request
    assert get_trace(gateway, "0" * 32, ACME_KEY).status_code == 404
    assert get_trace(gateway, request_id, "sk-nobody").status_code == 401


def test_a_refused_request_is_traced_to_its_refusal_without_content(gateway: tuple[str, InProcessRunner]) -> None:
    client = openai.OpenAI(base_url=gateway[0] + "/v1", api_key=GLOBEX_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": "the codename is"}])  # type: ignore[arg-type]
    request_id = refused.value.response.headers["x-request-id"]
    trace = get_trace(gateway, request_id, GLOBEX_KEY).json()
    assert [s["name"] for s in trace["steps"]] == ["guard", "failed"]
    assert trace["outcome"] == "blocked" and trace["steps"][-1]["detail"]["status"] == 400
    assert trace["content"] is None  # globex does not keep prompts and answers


def test_feedback_is_kept_for_the_requests_tenant_only_and_moves_satisfaction(
    gateway: tuple[str, InProcessRunner],
) -> None:
    request_id = ask(gateway, ACME_KEY, "How do I reset my password?")
    runner = gateway[1]
    assert feedback(gateway, GLOBEX_KEY, request_id=request_id, score=1).status_code == 404
    assert feedback(gateway, ACME_KEY, request_id="f" * 32, score=1).status_code == 404
    bad = feedback(gateway, ACME_KEY, request_id=request_id, score=0)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "score"

    down = feedback(gateway, ACME_KEY, request_id=request_id, score=-1, comment="Wrong; mail me at bo@example.org")
    assert down.status_code == 200 and down.json()["satisfaction"] == 0.0
    rated = feedback(gateway, ACME_KEY, request_id=request_id, score=5, kind="rating")
    assert rated.status_code == 200 and rated.json()["satisfaction"] == 1.0

    kept = get_trace(gateway, request_id, ACME_KEY).json()["feedback"]
    assert [(f["kind"], f["score"]) for f in kept] == [("thumbs", -1), ("rating", 5)]
    assert kept[0]["comment"] == "Wrong; mail me at [EMAIL_1]"
    metrics = runner.deps.metrics
    assert isinstance(metrics, InMemoryMetrics)
    score = metrics.histograms[("feedback_score", (("tenant", "acme"),))]
    assert (score.count, score.sum) == (2, 1.0)
    assert metrics.counters[("feedback", (("kind", "thumbs"), ("tenant", "acme"), ("verdict", "negative")))] == 1
    assert runner.deps.review is not None
    queued = [i for i in runner.deps.review.items(tenant="acme") if i.layer == "feedback"]
    assert [i.request_id for i in queued] == [request_id]  # the thumbs down, for a person to look at


def test_the_operator_reads_a_trace_with_the_cli(
    gateway: tuple[str, InProcessRunner], db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request_id = ask(gateway, ACME_KEY, "What are your opening hours?")
    traces = gateway[1].deps.traces
    assert isinstance(traces, SqliteTraceStore)
    traces.flush()  # what serve's writer does within a quarter second; the CLI reads the file
    config = tmp_path / "gateway.yaml"
    config.write_text(f"storage_path: {db}\n" + CONFIG)
    assert main(["trace", request_id, "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"request {request_id}  tenant acme")
    assert [line.split()[0] for line in lines[2:]] == ["guard", "cache", "router", "invoke", "moderate", "finish"]
    assert main(["trace", request_id, "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["request_id"] == request_id
    assert main(["trace", "0" * 32, "--config", str(config)]) == 2  # no such request
