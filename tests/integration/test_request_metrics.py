"""Every request's own metrics on `/metrics` (admin key), read back with `prometheus_client`'s
parser after real traffic over HTTP: the histograms `llm_gateway_request_duration_seconds` and
`llm_gateway_time_to_first_token_seconds` labelled tenant, route, model and outcome, requests,
errors by code, tokens by kind and cost."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llm_gateway.config import parse_config
from llm_gateway.http.app import create_app
from llm_gateway.observability import InMemoryMetrics
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, BASE_CONFIG, GLOBEX_KEY, hash_key, make_deps
from tests.support.servers import serve

ADMIN_KEY = "sk-test-metrics-admin"


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    config = parse_config(f"admin_api_keys: [{{id: ops, sha256: {hash_key(ADMIN_KEY)}}}]\n" + BASE_CONFIG)
    runner = InProcessRunner(make_deps(config, metrics=InMemoryMetrics()))
    with serve(create_app(runner)) as url:
        yield url


def scrape(base_url: str) -> dict[str, Any]:
    answer = httpx.get(base_url + "/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert answer.status_code == 200
    return {family.name: family for family in text_string_to_metric_families(answer.text)}


def samples(family: Any, suffix: str, **labels: str) -> list[Any]:
    return [
        s for s in family.samples if s.name.endswith(suffix) and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def test_request_histograms_count_every_answer_by_tenant_route_model_and_outcome(base_url: str) -> None:
    acme = openai.OpenAI(base_url=base_url + "/v1", api_key=ACME_KEY, max_retries=0)
    ask = [{"role": "user", "content": "Which metrics does the gateway keep?"}]
    acme.chat.completions.create(model="default", messages=ask)  # type: ignore[arg-type]
    acme.chat.completions.create(model="default", messages=ask)  # type: ignore[arg-type]  # exact hit
    streamed = acme.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Stream it."}],  # type: ignore[arg-type]
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    globex = openai.OpenAI(base_url=base_url + "/v1", api_key=GLOBEX_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError):  # globex's input blocklist
        globex.chat.completions.create(model="default", messages=[{"role": "user", "content": "the codename"}])  # type: ignore[arg-type]

    families = scrape(base_url)
    duration = families["llm_gateway_request_duration_seconds"]
    ttft = families["llm_gateway_time_to_first_token_seconds"]
    assert duration.type == ttft.type == "histogram"
    ok = {"tenant": "acme", "route": "default", "model": "echo", "outcome": "ok"}
    assert [s.value for s in samples(duration, "_count", **ok)] == [2]  # the whole answer and the stream
    assert [s.value for s in samples(duration, "_count", **{**ok, "outcome": "cache_hit"})] == [1]
    assert [s.value for s in samples(ttft, "_count", **ok)] == [2]
    # the first token never comes after the end of the answer
    assert samples(ttft, "_sum", **ok)[0].value <= samples(duration, "_sum", **ok)[0].value
    infinite = samples(duration, "_bucket", **ok, le="+Inf")
    assert [s.value for s in infinite] == [2]
    blocked = {"tenant": "globex", "model": "_none", "outcome": "blocked"}  # refused before a model was chosen
    assert [s.value for s in samples(duration, "_count", **blocked)] == [1]
    assert not samples(ttft, "_count", tenant="globex")  # no answer, no first token
    requests = {(s.labels["tenant"], s.labels["outcome"]): s.value for s in families["llm_gateway_requests"].samples}
    assert requests == {("acme", "ok"): 2, ("acme", "cache_hit"): 1, ("globex", "blocked"): 1}
    tokens = {s.labels["kind"]: s.value for s in samples(families["llm_gateway_tokens"], "_total", tenant="acme")}
    assert tokens["input"] > 0 and tokens["output"] > 0
    assert samples(families["llm_gateway_cost_usd"], "_total", tenant="acme", model="echo")[0].value > 0
    output = families["llm_gateway_output_tokens"]
    assert output.type == "histogram" and samples(output, "_count", tenant="acme")[0].value == 2


def test_errors_are_counted_by_code(base_url: str) -> None:
    wrong = openai.OpenAI(base_url=base_url + "/v1", api_key="sk-nobody", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}])  # type: ignore[arg-type]
    families = scrape(base_url)
    errors = {s.labels["code"]: s.value for s in samples(families["llm_gateway_errors"], "_total", tenant="_none")}
    assert errors.get("invalid_api_key", 0) >= 1
    failed = samples(families["llm_gateway_request_duration_seconds"], "_count", tenant="_none", outcome="error")
    assert failed and failed[0].value >= 1


def test_metrics_without_the_admin_key_is_401(base_url: str) -> None:
    assert httpx.get(base_url + "/metrics").status_code == 401
    assert httpx.get(base_url + "/metrics", headers={"authorization": f"Bearer {ACME_KEY}"}).status_code == 401
