"""A prompt that cannot fit a model's context window is refused before the call with OpenAI's
`context_length_exceeded`, or sent to a fallback whose window holds it; an upstream's own
context-length refusal is mapped onto the same error."""

from __future__ import annotations

import re
from typing import Any

import pytest

from llm_gateway.config import GatewayConfig, RouteConfig
from llm_gateway.context_window import (
    context_exceeded,
    prompt_token_floor,
    text_token_floor,
    upstream_context_error,
)
from llm_gateway.contracts import ChatCompletionRequest, GatewayState
from llm_gateway.deps import Deps
from llm_gateway.errors import InvalidRequest, ProviderBadRequest
from llm_gateway.observability import InMemoryMetrics
from llm_gateway.runner import InProcessRunner
from tests.conftest import make_config, make_deps, make_state

# 22,000 characters of plain prose: 3,620 tokens for SmolLM2, every word one token (the floor counts as many)
LONG_PROMPT = ("The committee reviewed the quarterly figures and asked for a revised forecast. " * 280)[:22_000]


def windows(small: int | None, big: int | None = None, route: dict[str, Any] | None = None) -> GatewayConfig:
    """BASE_CONFIG with context windows on `echo` (acme's first model) and `echo-b` (its fallback),
    and optionally another default route for acme."""
    config = make_config()
    models = dict(config.models)
    models["echo"] = models["echo"].model_copy(update={"context_tokens": small})
    models["echo-b"] = models["echo-b"].model_copy(update={"context_tokens": big})
    tenants = dict(config.tenants)
    if route is not None:
        tenants["acme"] = tenants["acme"].model_copy(update={"routes": {"default": RouteConfig(**route)}})
    return config.model_copy(update={"models": models, "tenants": tenants})


def run(config: GatewayConfig, content: str, **request: Any) -> tuple[GatewayState, Deps]:
    deps = make_deps(config, metrics=InMemoryMetrics())
    state = make_state(content, **request)
    InProcessRunner(deps).run(state)
    return state, deps


def answered_by(config: GatewayConfig, content: str, **request: Any) -> str:
    """The model that answered the request."""
    state, _ = run(config, content, **request)
    assert state.invoke is not None
    return state.invoke.model


def test_a_prompt_over_the_window_is_refused_before_any_model_is_called() -> None:
    with pytest.raises(InvalidRequest) as refused:
        run(windows(2048, 2048), LONG_PROMPT)
    error = refused.value
    assert (error.status, error.type, error.code, error.param) == (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
    )
    assert re.fullmatch(
        r"This model's maximum context length is 2048 tokens\. However, your messages resulted in at least "
        r"\d{4} tokens\. Please reduce the length of the messages\.",
        error.message,
    )


def test_the_completion_the_caller_asks_for_counts_and_the_routes_cap_alone_does_not() -> None:
    prompt = "word " * 1500  # a floor of 1,506 tokens against windows of 2,048
    with pytest.raises(InvalidRequest, match=r"you requested at least 2106 tokens \(1506 in the messages, 600 in"):
        run(windows(2048, 2048), prompt, max_tokens=600)
    with pytest.raises(InvalidRequest, match="600 in the completion"):
        run(windows(2048, 2048), prompt, max_completion_tokens=600)
    assert answered_by(windows(2048, 2048), prompt, max_tokens=100) == "echo"
    assert answered_by(windows(2048, 2048), prompt) == "echo"
    capped = windows(2048, 2048, route={"model": "echo", "max_tokens": 600})
    assert answered_by(capped, prompt) == "echo"  # the route's cap is a ceiling, not a request
    with pytest.raises(InvalidRequest, match="600 in the completion"):  # the caller's own, within the cap
        run(capped, prompt, max_tokens=900)


def test_a_candidate_too_small_is_skipped_for_a_fallback_whose_window_holds_the_prompt() -> None:
    state, deps = run(windows(2048, 16_384), LONG_PROMPT)
    assert state.router is not None and state.router.candidates == ["echo-b"]
    assert state.invoke is not None and state.invoke.model == "echo-b"
    assert isinstance(deps.metrics, InMemoryMetrics)
    assert 'route_skips_total{model="echo",reason="context",route="default"} 1' in deps.metrics.prometheus()
    # A short prompt stays on the first model
    assert answered_by(windows(2048, 16_384), "What is the capital of France?") == "echo"


def test_when_no_candidate_fits_the_refusal_names_the_widest_window() -> None:
    with pytest.raises(InvalidRequest, match="maximum context length is 3072 tokens"):
        run(windows(2048, 3072), LONG_PROMPT)


def test_a_model_without_a_declared_window_is_left_to_decide() -> None:
    assert answered_by(windows(None, None), LONG_PROMPT) == "echo"
    # A first model without a window is tried even when the fallback's is too small
    router = run(windows(None, 2048), LONG_PROMPT)[0].router
    assert router is not None and router.candidates == ["echo"]


def test_the_floor_counts_every_word_digit_group_and_message() -> None:
    assert text_token_floor("") == 0
    assert text_token_floor("Hello, world!") == 4  # Hello / , / world / !
    assert text_token_floor("don't stop") == 2
    assert text_token_floor("1234567") == 3  # three-digit groups at most
    assert text_token_floor("a" * 64) == 2 and text_token_floor("-" * 64) == 1  # a long word: 32 bytes a token at most
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
    )
    assert prompt_token_floor(request) == (3 + 1) + 3 * 2 + 3  # words and full stop, 3 per message, 3 to prime


def test_the_refusal_reads_like_openais() -> None:
    error = context_exceeded(8192, 9000, 200)
    assert error.message == (
        "This model's maximum context length is 8192 tokens. However, you requested at least 9200 tokens "
        "(9000 in the messages, 200 in the completion). Please reduce the length of the messages or completion."
    )


EXCEEDED = "context_length_exceeded"
ANTHROPIC_MESSAGE = "prompt is too long: 210000 tokens > 200000 maximum"
OPENAI_MESSAGE = (
    "This model's maximum context length is 128000 tokens. However, your messages resulted in 130512 tokens. "
    "Please reduce the length of the messages."
)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # the openai SDK's exc.body (the error object) and OpenAI's HTTP body
        (
            {"message": OPENAI_MESSAGE, "type": "invalid_request_error", "param": "messages", "code": EXCEEDED},
            OPENAI_MESSAGE,
        ),
        ({"error": {"message": OPENAI_MESSAGE, "code": None}}, OPENAI_MESSAGE),
        # the model endpoint (llama.cpp's words, before the endpoint rewords them)
        (
            {"error": {"message": "Requested tokens (2300) exceed context window of 2048", "code": "invalid_value"}},
            "This model's maximum context length is 2048 tokens. However, your messages resulted in 2300 tokens. "
            "Please reduce the length of the messages.",
        ),
        # Anthropic
        (
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "prompt is too long: 210000 tokens > 200000 maximum",
                },
            },
            "This model's maximum context length is 200000 tokens. However, your messages resulted in 210000 tokens. "
            "Please reduce the length of the messages.",
        ),
    ],
)
def test_an_upstream_context_refusal_becomes_context_length_exceeded(body: object, message: str) -> None:
    error = upstream_context_error(body)
    assert isinstance(error, ProviderBadRequest)
    assert (error.status, error.type, error.code, error.param) == (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
    )
    assert error.message == message


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "temperature must be at most 2", "code": "invalid_value"}},
        {"message": "bad"},
        "text",
        None,
    ],
)
def test_other_upstream_errors_are_left_alone(body: object) -> None:
    assert upstream_context_error(body) is None


def test_the_model_endpoint_says_context_length_exceeded_in_openais_words() -> None:
    from model_server.engines.base import EngineInputError
    from model_server.server import input_error

    llama = input_error(EngineInputError("Requested tokens (2300) exceed context window of 2048", param="messages"))
    assert (llama.status, llama.code, llama.param) == (400, "context_length_exceeded", "messages")
    assert llama.message.startswith("This model's maximum context length is 2048 tokens. However, your messages")
    torch = input_error(EngineInputError("the prompt has 5000 tokens; this endpoint holds 4095"), context_tokens=4096)
    assert "maximum context length is 4096 tokens" in torch.message and "resulted in 5000 tokens" in torch.message
    other = input_error(EngineInputError("engine 'torch' has no JSON mode", param="json_mode"))
    assert (other.code, other.param) == ("invalid_value", "json_mode")
