"""Providers through their real SDKs (openai, anthropic, httpx) against wire-compatible fake servers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from llm_gateway.config import ModelConfig
from llm_gateway.contracts import (
    CallerContext,
    ChatCompletionRequest,
    GatewayState,
    GuardResult,
    TenantContext,
    tenant_cache_scope,
)
from llm_gateway.endpoint_contract import InvocationRequest
from llm_gateway.errors import ProviderBadRequest, ProviderThrottled, ProviderTimeout, ProviderUnavailable
from llm_gateway.providers.anthropic import AnthropicProvider
from llm_gateway.providers.base import Provider, StreamDelta
from llm_gateway.providers.openai import OpenAIProvider
from llm_gateway.providers.sagemaker import SageMakerProvider
from tests.support.fake_providers import FakeKind, FakeServer, Ok, delay, fake_server, ok, status
from tests.support.fault_upstream import FaultKind, fault
from tests.support.servers import closed_url

KINDS: tuple[FakeKind, ...] = ("openai", "anthropic", "sagemaker")
KEYED: tuple[FakeKind, ...] = ("openai", "anthropic")
KEY_ENV = {"openai": "FAKE_OPENAI_KEY", "anthropic": "FAKE_ANTHROPIC_KEY"}
KEY = {"openai": "sk-test-openai-123", "anthropic": "sk-ant-test-456"}
# The provider's own words for "ran out of tokens".
LENGTH = {"openai": "length", "anthropic": "max_tokens", "sagemaker": "length"}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeServer]]:
    with fake_server("openai") as o, fake_server("anthropic") as a, fake_server("sagemaker") as s:
        yield {"openai": o, "anthropic": a, "sagemaker": s}


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for kind in KEYED:
        monkeypatch.setenv(KEY_ENV[kind], KEY[kind])


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> FakeKind:
    kind: FakeKind = request.param
    return kind


@pytest.fixture
def fake(fakes: dict[str, FakeServer], kind: FakeKind) -> FakeServer:
    server = fakes[kind]
    server.script.reset()
    return server


_PROVIDERS: dict[str, Provider] = {}


def make_provider(kind: str) -> Provider:
    """The provider for `kind`, one instance per test module as in a gateway process (clients are reused)."""
    if kind not in _PROVIDERS:
        classes: dict[str, type[Any]] = {
            "openai": OpenAIProvider,
            "anthropic": AnthropicProvider,
            "sagemaker": SageMakerProvider,
        }
        _PROVIDERS[kind] = classes[kind]()
    return _PROVIDERS[kind]


def model_for(kind: str, url: str, **overrides: Any) -> ModelConfig:
    """A model config pointing at `url` (the fake's base URL, or any other)."""
    if kind == "sagemaker":
        return ModelConfig(provider="sagemaker", endpoint=url, **overrides)
    return ModelConfig(provider=kind, base_url=url, api_key_env=KEY_ENV[kind], **overrides)  # type: ignore[arg-type]


def chat(*messages: tuple[str, str], **fields: Any) -> ChatCompletionRequest:
    pairs = messages or (("user", "Say hello."),)
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": r, "content": c} for r, c in pairs], **fields}
    )


def presented_key(headers: dict[str, str]) -> str | None:
    """The API key a request carried (`x-api-key`, or a bearer token)."""
    if "x-api-key" in headers:
        return headers["x-api-key"]
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else None


# --------------------------------------------------------------------------- success


def test_complete_returns_text_finish_and_usage(fake: FakeServer, kind: str) -> None:
    """A JSON answer becomes a ProviderReply with the text, 'stop' and the token counts (cached incl.)."""
    fake.script.push(ok("Hello, world!", prompt_tokens=30, completion_tokens=7, cached_tokens=10))
    reply = make_provider(kind).complete(chat(), "m", model_for(kind, fake.base_url))
    assert reply.text == "Hello, world!"
    assert reply.finish_reason == "stop"
    assert (reply.prompt_tokens, reply.completion_tokens) == (30, 7)
    # The endpoint contract has no cached-token count; the hosted APIs report theirs.
    assert reply.cached_tokens == (0 if kind == "sagemaker" else 10)
    assert len(fake.script.requests) == 1


def test_length_finish_reason_is_mapped(fake: FakeServer, kind: str) -> None:
    """The provider's 'out of tokens' stop reason becomes the OpenAI 'length'."""
    fake.script.push(ok("cut sho", finish_reason=LENGTH[kind]))
    reply = make_provider(kind).complete(chat(), "m", model_for(kind, fake.base_url))
    assert reply.finish_reason == "length"


def test_stream_deltas_concatenate_and_last_carries_usage(fake: FakeServer, kind: str) -> None:
    """Streamed deltas join to the full text; only the last carries finish reason and usage."""
    text = "The quick brown fox jumps over the lazy dog."
    fake.script.push(ok(text, prompt_tokens=40, completion_tokens=11, cached_tokens=8))
    deltas = list(make_provider(kind).stream(chat(stream=True), "m", model_for(kind, fake.base_url)))
    assert len(deltas) > 2  # really streamed in pieces
    assert "".join(d.text for d in deltas) == text
    last = deltas[-1]
    assert last.finish_reason == "stop"
    assert (last.prompt_tokens, last.completion_tokens) == (40, 11)
    assert last.cached_tokens == (0 if kind == "sagemaker" else 8)
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert len(fake.script.requests) == 1


@pytest.mark.parametrize("kind", ["openai"], indirect=True)
def test_a_stream_without_a_usage_chunk_leaves_usage_unknown_not_zero(fake: FakeServer, kind: str) -> None:
    """A server that ignores stream_options sends no usage: the gateway then estimates (streaming
    `_reply_from`) instead of billing 0 tokens."""
    fake.script.push(Ok(text="Hello there.", stream_usage=False))
    last = list(make_provider(kind).stream(chat(stream=True), "m", model_for(kind, fake.base_url)))[-1]
    assert last.finish_reason == "stop" and (last.prompt_tokens, last.completion_tokens) == (None, None)


def test_stream_length_finish_reason_is_mapped(fake: FakeServer, kind: str) -> None:
    """A stream cut by the token limit ends with finish reason 'length'."""
    fake.script.push(ok("cut short", finish_reason=LENGTH[kind]))
    deltas = list(make_provider(kind).stream(chat(stream=True), "m", model_for(kind, fake.base_url)))
    assert deltas[-1].finish_reason == "length"


# --------------------------------------------------------------------------- errors


def test_429_is_throttled(fake: FakeServer, kind: str) -> None:
    """HTTP 429 becomes ProviderThrottled."""
    fake.script.push(status(429))
    with pytest.raises(ProviderThrottled):
        make_provider(kind).complete(chat(), "m", model_for(kind, fake.base_url))


@pytest.mark.parametrize("kind", KEYED, indirect=True)
def test_429_retry_after_is_parsed(fake: FakeServer, kind: str) -> None:
    """The Retry-After header of a 429 becomes retry_after_s."""
    fake.script.push(status(429, retry_after=7))
    with pytest.raises(ProviderThrottled) as caught:
        make_provider(kind).complete(chat(), "m", model_for(kind, fake.base_url))
    assert caught.value.retry_after_s == 7.0
    assert caught.value.status == 429


@pytest.mark.parametrize("code", [500, 503])
def test_5xx_is_unavailable(fake: FakeServer, kind: str, code: int) -> None:
    """HTTP 5xx becomes ProviderUnavailable (retryable), not a bad request."""
    fake.script.push(status(code))
    with pytest.raises(ProviderUnavailable) as caught:
        make_provider(kind).complete(chat(), "m", model_for(kind, fake.base_url))
    assert type(caught.value) is ProviderUnavailable
    assert str(code) in caught.value.message


@pytest.mark.parametrize("kind", ["anthropic"], indirect=True)
def test_anthropic_overloaded_529_is_unavailable(fake: FakeServer, kind: str) -> None:
    """Anthropic's 529 overloaded_error is retryable (ProviderUnavailable)."""
    fake.script.push(status(529))
    with pytest.raises(ProviderUnavailable):
        make_provider(kind).complete(chat(), "m", model_for(kind, fake.base_url))


def test_400_is_bad_request(fake: FakeServer, kind: str) -> None:
    """HTTP 400 becomes ProviderBadRequest (never retried)."""
    fake.script.push(status(400, message="messages[0]: unsupported content"))
    with pytest.raises(ProviderBadRequest) as caught:
        make_provider(kind).complete(chat(), "m", model_for(kind, fake.base_url))
    assert caught.value.status == 400


@pytest.mark.parametrize("kind", ["openai"], indirect=True)
def test_openai_400_relays_the_upstream_message(fake: FakeServer, kind: str) -> None:
    """The OpenAI error body's message is passed on to the client."""
    fake.script.push(status(400, message="Invalid 'logit_bias': too many entries"))
    with pytest.raises(ProviderBadRequest, match="too many entries"):
        make_provider(kind).complete(chat(), "m", model_for(kind, fake.base_url))


def test_stream_errors_are_raised_before_the_first_delta(fake: FakeServer, kind: str) -> None:
    """A failing stream raises from stream() itself, so the caller can still retry or fall back."""
    fake.script.push(status(500))
    with pytest.raises(ProviderUnavailable):
        make_provider(kind).stream(chat(stream=True), "m", model_for(kind, fake.base_url))


@pytest.mark.parametrize("broken", ["malformed", "empty", "wrong_type", "no_finish", "cut"])
def test_a_broken_answer_is_unavailable_never_an_empty_or_partial_one(
    fake: FakeServer, kind: str, broken: FaultKind
) -> None:
    """Not JSON, the wrong shape, an HTML page, no finish reason, a dropped connection: the
    upstream failed (retryable), it did not answer."""
    fake.script.push(fault(broken))
    with pytest.raises(ProviderUnavailable) as caught:
        make_provider(kind).complete(chat(), "m", model_for(kind, fake.base_url))
    assert type(caught.value) is ProviderUnavailable and "'m'" in caught.value.message


@pytest.mark.parametrize("broken", ["malformed", "empty", "wrong_type"])
def test_a_stream_broken_before_any_text_fails_at_the_first_delta(
    fake: FakeServer, kind: str, broken: FaultKind
) -> None:
    """A first event that is not JSON, a stream of another content type, or one that ends with
    neither text nor a finish: the failure comes with the first delta, before anything is relayed."""
    fake.script.push(fault(broken))
    with pytest.raises(ProviderUnavailable, match=r"unexpected format|before finishing|without an answer"):
        next(iter(make_provider(kind).stream(chat(stream=True), "m", model_for(kind, fake.base_url))))


@pytest.mark.parametrize(
    ("broken", "error", "message"),
    [
        ("no_finish", ProviderUnavailable, "closed the stream before finishing"),
        ("cut", ProviderUnavailable, "closed the connection before finishing"),
        ("hang", ProviderTimeout, "timed out"),
    ],
)
def test_a_stream_that_breaks_after_text_raises_instead_of_finishing(
    fake: FakeServer, kind: str, broken: FaultKind, error: type[Exception], message: str
) -> None:
    """The text that came is relayed; then the stream raises, never a final delta that would pass
    the partial answer off as finished."""
    fake.script.push(fault(broken, text="Half an answer", hang_s=5))
    deltas = make_provider(kind).stream(chat(stream=True), "m", model_for(kind, fake.base_url, timeout_s=0.5))
    received: list[StreamDelta] = []
    with pytest.raises(error, match=message):
        for delta in deltas:
            received.append(delta)
    assert "".join(d.text for d in received) == "Half an answer"
    assert all(d.finish_reason is None for d in received)


def test_slow_server_is_a_timeout(fake: FakeServer, kind: str) -> None:
    """A server slower than the model's timeout_s raises ProviderTimeout, promptly."""
    fake.script.push(delay(2.0))
    with pytest.raises(ProviderTimeout):
        make_provider(kind).complete(chat(), "m", model_for(kind, fake.base_url, timeout_s=0.3))
    assert len(fake.script.requests) == 1  # one try: the SDKs' own retries are off


@pytest.mark.parametrize("kind", KINDS)
def test_connection_refused_is_unavailable(kind: str) -> None:
    """Nobody listening on the port is ProviderUnavailable, not a timeout."""
    url = closed_url()
    url = f"{url}/v1" if kind == "openai" else url
    with pytest.raises(ProviderUnavailable) as caught:
        make_provider(kind).complete(chat(), "m", model_for(kind, url))
    assert type(caught.value) is ProviderUnavailable


@pytest.mark.parametrize("kind", KEYED, indirect=True)
def test_missing_api_key_is_unavailable(fake: FakeServer, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the key in the environment nothing is sent and the error names the variable."""
    monkeypatch.delenv(KEY_ENV[kind])
    with pytest.raises(ProviderUnavailable, match=KEY_ENV[kind]):
        make_provider(kind).complete(chat(), "m", model_for(kind, fake.base_url))
    assert fake.script.requests == []


@pytest.mark.parametrize("kind", KEYED, indirect=True)
def test_api_key_is_sent(fake: FakeServer, kind: str) -> None:
    """The key from api_key_env reaches the provider in its auth header."""
    make_provider(kind).complete(chat(), "m", model_for(kind, fake.base_url))
    assert presented_key(fake.script.last.headers) == KEY[kind]


# --------------------------------------------------------------------------- OpenAI mapping


@pytest.mark.parametrize("kind", ["openai"], indirect=True)
def test_openai_request_mapping(fake: FakeServer, kind: str) -> None:
    """provider_model names the upstream model; messages and sampling params pass; max_tokens defaults."""
    request = chat(("system", "Be brief."), ("user", "Hi"), temperature=0.2, stop=["END"], seed=7)
    model = model_for(kind, fake.base_url, provider_model="gpt-4o-2024-08-06", default_max_tokens=321)
    make_provider(kind).complete(request, "gpt-4o", model)
    body = fake.script.last.body
    assert fake.script.last.path == "/v1/chat/completions"
    assert body["model"] == "gpt-4o-2024-08-06"
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert (body["temperature"], body["stop"], body["seed"]) == (0.2, ["END"], 7)
    assert body["max_tokens"] == 321
    assert "stream" not in body or body["stream"] is False
    assert "timeout" not in body  # a client option, not a request field


@pytest.mark.parametrize("kind", ["openai"], indirect=True)
def test_openai_max_completion_tokens_is_kept_and_capped(fake: FakeServer, kind: str) -> None:
    """A caller's max_completion_tokens is sent under that name, capped at the model's maximum."""
    request = chat(max_completion_tokens=5000)
    make_provider(kind).complete(request, "m", model_for(kind, fake.base_url, max_output_tokens=1000))
    body = fake.script.last.body
    assert body["max_completion_tokens"] == 1000
    assert "max_tokens" not in body


@pytest.mark.parametrize("kind", ["openai"], indirect=True)
def test_openai_stream_asks_for_usage(fake: FakeServer, kind: str) -> None:
    """A streamed call sets stream and stream_options.include_usage so the last delta has usage."""
    list(make_provider(kind).stream(chat(stream=True), "m", model_for(kind, fake.base_url)))
    body = fake.script.last.body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("kind", ["openai"], indirect=True)
def test_fake_openai_lists_models(fake: FakeServer, kind: str) -> None:
    """The fake OpenAI server answers GET /v1/models in the shape the SDK parses."""
    client = openai.OpenAI(api_key=KEY[kind], base_url=fake.base_url, max_retries=0)
    with client:
        ids = [m.id for m in client.models.list()]
    assert ids == ["gpt-fake"]
    assert fake.script.last.path == "/v1/models"


# --------------------------------------------------------------------------- Anthropic mapping


@pytest.mark.parametrize("kind", ["anthropic"], indirect=True)
def test_anthropic_system_and_developer_become_system(fake: FakeServer, kind: str) -> None:
    """System and developer messages leave `messages` and join, in order, into `system`."""
    request = chat(("system", "You are terse."), ("developer", "Answer in French."), ("user", "Hi"))
    make_provider(kind).complete(request, "claude", model_for(kind, fake.base_url))
    body = fake.script.last.body
    assert fake.script.last.path == "/v1/messages"
    assert body["system"] == "You are terse.\n\nAnswer in French."
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert body["model"] == "claude"


@pytest.mark.parametrize("kind", ["anthropic"], indirect=True)
def test_anthropic_json_object_adds_an_instruction_to_system(fake: FakeServer, kind: str) -> None:
    """response_format json_object becomes a JSON instruction appended to `system`."""
    request = chat(("system", "You are terse."), ("user", "Hi"), response_format={"type": "json_object"})
    make_provider(kind).complete(request, "m", model_for(kind, fake.base_url))
    system = fake.script.last.body["system"]
    assert system.startswith("You are terse.\n\n")
    assert "JSON" in system.split("\n\n", 1)[1]
    assert "response_format" not in fake.script.last.body


@pytest.mark.parametrize("kind", ["anthropic"], indirect=True)
@pytest.mark.parametrize(
    ("fields", "messages"),
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, None),
        ({"temperature": 1.5}, None),
        ({}, [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]),
        ({}, [{"role": "system", "content": "only a system prompt"}]),
    ],
    ids=["json_schema", "temperature_1.5", "image", "no_user_message"],
)
def test_anthropic_refuses_what_it_cannot_honour(
    fake: FakeServer, kind: str, fields: dict[str, Any], messages: list[dict[str, Any]] | None
) -> None:
    """Requests Anthropic cannot honour are refused as bad requests before anything is sent."""
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": messages or [{"role": "user", "content": "Hi"}], **fields}
    )
    with pytest.raises(ProviderBadRequest):
        make_provider(kind).complete(request, "m", model_for(kind, fake.base_url))
    assert fake.script.requests == []


@pytest.mark.parametrize("kind", ["anthropic"], indirect=True)
def test_anthropic_stop_becomes_stop_sequences(fake: FakeServer, kind: str) -> None:
    """stop becomes stop_sequences (a single string becomes a one-item list); `stop` itself is not sent."""
    make_provider(kind).complete(chat(stop="###"), "m", model_for(kind, fake.base_url))
    body = fake.script.last.body
    assert body["stop_sequences"] == ["###"]
    assert "stop" not in body


@pytest.mark.parametrize("kind", ["anthropic"], indirect=True)
@pytest.mark.parametrize("fields", [{"temperature": 0.5}, {"top_p": 0.9}], ids=["temperature", "top_p"])
def test_anthropic_sampling_params_are_sent_or_refused(fake: FakeServer, kind: str, fields: dict[str, Any]) -> None:
    """temperature/top_p reach Anthropic unchanged in the request body (the SDK no longer has arguments for them)."""
    make_provider(kind).complete(chat(**fields), "m", model_for(kind, fake.base_url))
    body = fake.script.last.body
    assert {k: body[k] for k in fields} == fields


@pytest.mark.parametrize("kind", ["anthropic"], indirect=True)
@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, 333),
        ({"max_tokens": 77}, 77),
        ({"max_completion_tokens": 88, "max_tokens": 77}, 88),
        ({"max_tokens": 9999}, 2000),
    ],
    ids=["model_default", "request", "max_completion_tokens_wins", "capped"],
)
def test_anthropic_max_tokens(fake: FakeServer, kind: str, fields: dict[str, Any], expected: int) -> None:
    """max_tokens (required by Anthropic) is the caller's cap, else default_max_tokens, within max_output_tokens."""
    model = model_for(kind, fake.base_url, default_max_tokens=333, max_output_tokens=2000)
    make_provider(kind).complete(chat(**fields), "m", model)
    assert fake.script.last.body["max_tokens"] == expected


@pytest.mark.parametrize("kind", ["anthropic"], indirect=True)
def test_anthropic_prompt_tokens_include_cache_reads(fake: FakeServer, kind: str) -> None:
    """Anthropic's input_tokens exclude cache reads; the reply's prompt_tokens add them back."""
    fake.script.push(ok(prompt_tokens=1000, completion_tokens=5, cached_tokens=900))
    reply = make_provider(kind).complete(chat(), "m", model_for(kind, fake.base_url))
    assert (reply.prompt_tokens, reply.cached_tokens) == (1000, 900)


# --------------------------------------------------------------------------- provider prompt caching

LONG_SYSTEM = "You are the support assistant of Example Corp. " + "Policy clause. " * 400  # ~6,000 chars


@pytest.mark.parametrize("kind", ["anthropic"], indirect=True)
def test_anthropic_requests_carry_cache_breakpoints_on_stable_prefixes(fake: FakeServer, kind: str) -> None:
    model = model_for(kind, fake.base_url)
    history = ("assistant", "Here is what the policy says about refunds. " * 100)  # ~4,400 chars
    make_provider(kind).complete(
        chat(("system", LONG_SYSTEM), ("user", "What about refunds?"), history, ("user", "And exchanges?")), "m", model
    )
    body = fake.script.last.body
    [system] = body["system"]
    assert system == {"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}
    # The conversation so far (ending with the assistant's turn) is cached; the new question is not.
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": history[1], "cache_control": {"type": "ephemeral"}}
    ]
    assert body["messages"][2]["content"] == "And exchanges?"
    assert sum(flatten_count(body, "cache_control")) <= 4


def flatten_count(value: Any, key: str) -> list[int]:
    if isinstance(value, dict):
        return [int(key in value)] + [n for v in value.values() for n in flatten_count(v, key)]
    if isinstance(value, list):
        return [n for v in value for n in flatten_count(v, key)]
    return []


@pytest.mark.parametrize("kind", ["anthropic"], indirect=True)
def test_short_prompts_and_opted_out_models_get_no_breakpoint(fake: FakeServer, kind: str) -> None:
    make_provider(kind).complete(chat(("system", "Be brief."), ("user", "Hi")), "m", model_for(kind, fake.base_url))
    assert fake.script.last.body["system"] == "Be brief."
    opted_out = model_for(kind, fake.base_url, prompt_cache=False)
    make_provider(kind).complete(chat(("system", LONG_SYSTEM), ("user", "Hi")), "m", opted_out)
    assert fake.script.last.body["system"] == LONG_SYSTEM


@pytest.mark.parametrize("kind", ["openai"], indirect=True)
def test_openai_requests_carry_a_prompt_cache_key_per_system_prefix(fake: FakeServer, kind: str) -> None:
    model = model_for(kind, fake.base_url)
    provider = make_provider(kind)
    for question in ("What about refunds?", "And exchanges?"):
        provider.complete(chat(("system", LONG_SYSTEM), ("user", question)), "m", model)
    first, second = (r.body for r in fake.script.calls("/v1/chat/completions"))
    assert first["prompt_cache_key"] == second["prompt_cache_key"]
    assert first["prompt_cache_key"].startswith("gw-") and LONG_SYSTEM[:20] not in first["prompt_cache_key"]
    provider.complete(chat(("system", "Another assistant."), ("user", "Hi")), "m", model)
    assert fake.script.last.body["prompt_cache_key"] != first["prompt_cache_key"]
    provider.complete(chat(("user", "Hi")), "m", model)
    assert "prompt_cache_key" not in fake.script.last.body


# --------------------------------------------------------------------------- SageMaker endpoint mapping


@pytest.mark.parametrize("kind", ["sagemaker"], indirect=True)
def test_sagemaker_request_follows_the_endpoint_contract(fake: FakeServer, kind: str) -> None:
    """The body is a valid InvocationRequest: developer becomes system, json_object sets json_mode."""
    request = chat(
        ("developer", "Be brief."), ("user", "Hi"), response_format={"type": "json_object"}, stop="END", seed=3
    )
    make_provider(kind).complete(request, "m", model_for(kind, fake.base_url, default_max_tokens=64))
    received = fake.script.last
    assert received.path == "/invocations"
    invocation = InvocationRequest.model_validate(received.body)
    assert [(m.role, m.content) for m in invocation.messages] == [("system", "Be brief."), ("user", "Hi")]
    assert invocation.json_mode is True
    assert (invocation.stop, invocation.seed, invocation.max_tokens, invocation.stream) == (["END"], 3, 64, False)


@pytest.mark.parametrize("kind", ["sagemaker"], indirect=True)
def test_sagemaker_request_carries_the_tenants_kv_cache_salt_not_its_name(fake: FakeServer, kind: str) -> None:
    """The endpoint reuses prefix KV blocks only within a salt; the gateway's is a digest of the tenant."""
    provider, model = make_provider(kind), model_for(kind, fake.base_url)
    state = GatewayState(
        request_id="r1",
        received_at=0.0,
        caller=CallerContext(api_key_sha256="0" * 64),
        request=chat(("user", "Hi")),
        guard=GuardResult(outcome="allowed", tenant=TenantContext(tenant="acme", key_id="key-1")),
    )
    provider.complete(state.model_request(), "m", model)
    salt = InvocationRequest.model_validate(fake.script.last.body).cache_salt
    assert salt == tenant_cache_scope("acme") != tenant_cache_scope("globex")
    assert salt is not None and "acme" not in salt
    provider.complete(chat(("user", "Hi")), "m", model)  # no tenant resolved: the shared scope
    assert fake.script.last.body["cache_salt"] is None
    assert "cache_salt" not in state.model_request().model_dump()  # never part of cache keys or logs


@pytest.mark.parametrize("kind", ["sagemaker"], indirect=True)
def test_sagemaker_stream_asks_for_ndjson(fake: FakeServer, kind: str) -> None:
    """A streamed call sends stream: true and accepts NDJSON."""
    list(make_provider(kind).stream(chat(stream=True), "m", model_for(kind, fake.base_url)))
    assert fake.script.last.body["stream"] is True
    assert fake.script.last.headers["accept"] == "application/x-ndjson"


@pytest.mark.parametrize("kind", ["sagemaker"], indirect=True)
def test_sagemaker_refuses_json_schema(fake: FakeServer, kind: str) -> None:
    """json_schema is refused as a bad request before anything is sent."""
    request = chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}})
    with pytest.raises(ProviderBadRequest):
        make_provider(kind).complete(request, "m", model_for(kind, fake.base_url))
    assert fake.script.requests == []
