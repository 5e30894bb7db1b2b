"""The invoke step's retry/fallback policy through real providers, real SDKs and fake servers on loopback."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from llm_gateway.adapters.local.memory import MemoryRateLimiter
from llm_gateway.adapters.local.sqlite import SqliteStore
from llm_gateway.config import ModelConfig, hash_key, parse_config
from llm_gateway.contracts import (
    Attempt,
    CallerContext,
    ChatCompletionRequest,
    GatewayState,
    GuardResult,
    TenantContext,
)
from llm_gateway.deps import Deps
from llm_gateway.errors import AllModelsFailed, OutputFormatInvalid, ProviderBadRequest, ProviderUnavailable
from llm_gateway.invoke.step import invoke_step, open_stream
from llm_gateway.pipeline import INVOKE_POLICY
from llm_gateway.providers.base import ProviderRegistry, ProviderReply, StreamDelta, default_registry
from llm_gateway.routing.step import resolve_route
from llm_gateway.runner import InProcessRunner
from tests.support.fake_providers import FakeServer, delay, fake_server, ok, status

GATEWAY_KEY = "gw-test-key-0123456789abcdef"
OPENAI_KEY = "sk-upstream-openai-secret"
ANTHROPIC_KEY = "sk-ant-upstream-secret"
PROMPT = "What is the capital of Burkina Faso? (secret-prompt-marker)"

CONFIG = """
cache:
  enabled: true
models:
  gpt-primary:
    provider: openai
    provider_model: gpt-4o-2024-08-06
    base_url: {openai}
    api_key_env: FAKE_OPENAI_KEY
    timeout_s: 0.3
    price: {{input_per_mtok: 2.5, cached_input_per_mtok: 1.25, output_per_mtok: 10.0}}
  claude-fallback:
    provider: anthropic
    provider_model: claude-sonnet-fake
    base_url: {anthropic}
    api_key_env: FAKE_ANTHROPIC_KEY
    timeout_s: 0.3
    price: {{input_per_mtok: 3.0, cached_input_per_mtok: 0.3, output_per_mtok: 15.0}}
tenants:
  acme:
    api_keys:
      - {{id: key-1, sha256: {key_hash}}}
    routes:
      default: {{model: gpt-primary, fallbacks: [claude-fallback]}}
      solo: {{model: gpt-primary}}
"""


class RecordingSleep:
    """deps.sleep that returns at once and remembers each requested delay."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeServer, FakeServer]]:
    with fake_server("openai") as openai_fake, fake_server("anthropic") as anthropic_fake:
        yield openai_fake, anthropic_fake


@pytest.fixture
def primary(servers: tuple[FakeServer, FakeServer]) -> FakeServer:
    servers[0].script.reset()
    return servers[0]


@pytest.fixture
def fallback(servers: tuple[FakeServer, FakeServer]) -> FakeServer:
    servers[1].script.reset()
    return servers[1]


@pytest.fixture(scope="module")
def registry() -> ProviderRegistry:
    """One set of providers for the module, as one gateway process keeps them (SDK clients reused)."""
    return default_registry()


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def store() -> Iterator[SqliteStore]:
    db = SqliteStore(":memory:")
    yield db
    db.close()


@pytest.fixture
def deps(
    primary: FakeServer,
    fallback: FakeServer,
    sleeps: RecordingSleep,
    store: SqliteStore,
    registry: ProviderRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> Deps:
    monkeypatch.setenv("FAKE_OPENAI_KEY", OPENAI_KEY)
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", ANTHROPIC_KEY)
    config = parse_config(
        CONFIG.format(openai=primary.base_url, anthropic=fallback.base_url, key_hash=hash_key(GATEWAY_KEY))
    )
    return Deps(
        config=config,
        cache=store,
        limiter=MemoryRateLimiter(),
        usage=store,
        audit=store,
        providers=registry,
        sleep=sleeps,
    )


def routed_state(deps: Deps, route: str = "default", *, stream: bool = False, **fields: Any) -> GatewayState:
    """A state as the guard and router leave it (tenant resolved, candidates chosen)."""
    request = ChatCompletionRequest.model_validate(
        {"model": route, "messages": [{"role": "user", "content": PROMPT}], "stream": stream, **fields}
    )
    return GatewayState(
        request_id="req-invoke-1",
        received_at=time.time(),
        request=request,
        caller=CallerContext(api_key_sha256=hash_key(GATEWAY_KEY)),
        guard=GuardResult(outcome="allowed", tenant=TenantContext(tenant="acme", key_id="key-1")),
        router=resolve_route(deps.config, "acme", route),
    )


def outcomes(attempts: list[Attempt]) -> list[tuple[str, str]]:
    return [(a.model, a.outcome) for a in attempts]


# --------------------------------------------------------------------------- retry on the same model


def test_throttled_then_ok_retries_the_same_model(
    deps: Deps, primary: FakeServer, fallback: FakeServer, sleeps: RecordingSleep
) -> None:
    """A 429 is retried on the same model after one jittered backoff; the primary answers."""
    primary.script.push(status(429), ok("Ouagadougou."))
    result = invoke_step(routed_state(deps), deps)
    assert result.model == "gpt-primary"
    assert result.provider == "openai"
    assert result.response.text() == "Ouagadougou."
    assert outcomes(result.attempts) == [("gpt-primary", "throttled"), ("gpt-primary", "ok")]
    assert len(sleeps.delays) == 1
    assert 0 <= sleeps.delays[0] <= INVOKE_POLICY.base_delay_s  # first backoff: full jitter up to the base
    assert len(primary.script.requests) == 2
    assert fallback.script.requests == []
    assert primary.script.last.body["model"] == "gpt-4o-2024-08-06"  # the pinned upstream name


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(1, 1.0), (30, INVOKE_POLICY.max_delay_s)],
    ids=["honoured", "capped"],
)
def test_retry_after_sets_the_backoff_floor_within_the_cap(
    deps: Deps, primary: FakeServer, sleeps: RecordingSleep, retry_after: int, expected: float
) -> None:
    """Retry-After lifts the backoff to at least its value, but never beyond RetryPolicy.max_delay_s."""
    primary.script.push(status(429, retry_after=retry_after), ok())
    result = invoke_step(routed_state(deps), deps)
    assert outcomes(result.attempts) == [("gpt-primary", "throttled"), ("gpt-primary", "ok")]
    assert len(sleeps.delays) == 1
    assert min(retry_after, INVOKE_POLICY.max_delay_s) <= sleeps.delays[0] <= INVOKE_POLICY.max_delay_s
    # Jitter on the first attempt is at most base_delay_s (< 1 s), so the floor decides exactly.
    assert sleeps.delays[0] == pytest.approx(expected)


# --------------------------------------------------------------------------- fallback


def test_repeated_5xx_falls_back_to_the_next_model(
    deps: Deps, primary: FakeServer, fallback: FakeServer, sleeps: RecordingSleep
) -> None:
    """Three 500s exhaust the primary; the anthropic fallback answers and the attempts show it."""
    primary.script.push(status(500), status(500), status(500))
    fallback.script.push(ok("Ouagadougou, from Claude."))
    result = invoke_step(routed_state(deps), deps)
    assert result.model == "claude-fallback"
    assert result.provider == "anthropic"
    assert result.response.model == "claude-fallback"
    assert result.response.text() == "Ouagadougou, from Claude."
    assert outcomes(result.attempts) == [("gpt-primary", "unavailable")] * 3 + [("claude-fallback", "ok")]
    assert len(primary.script.requests) == INVOKE_POLICY.max_attempts
    assert len(fallback.script.requests) == 1
    assert fallback.script.last.body["model"] == "claude-sonnet-fake"
    # Backoff between tries of a model, none before moving on to the next one.
    assert len(sleeps.delays) == INVOKE_POLICY.max_attempts - 1
    for attempt, slept in enumerate(sleeps.delays):
        assert 0 <= slept <= INVOKE_POLICY.base_delay_s * 2**attempt


def test_timeouts_fall_back_to_the_next_model(deps: Deps, primary: FakeServer, fallback: FakeServer) -> None:
    """A primary slower than its timeout_s is retried, then the fallback answers."""
    primary.script.push(delay(2.0), delay(2.0), delay(2.0))
    fallback.script.push(ok("fallback answer"))
    started = time.monotonic()
    result = invoke_step(routed_state(deps), deps)
    assert time.monotonic() - started < 3.0  # the client gave up, it did not wait the 2 s out
    assert result.model == "claude-fallback"
    assert result.response.text() == "fallback answer"
    assert outcomes(result.attempts) == [("gpt-primary", "timeout")] * 3 + [("claude-fallback", "ok")]


def test_bad_request_is_neither_retried_nor_falls_back(
    deps: Deps, primary: FakeServer, fallback: FakeServer, sleeps: RecordingSleep
) -> None:
    """A 400 is raised at once: one request upstream, no backoff, no fallback."""
    primary.script.push(status(400, message="Invalid 'messages[0].content'"))
    with pytest.raises(ProviderBadRequest, match="Invalid 'messages"):
        invoke_step(routed_state(deps), deps)
    assert len(primary.script.requests) == 1
    assert fallback.script.requests == []
    assert sleeps.delays == []


def test_all_candidates_failing_is_all_models_failed(
    deps: Deps, primary: FakeServer, fallback: FakeServer, sleeps: RecordingSleep
) -> None:
    """When every model fails retryably the step raises AllModelsFailed (503) naming each model."""
    primary.script.push(status(500), status(503), status(500))
    fallback.script.push(status(529), status(529), status(529))
    with pytest.raises(AllModelsFailed) as caught:
        invoke_step(routed_state(deps), deps)
    error = caught.value
    assert error.status == 503
    assert "gpt-primary: unavailable" in error.message
    assert "claude-fallback: unavailable" in error.message
    assert error.retry_after_s is None
    assert len(primary.script.requests) == len(fallback.script.requests) == INVOKE_POLICY.max_attempts
    assert len(sleeps.delays) == 2 * (INVOKE_POLICY.max_attempts - 1)


def test_all_throttled_passes_on_the_last_retry_after(deps: Deps, primary: FakeServer, fallback: FakeServer) -> None:
    """If the last failure was a throttle, AllModelsFailed carries its Retry-After for the client."""
    primary.script.push(status(500), status(500), status(500))
    fallback.script.push(status(429, retry_after=1), status(429, retry_after=1), status(429, retry_after=3))
    with pytest.raises(AllModelsFailed) as caught:
        invoke_step(routed_state(deps), deps)
    assert caught.value.retry_after_s == 3.0
    assert "claude-fallback: throttled" in caught.value.message


# --------------------------------------------------------------------------- cost


def test_cost_prices_cached_input_tokens_separately(deps: Deps, primary: FakeServer) -> None:
    """Cost = uncached input x input price + cached input x cached price + output x output price."""
    primary.script.push(ok("priced", prompt_tokens=1000, completion_tokens=200, cached_tokens=400))
    usage = invoke_step(routed_state(deps), deps).response.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (1000, 200, 1200)
    assert usage.prompt_tokens_details.cached_tokens == 400
    # (600 * 2.5 + 400 * 1.25 + 200 * 10.0) / 1e6
    assert usage.cost_usd == pytest.approx(0.004, rel=1e-12)


def test_cost_of_a_fallback_uses_the_fallback_price_and_anthropic_cache_reads(
    deps: Deps, primary: FakeServer, fallback: FakeServer
) -> None:
    """The answering model's price applies; Anthropic cache reads count as (cheap) prompt tokens."""
    primary.script.push(status(500), status(500), status(500))
    fallback.script.push(ok("cached", prompt_tokens=2000, completion_tokens=100, cached_tokens=1500))
    usage = invoke_step(routed_state(deps), deps).response.usage
    assert (usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens) == (2000, 1500)
    # (500 * 3.0 + 1500 * 0.3 + 100 * 15.0) / 1e6
    assert usage.cost_usd == pytest.approx(0.00345, rel=1e-12)


# --------------------------------------------------------------------------- streaming


def test_stream_is_retried_before_the_first_delta(deps: Deps, primary: FakeServer, sleeps: RecordingSleep) -> None:
    """A 500 when opening a stream is retried; the second try's stream is delivered whole."""
    text = "Ouagadougou is the capital of Burkina Faso."
    primary.script.push(status(500), ok(text, prompt_tokens=15, completion_tokens=9, cached_tokens=4))
    model_id, provider, deltas, attempts = open_stream(routed_state(deps, stream=True), deps)
    assert (model_id, provider.name) == ("gpt-primary", "openai")
    assert outcomes(attempts) == [("gpt-primary", "unavailable"), ("gpt-primary", "ok")]
    received = list(deltas)
    assert "".join(d.text for d in received) == text
    assert (received[-1].prompt_tokens, received[-1].completion_tokens, received[-1].cached_tokens) == (15, 9, 4)
    assert received[-1].finish_reason == "stop"
    assert len(sleeps.delays) == 1
    assert primary.script.last.body["stream"] is True


def test_stream_falls_back_to_anthropic(deps: Deps, primary: FakeServer, fallback: FakeServer) -> None:
    """When the primary cannot open a stream, the fallback's SSE stream is delivered."""
    primary.script.push(status(503), status(503), status(503))
    fallback.script.push(ok("streamed by the fallback", prompt_tokens=20, completion_tokens=4))
    model_id, provider, deltas, attempts = open_stream(routed_state(deps, stream=True), deps)
    assert (model_id, provider.name) == ("claude-fallback", "anthropic")
    assert outcomes(attempts)[-1] == ("claude-fallback", "ok")
    received = list(deltas)
    assert "".join(d.text for d in received) == "streamed by the fallback"
    assert (received[-1].prompt_tokens, received[-1].completion_tokens) == (20, 4)


# --------------------------------------------------------------------------- the provider-error boundary


class BuggyProvider:
    """An "openai" provider with a bug, or an answer none of its checks caught: it raises
    something that is not a ProviderError (before any delta, after some text, or not at all
    while its stream simply stops)."""

    name = "openai"

    def __init__(self, stream_ends: str = "raise") -> None:
        self.stream_ends = stream_ends

    def complete(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> ProviderReply:
        raise KeyError("choices")  # the message could quote the answer: it must not reach the logs

    def stream(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> Iterator[StreamDelta]:
        if self.stream_ends == "before_any_delta":
            return iter(())
        return self._deltas()

    def _deltas(self) -> Iterator[StreamDelta]:
        yield StreamDelta(text="Ouaga")
        if self.stream_ends == "raise":
            raise KeyError("choices")


def with_primary(deps: Deps, provider: BuggyProvider) -> Deps:
    registry = default_registry()
    registry.register("openai", lambda: provider)
    deps.providers = registry
    return deps


def test_a_provider_bug_is_a_provider_failure_that_falls_back(
    deps: Deps, fallback: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a 500: retried like an unavailable model, then the fallback answers; each failure is
    logged with the request id, never with the exception's message."""
    with_primary(deps, BuggyProvider())
    fallback.script.push(ok("Ouagadougou."))
    with caplog.at_level(logging.ERROR, logger="llm_gateway.invoke"):
        result = invoke_step(routed_state(deps), deps)
    assert result.model == "claude-fallback" and result.response.text() == "Ouagadougou."
    assert outcomes(result.attempts) == [("gpt-primary", "unavailable")] * 3 + [("claude-fallback", "ok")]
    logged = [r for r in caplog.records if r.name == "llm_gateway.invoke"]
    assert len(logged) == 3 and {getattr(r, "request_id", None) for r in logged} == {"req-invoke-1"}
    assert all("KeyError" in r.getMessage() and "choices" not in r.getMessage() for r in logged)


def test_a_stream_that_ends_before_any_delta_falls_back(deps: Deps, fallback: FakeServer) -> None:
    """No text and no finish: nothing was relayed yet, so the next model answers."""
    with_primary(deps, BuggyProvider(stream_ends="before_any_delta"))
    fallback.script.push(ok("streamed by the fallback"))
    model_id, _, deltas, attempts = open_stream(routed_state(deps, stream=True), deps)
    assert model_id == "claude-fallback" and outcomes(attempts)[0] == ("gpt-primary", "unavailable")
    assert "".join(d.text for d in deltas) == "streamed by the fallback"


@pytest.mark.parametrize(
    ("stream_ends", "message"),
    [("raise", "answered in an unexpected way"), ("quietly", "closed the stream before finishing")],
)
def test_a_stream_that_breaks_after_its_first_text_raises_a_provider_error(
    deps: Deps, stream_ends: str, message: str
) -> None:
    """After the first text the stream is the client's: a failure or an end without the finish
    delta surfaces as ProviderUnavailable (never a bare exception, never a silent end)."""
    with_primary(deps, BuggyProvider(stream_ends=stream_ends))
    _, _, deltas, _ = open_stream(routed_state(deps, stream=True), deps)
    assert next(deltas).text == "Ouaga"
    with pytest.raises(ProviderUnavailable, match=message):
        next(deltas)


def test_a_repair_call_is_retried_like_any_call(deps: Deps, primary: FakeServer) -> None:
    """A JSON answer that was not JSON is repaired; a 500 on the repair call is retried."""
    primary.script.push(ok("Ouagadougou"), status(500), ok('{"capital": "Ouagadougou"}'))
    result = invoke_step(routed_state(deps, "solo", response_format={"type": "json_object"}), deps)
    assert result.response.text() == '{"capital": "Ouagadougou"}'
    assert outcomes(result.attempts) == [("gpt-primary", "ok"), ("gpt-primary", "unavailable"), ("gpt-primary", "ok")]


def test_a_repair_call_that_keeps_failing_is_output_format_invalid(deps: Deps, primary: FakeServer) -> None:
    """The documented 502 response_format_mismatch, not an upstream error of the repair call."""
    primary.script.push(ok("Ouagadougou"), status(500), status(500), status(500))
    with pytest.raises(OutputFormatInvalid, match="repair"):
        invoke_step(routed_state(deps, "solo", response_format={"type": "json_object"}), deps)
    assert len(primary.script.requests) == 4


# --------------------------------------------------------------------------- the whole chain


def run_chain(deps: Deps) -> GatewayState:
    """The InProcessRunner from the guard on, with only the caller's key digest known."""
    request = ChatCompletionRequest.model_validate(
        {"model": "default", "messages": [{"role": "user", "content": PROMPT}], "user": "alice@example.com"}
    )
    state = GatewayState(
        request_id="req-chain-1",
        received_at=time.time(),
        request=request,
        caller=CallerContext(api_key_sha256=hash_key(GATEWAY_KEY), client_ip="203.0.113.9"),
    )
    return InProcessRunner(deps).run(state)


def test_local_runner_records_one_ok_audit_row_without_secrets(
    deps: Deps, primary: FakeServer, store: SqliteStore
) -> None:
    """A full run writes one 'ok' audit row and one usage row naming the model, and no key or prompt."""
    primary.script.push(status(429), ok("Ouagadougou.", prompt_tokens=50, completion_tokens=3, cached_tokens=10))
    walked = InProcessRunner(deps).steps_walked(run_chain(deps))
    assert walked == ["guard", "cache", "router", "invoke", "moderate", "finish"]

    audit = store.query("SELECT outcome, model, provider, tenant, key_id, attempts, prompt_tokens FROM audit")
    assert audit == [("ok", "gpt-primary", "openai", "acme", "key-1", 2, 50)]
    usage = store.query("SELECT model, prompt_tokens, completion_tokens, cached_tokens, cost_usd FROM usage")
    assert len(usage) == 1
    assert usage[0][:4] == ("gpt-primary", 50, 3, 10)
    assert usage[0][4] == pytest.approx((40 * 2.5 + 10 * 1.25 + 3 * 10.0) / 1e6, rel=1e-12)
    # The upstream got the tenant's prompt and the provider key; the records hold neither, nor the raw ids.
    assert presented_bearer(primary) == OPENAI_KEY
    rows = " ".join(map(str, store.query("SELECT * FROM audit") + store.query("SELECT * FROM usage")))
    for secret in (GATEWAY_KEY, hash_key(GATEWAY_KEY), OPENAI_KEY, PROMPT, "secret-prompt-marker", "Ouagadougou"):
        assert secret not in rows
    assert "alice@example.com" not in rows
    assert "203.0.113.9" not in rows


def test_local_runner_records_a_failed_run(
    deps: Deps, primary: FakeServer, fallback: FakeServer, store: SqliteStore
) -> None:
    """When every model fails the runner raises AllModelsFailed and audits one 'error' row, no usage."""
    primary.script.push(status(500), status(500), status(500))
    fallback.script.push(status(500), status(500), status(500))
    with pytest.raises(AllModelsFailed):
        run_chain(deps)
    assert store.query("SELECT outcome, error_code, model FROM audit") == [("error", "all_models_failed", None)]
    assert store.query("SELECT COUNT(*) FROM usage") == [(0,)]


def presented_bearer(fake: FakeServer) -> str:
    scheme, _, token = fake.script.last.headers.get("authorization", "").partition(" ")
    assert scheme == "Bearer"
    return token
