"""Context-length refusals over HTTP: the openai SDK gets OpenAI's `context_length_exceeded` from
the gateway's own check, and from the local model endpoint (its exact token count) when the
gateway's floor let the prompt through."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest

from llm_gateway.cli.supervisor import EndpointSupervisor, local_models, with_endpoint_url
from llm_gateway.config import GatewayConfig, hash_key, parse_config
from llm_gateway.context_window import text_token_floor
from llm_gateway.http.app import create_app
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, make_deps
from tests.support.fake_providers import Script, fake_server, status
from tests.support.servers import serve

REPO = Path(__file__).parents[2]
OPENAI_REFUSAL = (
    "This model's maximum context length is 128000 tokens. However, your messages resulted in 130512 tokens. "
    "Please reduce the length of the messages."
)

CONFIG = f"""
models:
  small: {{provider: echo, context_tokens: 2048}}
  local: {{provider: sagemaker, endpoint: local, timeout_s: 60}}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes:
      default: {{model: small}}
      local: {{model: local}}
"""


@contextmanager
def gateway_url(config: GatewayConfig) -> Iterator[str]:
    with serve(create_app(InProcessRunner(make_deps(config)))) as url:
        yield url + "/v1"


def refusal(base_url: str, route: str, content: str, **fields: object) -> openai.BadRequestError:
    client = openai.OpenAI(base_url=base_url, api_key=ACME_KEY, max_retries=0, timeout=120)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=route, messages=[{"role": "user", "content": content}], **fields)  # type: ignore[call-overload]
    return refused.value


def test_the_sdk_is_told_the_window_before_any_model_is_called() -> None:
    with gateway_url(parse_config(CONFIG)) as base_url:
        error = refusal(base_url, "default", "Please summarise the following notes. " * 600)
        assert (error.status_code, error.code, error.param, error.type) == (
            400,
            "context_length_exceeded",
            "messages",
            "invalid_request_error",
        )
        assert error.body["message"].startswith("This model's maximum context length is 2048 tokens. However, your")  # type: ignore[index]
        asked = refusal(base_url, "default", "word " * 1800, max_tokens=400)
        assert "you requested at least 2206 tokens (1806 in the messages, 400 in the completion)" in asked.message


@pytest.mark.model
def test_the_floor_is_never_above_smollm2s_own_count() -> None:
    from llama_cpp import Llama

    from model_server.engines.packaged import packaged_model_path

    vocab = Llama(model_path=str(packaged_model_path()), vocab_only=True, verbose=False)
    texts = {
        "python": (REPO / "layers/core/python/llm_gateway/config.py").read_text(),
        "markdown": (REPO / "README.md").read_text(),
        "json": json.dumps([{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(300)]),
        "digits": "31415926535897932384626433832795028841971693993751" * 40,
        "cjk": "这是一个关于人工智能的测试句子，我们想知道分词器如何处理中文文本。" * 40,  # noqa: RUF001
        "base64": base64.b64encode(bytes(range(256)) * 12).decode(),
        "rules": ("=" * 80 + "\n" + "-" * 80 + "\n") * 20,
        "prose": "The committee reviewed the quarterly figures and asked for a revised forecast. " * 100,
    }
    for name, text in texts.items():
        real = len(vocab.tokenize(text.encode(), add_bos=False, special=False))
        assert text_token_floor(text) <= real, name


@pytest.mark.model
def test_the_local_model_refuses_past_the_floor_with_its_exact_count() -> None:
    """50 digits a line: the floor counts a token per three digits, SmolLM2 one per digit. The gateway
    lets the prompt through; the endpoint's own refusal reaches the client as the same error."""
    config = parse_config(CONFIG)
    with EndpointSupervisor(local_models(config)) as endpoint:
        assert endpoint.context_tokens == 2048  # as the endpoint reports it on /ping
        config = with_endpoint_url(config, endpoint.url, context_tokens=endpoint.context_tokens)
        digits = "31415926535897932384626433832795028841971693993751" * 80  # 4,000 digits, a floor of 1,334
        with gateway_url(config) as base_url:
            error = refusal(base_url, "local", digits)
            assert (error.code, error.param) == ("context_length_exceeded", "messages")
            assert error.body["message"].startswith("This model's maximum context length is 2048 tokens. However, your")  # type: ignore[index]
            assert "resulted in 40" in error.message  # the endpoint's count: 4,000 digits and the template


@pytest.mark.parametrize(
    ("kind", "refusal_text", "limit"),
    [
        ("openai", OPENAI_REFUSAL, "128000"),
        ("anthropic", "prompt is too long: 210000 tokens > 200000 maximum", "200000"),
    ],
)
def test_a_providers_own_context_refusal_reaches_the_client_as_context_length_exceeded(
    kind: str, refusal_text: str, limit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model without `context_tokens` is not checked by the gateway: its provider refuses."""
    monkeypatch.setenv("FAKE_KEY", "sk-fake")
    with fake_server(kind, Script(status(400, message=refusal_text))) as upstream:  # type: ignore[arg-type]
        config = parse_config(
            f"""
models:
  hosted: {{provider: {kind}, provider_model: fake, base_url: {upstream.base_url}, api_key_env: FAKE_KEY}}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes: {{default: {{model: hosted}}}}
"""
        )
        with gateway_url(config) as base_url:
            error = refusal(base_url, "default", "Summarise the attached annual report.")
    assert (error.status_code, error.code, error.param) == (400, "context_length_exceeded", "messages")
    assert f"maximum context length is {limit} tokens" in error.body["message"]  # type: ignore[index]
