"""The API surfaces' tests (tools, Anthropic's Messages API) run against a fake OpenAI and a fake
Anthropic upstream, each speaking its own wire format; `upstream_models` names the two models
that reach them (`gpt` and `claude`) in a gateway config."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_providers import FakeServer, fake_server

Upstreams = tuple[FakeServer, FakeServer]


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with fake_server("openai") as gpt, fake_server("anthropic") as claude:
        yield gpt, claude


@pytest.fixture(autouse=True)
def upstream_keys(upstreams: Upstreams, monkeypatch: pytest.MonkeyPatch) -> None:
    """The providers' keys set, and both scripts emptied, before each test."""
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-fake-openai")
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "sk-fake-anthropic")
    for server in upstreams:
        server.script.reset()


def upstream_models(upstreams: Upstreams) -> str:
    """YAML lines under `models:` for `gpt` (the OpenAI fake) and `claude` (the Anthropic fake)."""
    gpt, claude = upstreams
    return (
        f"  gpt: {{provider: openai, provider_model: gpt-fake, base_url: {gpt.base_url},\n"
        "        api_key_env: FAKE_OPENAI_KEY, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}\n"
        f"  claude: {{provider: anthropic, provider_model: claude-fake, base_url: {claude.base_url},\n"
        "           api_key_env: FAKE_ANTHROPIC_KEY, price: {input_per_mtok: 3.0, output_per_mtok: 15.0}}\n"
    )
