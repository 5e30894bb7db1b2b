"""Shared builders: a configuration, dependencies on real SQLite, and request states."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.adapters.local.memory import MemoryRateLimiter
from llm_gateway.adapters.local.sqlite import SqliteStore
from llm_gateway.cli.store_location import DATA_DIR_ENV
from llm_gateway.config import GatewayConfig, hash_key, parse_config
from llm_gateway.contracts import CallerContext, ChatCompletionRequest, GatewayState
from llm_gateway.deps import Deps
from llm_gateway.providers.base import default_registry
from tests.support.fake_providers import FakeServer, fake_server

# A relative storage_path (the shipped config's) is taken from this folder, never from the home
# folder of whoever runs the tests; the CLI's subprocesses inherit it.
os.environ[DATA_DIR_ENV] = tempfile.mkdtemp(prefix="llm-gateway-tests-")
atexit.register(shutil.rmtree, os.environ[DATA_DIR_ENV], ignore_errors=True)

ACME_KEY = "sk-test-acme"
GLOBEX_KEY = "sk-test-globex"

BASE_CONFIG = f"""
models:
  echo:
    provider: echo
    price: {{input_per_mtok: 1.0, cached_input_per_mtok: 0.5, output_per_mtok: 2.0}}
  echo-b:
    provider: echo
    price: {{input_per_mtok: 3.0, output_per_mtok: 4.0}}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes:
      default: {{model: echo, fallbacks: [echo-b]}}
    allowed_models: [echo-b]
    rate_limit: {{requests_per_minute: 6000, burst: 1000}}
  globex:
    api_keys: [{{id: k1, sha256: {hash_key(GLOBEX_KEY)}}}]
    routes:
      default: {{model: echo}}
    input_blocklist: {{keywords: [codename]}}
    output_blocklist: {{keywords: [forbidden], patterns: ['\\b\\d{{3}}-\\d{{2}}-\\d{{4}}\\b']}}
"""


def make_config(extra_yaml: str = "") -> GatewayConfig:
    return parse_config(BASE_CONFIG + extra_yaml)


def guarded_config(guards: str, checker_url: str | None = None, checker: str = "checker") -> GatewayConfig:
    """BASE_CONFIG with `guards` (a YAML flow mapping) for both tenants and, with `checker_url`, a
    model named `checker` on a fake OpenAI server (a judge or a consistency checker)."""
    text = BASE_CONFIG
    if checker_url is not None:
        text = text.replace(
            "models:\n",
            f"models:\n  {checker}:\n    provider: openai\n    provider_model: gpt-fake\n    base_url: {checker_url}\n"
            "    api_key_env: FAKE_OPENAI_KEY\n    price: {input_per_mtok: 0.2, output_per_mtok: 0.6}\n",
            1,
        )
    return parse_config(text.replace("    routes:\n", f"    guards: {guards}\n    routes:\n"))


@pytest.fixture(scope="module")
def checker_server() -> Iterator[FakeServer]:
    with fake_server("openai") as server:
        yield server


@pytest.fixture
def checker(checker_server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    """A fake OpenAI server for checking models (judge, consistency), its script emptied."""
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-test-checker")
    checker_server.script.reset()
    return checker_server


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def make_deps(config: GatewayConfig | None = None, db: str | Path = ":memory:", **kwargs: Any) -> Deps:
    store = SqliteStore(db)
    return Deps(
        config=config or make_config(),
        cache=store,
        limiter=MemoryRateLimiter(),
        usage=store,
        audit=store,
        providers=default_registry(),
        sleep=kwargs.pop("sleep", RecordingSleep()),
        **kwargs,
    )


def make_state(content: str = "hello gateway", key: str | None = ACME_KEY, **request: Any) -> GatewayState:
    body: dict[str, Any] = {"model": "default", "messages": [{"role": "user", "content": content}]}
    body.update(request)
    return GatewayState(
        request_id=uuid.uuid4().hex,
        received_at=time.time(),
        request=ChatCompletionRequest.model_validate(body),
        caller=CallerContext(api_key_sha256=hash_key(key) if key else None, client_ip="198.51.100.4"),
    )


def store_of(deps: Deps) -> SqliteStore:
    """The SQLite store behind a Deps built by `make_deps` (for reading audit and usage rows)."""
    assert isinstance(deps.audit, SqliteStore)
    return deps.audit


@pytest.fixture
def deps() -> Deps:
    return make_deps()


@pytest.fixture
def state_factory() -> Callable[..., GatewayState]:
    return make_state
