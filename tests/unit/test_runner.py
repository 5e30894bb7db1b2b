"""The local runner walks pipeline.STEPS with its exits, and finish accounts for every request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llm_gateway.adapters.local.memory import MemoryRateLimiter
from llm_gateway.config import ModelConfig, hash_key
from llm_gateway.contracts import ChatCompletionRequest, GatewayState
from llm_gateway.deps import Deps
from llm_gateway.errors import AllModelsFailed, AuthenticationFailed, ModelNotFound, ProviderUnavailable, RateLimited
from llm_gateway.finish import final_response
from llm_gateway.pipeline import STEPS, Step
from llm_gateway.providers.base import ProviderReply, StreamDelta
from llm_gateway.providers.echo import EchoProvider
from llm_gateway.runner import InProcessRunner
from tests.conftest import GLOBEX_KEY, RecordingSleep, make_config, make_deps, make_state, store_of


class CountingEcho(EchoProvider):
    """The echo provider, counting calls; can be told to fail for some models."""

    def __init__(self, failing: frozenset[str] = frozenset()) -> None:
        self.calls: list[str] = []
        self.failing = failing

    def complete(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> ProviderReply:
        self.calls.append(model_id)
        if model_id in self.failing:
            raise ProviderUnavailable(f"model '{model_id}' failed (HTTP 500)")
        return super().complete(request, model_id, model)

    def stream(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> Iterator[StreamDelta]:
        self.calls.append(model_id)
        return super().stream(request, model_id, model)


def runner_with(provider: CountingEcho, deps: Deps | None = None) -> InProcessRunner:
    deps = deps or make_deps()
    deps.providers.register("echo", lambda: provider)
    return InProcessRunner(deps)


def audit_outcomes(runner: InProcessRunner) -> list[tuple[object, ...]]:
    return store_of(runner.deps).query("SELECT tenant, outcome, error_code FROM audit ORDER BY ts")


def test_a_miss_walks_every_step_in_pipeline_order_then_finish() -> None:
    runner = runner_with(CountingEcho())
    state = runner.run(make_state("hello there"))
    assert runner.steps_walked(state) == [*(s.name for s in STEPS), "finish"]
    assert final_response(state).text() == "hello there"
    assert state.cache is not None and state.cache.status == "miss"


def test_the_same_request_twice_is_served_from_the_exact_cache_without_the_model() -> None:
    provider = CountingEcho()
    runner = runner_with(provider)
    runner.run(make_state("cache me"))
    second = runner.run(make_state("cache me"))
    assert provider.calls == ["echo"]
    assert runner.steps_walked(second) == ["guard", "cache", "finish"]
    answer = final_response(second)
    assert answer.text() == "cache me"
    assert answer.id == f"chatcmpl-{second.request_id}"
    assert answer.usage.cost_usd == 0.0
    assert [row[1] for row in audit_outcomes(runner)] == ["ok", "cache_hit"]


def test_another_tenant_never_sees_the_first_tenants_cached_answer() -> None:
    provider = CountingEcho()
    runner = runner_with(provider)
    runner.run(make_state("shared question"))
    other = runner.run(make_state("shared question", key=GLOBEX_KEY))
    assert other.cache is not None and other.cache.status == "miss"
    assert provider.calls == ["echo", "echo"]


def test_no_cache_skips_the_lookup_and_no_store_skips_the_store() -> None:
    provider = CountingEcho()
    runner = runner_with(provider)
    runner.run(make_state("q"))
    bypass = make_state("q")
    bypass.caller.cache_control = "no-cache"
    runner.run(bypass)
    assert bypass.cache is not None and bypass.cache.status == "bypass"
    not_stored = make_state("fresh")
    not_stored.caller.cache_control = "no-store"
    runner.run(not_stored)
    assert not_stored.finish is not None and not not_stored.finish.cached
    assert runner.run(make_state("fresh")).cache.status == "miss"  # type: ignore[union-attr]
    assert provider.calls == ["echo"] * 4


def test_cache_entries_expire_after_their_ttl() -> None:
    now = [1000.0]
    deps = make_deps(clock=lambda: now[0])
    provider = CountingEcho()
    runner = runner_with(provider, deps)
    runner.run(make_state("ttl"))
    now[0] += 3599
    assert runner.run(make_state("ttl")).cache.status == "exact"  # type: ignore[union-attr]
    now[0] += 2
    assert runner.run(make_state("ttl")).cache.status == "miss"  # type: ignore[union-attr]


def test_input_blocklist_takes_the_blocked_exit_and_is_audited() -> None:
    provider = CountingEcho()
    runner = runner_with(provider)
    state = runner.run(make_state("tell me the CODENAME", key=GLOBEX_KEY))
    assert runner.steps_walked(state) == ["guard", "finish"]
    assert state.guard is not None and state.guard.layer == "blocklist"
    assert provider.calls == []
    assert audit_outcomes(runner) == [("globex", "blocked", None)]


def test_output_blocklist_withholds_the_answer_as_content_filter_and_does_not_cache_it() -> None:
    runner = runner_with(CountingEcho())
    state = runner.run(make_state("the forbidden answer", key=GLOBEX_KEY))
    answer = final_response(state)
    assert answer.choices[0].finish_reason == "content_filter"
    assert answer.choices[0].message.content is None
    assert state.finish is not None and not state.finish.cached


def test_unknown_key_fails_with_401_and_is_recorded_as_failed() -> None:
    runner = runner_with(CountingEcho())
    with pytest.raises(AuthenticationFailed) as caught:
        runner.run(make_state("x", key="sk-nope"))
    assert caught.value.status == 401
    assert audit_outcomes(runner) == [(None, "error", "invalid_api_key")]


def test_unknown_model_is_404_before_any_rate_limit_token_is_spent() -> None:
    runner = runner_with(CountingEcho())
    with pytest.raises(ModelNotFound):
        runner.run(make_state("x", model="gpt-nine"))


def test_rate_limit_refuses_with_retry_after() -> None:
    config = make_config(
        f"""  initech:
    api_keys: [{{id: k1, sha256: {hash_key("sk-initech")}}}]
    routes: {{default: {{model: echo}}}}
    user_rate_limit: {{requests_per_minute: 60, burst: 2}}
"""
    )
    runner = runner_with(CountingEcho(), make_deps(config))
    runner.run(make_state("1", key="sk-initech", user="alice"))
    runner.run(make_state("2", key="sk-initech", user="alice"))
    with pytest.raises(RateLimited) as caught:
        runner.run(make_state("3", key="sk-initech", user="alice"))
    assert caught.value.status == 429 and caught.value.retry_after_s == pytest.approx(1.0, abs=0.05)
    runner.run(make_state("4", key="sk-initech", user="bob"))  # another user has their own bucket


def test_a_client_ip_limit_applies_per_address_and_stores_no_address() -> None:
    config = make_config(
        f"""  initech:
    api_keys: [{{id: k1, sha256: {hash_key("sk-initech")}}}]
    routes: {{default: {{model: echo}}}}
    ip_rate_limit: {{requests_per_minute: 60, burst: 1}}
"""
    )
    deps = make_deps(config)
    runner = runner_with(CountingEcho(), deps)

    def from_ip(content: str, ip: str) -> GatewayState:
        state = make_state(content, key="sk-initech")
        state.caller.client_ip = ip
        return state

    runner.run(from_ip("1", "203.0.113.9"))
    with pytest.raises(RateLimited, match="client address"):
        runner.run(from_ip("2", "203.0.113.9"))
    runner.run(from_ip("3", "203.0.113.10"))  # another address has its own bucket
    assert isinstance(deps.limiter, MemoryRateLimiter)
    assert not any("203.0.113" in bucket for bucket in deps.limiter._buckets)


def test_fallback_answers_when_the_primary_fails_and_is_not_cached_under_the_primary() -> None:
    provider = CountingEcho(failing=frozenset({"echo"}))
    sleep = RecordingSleep()
    runner = runner_with(provider, make_deps(sleep=sleep))
    state = runner.run(make_state("fallback please"))
    assert state.invoke is not None and state.invoke.model == "echo-b"
    assert provider.calls == ["echo", "echo", "echo", "echo-b"]
    assert len(sleep.delays) == 2 and all(0 <= d <= 2.0 for d in sleep.delays)
    assert state.finish is not None and not state.finish.cached
    assert state.invoke.response.usage.cost_usd > 0


def test_all_models_failing_is_503_and_recorded() -> None:
    runner = runner_with(CountingEcho(failing=frozenset({"echo", "echo-b"})))
    with pytest.raises(AllModelsFailed) as caught:
        runner.run(make_state("doomed"))
    assert caught.value.status == 503
    assert "echo: unavailable" in caught.value.message and "echo-b: unavailable" in caught.value.message
    assert audit_outcomes(runner)[-1][1:] == ("error", "all_models_failed")


def test_usage_is_recorded_with_cost_and_no_raw_identifiers() -> None:
    runner = runner_with(CountingEcho())
    runner.run(make_state("count my tokens", user="alice@example.com"))
    rows = store_of(runner.deps).query(
        "SELECT tenant, model, prompt_tokens, completion_tokens, cost_usd, user_hash FROM usage"
    )
    assert len(rows) == 1
    tenant, model, prompt, completion, cost, user_hash = rows[0]
    assert (tenant, model, completion) == ("acme", "echo", 3)
    assert cost == pytest.approx((prompt * 1.0 + completion * 2.0) / 1e6)
    assert user_hash != "alice@example.com" and len(user_hash) == 16
    everything = repr(store_of(runner.deps).query("SELECT * FROM audit"))
    assert "alice" not in everything and "count my tokens" not in everything and "198.51.100.4" not in everything


def broken_moderation(state: GatewayState, deps: Deps) -> None:
    raise RuntimeError("a bug, not a provider error")


def test_an_unexpected_failure_is_still_recorded_as_failed() -> None:
    """Nothing is lost: even a bug inside a step leaves an audit row before the error propagates.
    (A provider's own bug is a provider failure instead: see test_invoke_policy.)"""
    broken = Step("moderate", f"{__name__}:broken_moderation", "moderate")
    runner = InProcessRunner(make_deps(), tuple(broken if s.name == "moderate" else s for s in STEPS))
    with pytest.raises(RuntimeError):
        runner.run(make_state("boom"))
    assert audit_outcomes(runner) == [("acme", "error", "internal_error")]
