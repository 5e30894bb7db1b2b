"""`llm-gateway replay`: a request whose trace kept its content runs again through the chain, as
its tenant, caches bypassed, on another model when asked, and the two runs are compared: the
answers' diff, models, outcomes, tokens, cost, guard decisions (two fake models behind a fake
OpenAI upstream)."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_gateway.adapters.local.wiring import local_deps
from llm_gateway.cli.main import main
from llm_gateway.config import load_config
from llm_gateway.contracts import CallerContext, ChatCompletionRequest, GatewayState
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, GLOBEX_KEY, hash_key
from tests.support.fake_providers import FakeServer, fake_server, ok


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    with fake_server("openai") as server:
        yield server


@pytest.fixture
def config_path(upstream: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-fake")
    upstream.script.reset()
    model = (
        "{{provider: openai, provider_model: {name}, base_url: {url}, api_key_env: FAKE_OPENAI_KEY, price: {price}}}"
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"""storage_path: {tmp_path / "gateway.db"}
models:
  gpt-a: {model.format(name="gpt-a", url=upstream.base_url, price="{input_per_mtok: 1.0, output_per_mtok: 2.0}")}
  gpt-b: {model.format(name="gpt-b", url=upstream.base_url, price="{input_per_mtok: 0.1, output_per_mtok: 0.2}")}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes: {{default: {{model: gpt-a}}}}
    allowed_models: [gpt-b]
    guards: {{pii: {{enabled: true, default: mask}}}}
    traces: {{store_content: true}}
  globex:
    api_keys: [{{id: k1, sha256: {hash_key(GLOBEX_KEY)}}}]
    routes: {{default: {{model: gpt-a}}}}
"""
    )
    return path


def answered(config_path: Path, key: str, content: str) -> str:
    """Run one request through the chain as `serve` would (same store); its request id."""
    state = GatewayState(
        request_id=uuid.uuid4().hex,
        received_at=time.time(),
        request=ChatCompletionRequest.model_validate(
            {"model": "default", "messages": [{"role": "user", "content": content}], "temperature": 0.2}
        ),
        caller=CallerContext(api_key_sha256=hash_key(key)),
    )
    with contextlib.ExitStack() as stack:
        InProcessRunner(local_deps(load_config(str(config_path)), stack)).run(state)
    return state.request_id


def test_a_request_replays_on_another_model_and_the_difference_is_reported(
    config_path: Path, upstream: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    upstream.script.push(ok("Paris is the capital.", prompt_tokens=20, completion_tokens=5))
    request_id = answered(config_path, ACME_KEY, "Mail ana@example.com: what is the capital of France?")
    upstream.script.push(ok("The capital is Paris.", prompt_tokens=20, completion_tokens=6))

    assert main(["replay", request_id, "--model", "gpt-b", "--config", str(config_path), "--json"]) == 0
    comparison = json.loads(capsys.readouterr().out)
    before, after = comparison["original"], comparison["replay"]
    assert (before["model"], after["model"]) == ("gpt-a", "gpt-b")
    assert before["outcome"] == after["outcome"] == "ok" and after["request_id"] != request_id
    assert after["cost_usd"] < before["cost_usd"] and after["tokens"] == "20 in / 6 out"
    assert "-Paris is the capital." in comparison["answer_diff"]
    assert "+The capital is Paris." in comparison["answer_diff"]
    assert "pii:mask" in before["guards"]
    replayed = upstream.script.last.body
    assert replayed["model"] == "gpt-b" and replayed["temperature"] == 0.2
    assert replayed["messages"][-1]["content"] == "Mail [EMAIL_1]: what is the capital of France?"  # masked


def test_a_replay_on_the_same_model_bypasses_the_cache(
    config_path: Path, upstream: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    upstream.script.push(ok("Blue."), ok("Green."))
    request_id = answered(config_path, ACME_KEY, "Name a colour.")
    assert main(["replay", request_id, "--config", str(config_path)]) == 0
    out = capsys.readouterr().out
    assert len(upstream.script.requests) == 2  # asked again, not served from the exact cache
    assert "-Blue." in out and "+Green." in out and out.startswith("tenant acme")


def test_a_request_without_kept_content_cannot_be_replayed(
    config_path: Path, upstream: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    upstream.script.push(ok("Hello."))
    request_id = answered(config_path, GLOBEX_KEY, "Hello?")
    assert main(["replay", request_id, "--config", str(config_path)]) == 2
    assert "keeps no content" in capsys.readouterr().err
    assert main(["replay", "0" * 32, "--config", str(config_path)]) == 2
