"""The invoke step's deadline: no attempt outlives it, and the REST chain's fits API Gateway's 29 s.

Real providers and SDKs against fake servers on loopback; the deadlines are short so the tests
run in about a second, the REST one is checked by arithmetic on the constants the code uses.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from llm_gateway.adapters.local.memory import MemoryRateLimiter
from llm_gateway.adapters.local.sqlite import SqliteStore
from llm_gateway.aws import handler, runtime
from llm_gateway.config import hash_key, parse_config
from llm_gateway.contracts import CallerContext, ChatCompletionRequest, GatewayState, GuardResult, TenantContext
from llm_gateway.deps import Deps
from llm_gateway.errors import AllModelsFailed, to_http
from llm_gateway.invoke.step import attempt_model, invoke_step
from llm_gateway.pipeline import (
    INVOKE_POLICY,
    REST_INTEGRATION_TIMEOUT_S,
    REST_INVOKE_POLICY,
    REST_OTHER_STEPS_S,
)
from llm_gateway.providers.base import default_registry
from llm_gateway.routing.step import resolve_route
from tests.support.fake_providers import Behaviour, FakeServer, delay, fake_server, status

GATEWAY_KEY = "gw-deadline-key-0123456789abcdef"
MODEL_TIMEOUT_S = 5.0  # each model's own timeout: far longer than the short deadline under test
DEADLINE_S = 0.8
SLOW_S = 0.3  # each slow 500 takes this long
EVENTS = Path(__file__).resolve().parents[1] / "events"

CONFIG = f"""
models:
  gpt-primary:
    provider: openai
    base_url: {{openai}}
    api_key_env: FAKE_OPENAI_KEY
    timeout_s: {MODEL_TIMEOUT_S}
  claude-fallback:
    provider: anthropic
    base_url: {{anthropic}}
    api_key_env: FAKE_ANTHROPIC_KEY
    timeout_s: {MODEL_TIMEOUT_S}
tenants:
  acme:
    api_keys:
      - {{{{id: key-1, sha256: {{key_hash}}}}}}
    routes:
      default: {{{{model: gpt-primary, fallbacks: [claude-fallback]}}}}
"""


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeServer, FakeServer]]:
    with fake_server("openai") as openai_fake, fake_server("anthropic") as anthropic_fake:
        yield openai_fake, anthropic_fake


@pytest.fixture
def deps(servers: tuple[FakeServer, FakeServer], monkeypatch: pytest.MonkeyPatch) -> Iterator[Deps]:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-upstream-openai")
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "sk-ant-upstream")
    for server in servers:
        server.script.reset()
    primary, fallback = servers
    config = parse_config(
        CONFIG.format(openai=primary.base_url, anthropic=fallback.base_url, key_hash=hash_key(GATEWAY_KEY))
    )
    store = SqliteStore(":memory:")
    registry = default_registry()
    for name in ("openai", "anthropic"):
        registry.get(name)  # SDK clients built (and imported) before the short deadline starts
    yield Deps(
        config=config,
        cache=store,
        limiter=MemoryRateLimiter(),
        usage=store,
        audit=store,
        providers=registry,
        invoke_policy=replace(INVOKE_POLICY, deadline_s=DEADLINE_S),
        sleep=lambda seconds: None,  # backoffs are not waited out: only the provider calls take time
    )
    store.close()


def routed_state(deps: Deps) -> GatewayState:
    messages = [{"role": "user", "content": "Hi"}]
    request = ChatCompletionRequest.model_validate({"model": "default", "messages": messages})
    return GatewayState(
        request_id="req-deadline-1",
        received_at=time.time(),
        request=request,
        caller=CallerContext(api_key_sha256=hash_key(GATEWAY_KEY)),
        guard=GuardResult(outcome="allowed", tenant=TenantContext(tenant="acme", key_id="key-1")),
        router=resolve_route(deps.config, "acme", "default"),
    )


def every_call(servers: tuple[FakeServer, FakeServer], behaviour: Behaviour) -> None:
    for server in servers:
        server.script.push(*[behaviour] * 2 * INVOKE_POLICY.max_attempts)


def test_a_hanging_provider_ends_in_all_models_failed_at_the_deadline(
    deps: Deps, servers: tuple[FakeServer, FakeServer]
) -> None:
    """Given models that never answer and whose own timeout is longer than the deadline, the
    attempt is cut at the deadline and the step ends with the documented 503 all_models_failed,
    without trying the fallback (no time left) and without waiting out the model's timeout."""
    every_call(servers, delay(60.0))
    started = time.monotonic()
    with pytest.raises(AllModelsFailed) as caught:
        invoke_step(routed_state(deps), deps)
    assert time.monotonic() - started < MODEL_TIMEOUT_S  # the per-attempt timeout was cut to the deadline
    assert f"within the {DEADLINE_S:g} s deadline" in caught.value.message
    assert "gpt-primary: timeout" in caught.value.message
    status_code, _, body = to_http(caught.value)
    assert status_code == 503 and json.loads(body)["error"]["code"] == "all_models_failed"
    primary, fallback = servers
    assert len(primary.script.requests) == 1
    assert fallback.script.requests == []


def test_a_provider_that_keeps_failing_stops_being_retried_at_the_deadline(
    deps: Deps, servers: tuple[FakeServer, FakeServer]
) -> None:
    """Slow 500s: without a deadline the policy would make 3 attempts per model (6 in all); the
    deadline stops the retries and the fallbacks early and says so."""
    every_call(servers, delay(SLOW_S, status(500)))
    with pytest.raises(AllModelsFailed) as caught:
        invoke_step(routed_state(deps), deps)
    assert f"within the {DEADLINE_S:g} s deadline" in caught.value.message
    calls = sum(len(server.script.requests) for server in servers)
    # each call takes SLOW_S and none starts past the deadline: at most ceil(0.8 / 0.3) = 3 of the 6
    assert 1 <= calls <= math.ceil(DEADLINE_S / SLOW_S)  # fewer than the policy's 2 x max_attempts


def test_an_attempt_timeout_never_exceeds_what_is_left_of_the_deadline(deps: Deps) -> None:
    model = deps.config.models["gpt-primary"]
    assert attempt_model(model, 60.0) is model  # enough time left: the model's own timeout
    assert attempt_model(model, 1.27).timeout_s == pytest.approx(1.2)  # cut, rounded down
    assert attempt_model(model, 0.01).timeout_s == pytest.approx(0.1)  # never zero (no attempt starts then)


def test_the_rest_deadline_and_the_other_steps_fit_api_gateways_integration_timeout() -> None:
    """API Gateway's REST integration answers 504 after 29 s: the invoke deadline plus the budget
    of the other steps fits it, leaving the invoke step most of it; the other runtimes keep more."""
    assert REST_INTEGRATION_TIMEOUT_S == 29
    assert REST_INVOKE_POLICY.deadline_s + REST_OTHER_STEPS_S <= REST_INTEGRATION_TIMEOUT_S
    assert 20 <= REST_INVOKE_POLICY.deadline_s <= 24
    assert REST_OTHER_STEPS_S >= 3  # guard, cache, router, moderate, finish and the transitions
    assert INVOKE_POLICY.deadline_s > REST_INVOKE_POLICY.deadline_s  # streaming, batch, local server
    assert replace(REST_INVOKE_POLICY, deadline_s=INVOKE_POLICY.deadline_s) == INVOKE_POLICY  # only the deadline


def test_the_chain_functions_use_the_rest_deadline_and_the_others_the_long_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The step handlers (the REST chain) build their dependencies with the REST policy; the
    streaming and batch functions (`runtime.deps()`) keep the default one."""
    monkeypatch.setenv("GATEWAY_CONFIG_PATH", str(EVENTS / "config.yaml"))
    monkeypatch.setenv("GATEWAY_SQLITE_PATH", str(tmp_path / "lambda.db"))
    runtime.settings.cache_clear()
    runtime.deps.cache_clear()
    try:
        assert handler.chain_deps().invoke_policy == REST_INVOKE_POLICY
        assert runtime.deps().invoke_policy == INVOKE_POLICY
    finally:
        runtime.deps.cache_clear()
        runtime.settings.cache_clear()
