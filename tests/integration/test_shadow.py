"""Shadow traffic through the HTTP API, fake models behind a fake OpenAI upstream: a route copies
its answered requests to a shadow model after the user's answer; the user never sees the shadow's
answer or its failures and never waits for it; the copy is what the live model got (PII masked);
nothing of the shadow is cached; its spend stops at the route's daily budget; the pairs are scored
and `llm-gateway shadow report` sums them up."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from llm_gateway.cli.main import main
from llm_gateway.config import load_config
from llm_gateway.experiments.shadow import ShadowRunner
from llm_gateway.http.app import create_app
from llm_gateway.observability import InMemoryMetrics
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, make_deps
from tests.support.fake_providers import Behaviour, FakeServer, Script, delay, fake_server, ok, status
from tests.support.model_configs import acme_config
from tests.support.servers import serve

LIVE = "Paris is the capital of France."


def answer(body: dict[str, Any]) -> Behaviour:
    question = str(body["messages"][-1]["content"])
    if body["model"] == "gpt-live":
        return ok(LIVE, prompt_tokens=20, completion_tokens=8)
    if "fail" in question:
        return status(500)
    if "slow" in question:
        return delay(1.0, ok("The capital of France is Paris.", prompt_tokens=20, completion_tokens=8))
    return ok("The capital of France is Paris.", prompt_tokens=20, completion_tokens=8)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    with fake_server("openai", Script(responder=answer)) as server:  # type: ignore[arg-type]
        yield server


def gateway(upstream: FakeServer, tmp_path: Path, budget: float) -> tuple[Path, dict[str, Any]]:
    shadow = f"{{model: gpt-live, shadow: {{model: gpt-shadow, sample: 1.0, budget_usd_per_day: {budget}}}}}"
    pii = "    guards: {pii: {enabled: true, default: mask}}\n"
    path = acme_config(tmp_path, upstream.base_url, ["gpt-live", "gpt-shadow"], shadow, pii)
    db = tmp_path / "gateway.db"
    parts = {"shadows": ShadowRunner(db), "metrics": InMemoryMetrics()}
    return path, {**parts, "deps": make_deps(load_config(str(path)), db=db, **parts)}


@pytest.fixture
def running(upstream: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-fake")
    upstream.script.reset()
    path, parts = gateway(upstream, tmp_path, budget=1.0)
    with serve(create_app(InProcessRunner(parts["deps"]))) as url:
        yield {"url": url, "config": path, **parts}
    parts["shadows"].close()


def ask(url: str, content: str) -> openai.types.chat.ChatCompletion:
    client = openai.OpenAI(base_url=url + "/v1", api_key=ACME_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": content}]
    )
    assert raw.headers["x-gateway-model"] == "gpt-live"
    return raw.parse()


def test_shadow_copies_never_reach_the_user_and_are_kept_as_scored_pairs(
    running: dict[str, Any], upstream: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    questions = [f"Capital of France, question {i}?" for i in range(6)] + ["Please fail now.", "Mail ana@example.com"]
    for question in questions:
        assert ask(running["url"], question).choices[0].message.content == LIVE  # never the shadow's answer
    assert running["shadows"].drain()
    assert all(p["similarity"] is None for p in running["shadows"].pairs("acme"))  # scored later, not by serve
    assert running["shadows"].score_pending() == len(questions) - 1
    pairs = running["shadows"].pairs("acme")
    assert len(pairs) == len(questions)
    failed = [p for p in pairs if p["outcome"] == "error"]
    assert len(failed) == 1 and failed[0]["shadow_answer"] is None  # the user got the live answer all the same
    answered = [p for p in pairs if p["outcome"] == "ok"]
    assert all(not p["same"] and p["similarity"] > 0.8 for p in answered)  # a paraphrase of the live answer
    # the shadow got the request exactly as the live model did: PII masked
    shadowed = [r.body for r in upstream.script.requests if r.body and r.body["model"] == "gpt-shadow"]
    assert any("[EMAIL_1]" in json.dumps(b) for b in shadowed)
    assert not any("ana@example.com" in json.dumps(b) for b in shadowed)
    # nothing of the shadow is cached: the same question again is the live answer from the cache
    again = ask(running["url"], questions[0])
    assert again.choices[0].message.content == LIVE
    capsys.readouterr()
    assert main(["shadow", "report", "--tenant", "acme", "--json", "--config", str(running["config"])]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pairs"] == len(questions) and report["shadow_failed"] == 1
    assert report["agreement"] == 1.0 and report["models"] == ["gpt-live -> gpt-shadow"]
    assert report["cost_usd"]["shadow"] > 0 and report["latency_ms"]["shadow"]["p50"] > 0


def test_the_user_never_waits_for_the_shadow(running: dict[str, Any]) -> None:
    """The shadow model takes a second; the answer comes back while its copy is still on its way."""
    assert ask(running["url"], "A slow one, please?").choices[0].message.content == LIVE
    assert running["shadows"].pairs("acme") == []  # the shadow call has not come back yet
    assert running["shadows"].drain()
    assert [p["outcome"] for p in running["shadows"].pairs("acme")] == ["ok"]


def test_shadow_spend_stops_at_the_routes_daily_budget(
    upstream: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-fake")
    _, parts = gateway(upstream, tmp_path, budget=0.00002)  # one shadow call costs 0.000036
    with serve(create_app(InProcessRunner(parts["deps"]))) as url:
        for i in range(4):
            ask(url, f"Capital of France, take {i}?")
        assert parts["shadows"].drain()
    assert len(parts["shadows"].pairs("acme")) == 1
    assert (
        'llm_gateway_shadow_dropped_total{reason="budget",route="default",tenant="acme"} 3.0'
        in parts["metrics"].prometheus()
    )
    parts["shadows"].close()


def test_a_shadow_of_an_unknown_model_is_refused_by_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "models:\n  live: {provider: echo}\ntenants:\n  acme:\n"
        "    routes: {default: {model: live, shadow: {model: nope, sample: 0.5}}}\n"
    )
    assert main(["check-config", str(path)]) != 0
    assert "tenants.acme.routes.default.shadow: unknown model 'nope'" in capsys.readouterr().err
