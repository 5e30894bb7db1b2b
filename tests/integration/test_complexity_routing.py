"""The complexity router through the gateway chain, against a wire-compatible OpenAI server
serving a small and a large model: easy requests reach the small one, hard ones the large one,
metadata pins win, a failing small model falls back upwards, the caches key answers by the model
that will answer, and a scorer that cannot run sends the request to the large model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.adapters.local.semantic import LocalSemanticIndex
from llm_gateway.config import parse_config
from llm_gateway.contracts import BREVITY_INSTRUCTION, ChatMessage
from llm_gateway.http.app import _decision_headers
from llm_gateway.observability import InMemoryMetrics
from llm_gateway.routing import complexity
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, hash_key, make_deps, make_state, store_of
from tests.support.fake_providers import FakeServer
from tests.support.servers import free_port

EASY = "Hi! What time do you open on Saturday?"
HARD = (
    "Find the number of ordered pairs (x, y) of integers with -100 <= x, y <= 100 such that "
    "12x^2 - xy - 6y^2 = 0. Explain each step of the derivation and prove the count is complete."
)


def _config(url: str, small_url: str | None = None, route: str = "") -> Any:
    route = (
        route
        or "{complexity: {models: [small, large], small_share: 0.6}, pins: [{metadata: {plan: gold}, model: large}]}"
    )
    return parse_config(
        f"""
models:
  small: {{provider: openai, provider_model: gpt-small, base_url: {small_url or url}, api_key_env: FAKE_OPENAI_KEY,
          price: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}}}
  large: {{provider: openai, provider_model: gpt-large, base_url: {url}, api_key_env: FAKE_OPENAI_KEY,
          price: {{input_per_mtok: 3.0, output_per_mtok: 15.0}}}}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes: {{default: {route}}}
    semantic_cache: {{enabled: true}}
"""
    )


def _called(checker: FakeServer) -> list[str]:
    return [r.body["model"] for r in checker.script.calls("/v1/chat/completions")]


def test_easy_requests_go_small_hard_ones_large_and_pins_win(checker: FakeServer, tmp_path: Path) -> None:
    metrics = InMemoryMetrics()
    deps = make_deps(_config(checker.base_url), db=tmp_path / "g.db", metrics=metrics)
    runner = InProcessRunner(deps)
    easy = runner.run(make_state(EASY))
    hard = runner.run(make_state(HARD))
    pinned = runner.run(make_state(EASY + " (gold)", metadata={"plan": "gold"}))
    assert _called(checker) == ["gpt-small", "gpt-large", "gpt-large"]
    assert easy.router is not None and hard.router is not None and pinned.router is not None
    assert easy.router.candidates == ["small", "large"] and hard.router.candidates == ["large"]
    assert easy.router.complexity is not None and hard.router.complexity is not None
    assert easy.router.complexity < hard.router.complexity
    assert pinned.router.pinned and pinned.router.complexity is None
    assert _decision_headers(easy, "small")["x-gateway-complexity"] == f"{easy.router.complexity:.4f}"
    assert "x-gateway-complexity" not in _decision_headers(pinned, "large")
    choices = {
        dict(d)["reason"] + ":" + dict(d)["model"]: v for (n, d), v in metrics.counters.items() if n == "route_choice"
    }
    assert choices == {"complexity:small": 1, "complexity:large": 1, "pinned:large": 1}
    usage = store_of(deps)._db.execute("SELECT model FROM usage ORDER BY rowid").fetchall()
    assert [row[0] for row in usage] == ["small", "large", "large"]


def test_the_route_is_planned_once_a_request_and_carried_in_the_state(
    checker: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard plans the route (the complexity score); the cache keys by it and the router
    starts from it without scoring again, so a Lambda-per-step chain scores in one function."""
    scored: list[str] = []
    score = complexity.ComplexityScorer.score

    def counted(self: complexity.ComplexityScorer, request: Any) -> float:
        scored.append(request.messages[-1].text())
        return score(self, request)

    monkeypatch.setattr(complexity.ComplexityScorer, "score", counted)
    runner = InProcessRunner(make_deps(_config(checker.base_url)))
    easy, hard = runner.run(make_state(EASY)), runner.run(make_state(HARD))
    assert scored == [EASY, HARD]
    for state in (easy, hard):
        assert state.guard is not None and state.guard.route is not None and state.router is not None
        assert state.router.complexity == state.guard.route.complexity is not None
        assert state.router.candidates == state.guard.route.candidates


def test_a_failing_small_model_falls_back_to_the_larger_one(checker: FakeServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    runner = InProcessRunner(make_deps(_config(checker.base_url, small_url=dead)))
    state = runner.run(make_state(EASY))
    assert state.invoke is not None and state.invoke.model == "large"
    assert [a.model for a in state.invoke.attempts][-1] == "large" and state.invoke.attempts[0].model == "small"


def test_cached_answers_are_keyed_by_the_model_that_answered(
    checker: FakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "g.db"
    semantic = LocalSemanticIndex(str(db))
    runner = InProcessRunner(make_deps(_config(checker.base_url), db=db, semantic=semantic))
    with caplog.at_level(logging.WARNING):
        first = runner.run(make_state(EASY))
        again = runner.run(make_state(EASY))
        hard = runner.run(make_state(HARD))
    assert first.invoke is not None and first.invoke.model == "small"
    assert again.cache is not None and again.cache.status == "exact" and again.invoke is None
    assert hard.cache is not None and hard.cache.status == "miss"
    assert _called(checker) == ["gpt-small", "gpt-large"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # the semantic index took both
    stored = semantic._db.execute("SELECT model FROM semantic_index ORDER BY rowid").fetchall()
    assert [row[0] for row in stored] == ["small", "large"]
    semantic.close()


def test_a_scorer_that_cannot_run_sends_requests_to_the_large_model(
    checker: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> complexity.ComplexityScorer:
        raise RuntimeError("complexity.json is missing")

    monkeypatch.setattr(complexity, "default_scorer", broken)
    metrics = InMemoryMetrics()
    state = InProcessRunner(make_deps(_config(checker.base_url), metrics=metrics)).run(make_state(EASY))
    assert state.invoke is not None and state.invoke.model == "large" and state.error is None
    assert state.router is not None and state.router.complexity is None
    assert any(name == "route_complexity_errors" for name, _ in metrics.counters)


def test_the_cost_knob_routes_like_the_share_it_stands_for(checker: FakeServer) -> None:
    # 500 + 200 tokens: small 0.000195 $, large 0.0045 $; a 60 % small share costs 1.917 $ per 1k.
    by_share = InProcessRunner(make_deps(_config(checker.base_url)))
    by_cost = InProcessRunner(
        make_deps(_config(checker.base_url, route="{complexity: {models: [small, large], max_cost_per_1k_usd: 1.917}}"))
    )
    for text in (EASY, HARD, "Write a haiku about the sea.", "Is it raining in Paris today?"):
        a, b = by_share.run(make_state(text)), by_cost.run(make_state(text))
        assert a.router is not None and b.router is not None
        assert a.router.candidates == b.router.candidates


def test_cache_keys_see_the_brevity_instruction_the_router_will_add(
    checker: FakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "g.db"
    semantic = LocalSemanticIndex(str(db))
    runner = InProcessRunner(
        make_deps(_config(checker.base_url, route="{model: small, brief_simple: true}"), db=db, semantic=semantic)
    )
    system = {"role": "system", "content": "You are the store's assistant."}
    long_question = "Please compare these two delivery options for me in detail. " * 6
    with caplog.at_level(logging.WARNING):
        for text in (EASY, long_question):
            state = make_state(text)
            state.request.messages.insert(0, ChatMessage.model_validate(system))
            runner.run(state)
    bodies = [r.body for r in checker.script.calls("/v1/chat/completions")]
    assert [BREVITY_INSTRUCTION in str(b["messages"]) for b in bodies] == [True, False]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    scopes = semantic._db.execute("SELECT DISTINCT scope FROM semantic_index").fetchall()
    assert len(scopes) == 2  # a brief answer is never reused for a request that gets none
    semantic.close()


def test_the_router_and_the_semantic_cache_embed_a_question_once(
    checker: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm_gateway.semantic.embeddings import default_embedder, normalize_text

    embedder = default_embedder()
    embedded: list[list[str]] = []
    real = embedder.embed

    def counting(texts: list[str]) -> Any:
        embedded.append(list(texts))
        return real(texts)

    monkeypatch.setattr(embedder, "embed", counting)
    db = tmp_path / "g.db"
    semantic = LocalSemanticIndex(str(db))
    question = "What is the warranty on a refurbished laptop bought last spring?"
    state = InProcessRunner(make_deps(_config(checker.base_url), db=db, semantic=semantic)).run(make_state(question))
    assert state.router is not None and state.router.complexity is not None  # both steps used it
    assert state.cache is not None and state.cache.query_vector is not None
    # once, in whatever form the embedder keys it (the memo keys normalised text)
    assert sum(1 for batch in embedded if [normalize_text(t) for t in batch] == [normalize_text(question)]) == 1
    semantic.close()
