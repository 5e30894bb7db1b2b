"""A purge reaches every process that shares the store: `llm-gateway purge` (its own process) against
running gateways, and against an index open in this process. After the command returns, neither an
exact nor a semantic lookup finds a purged answer anywhere, without a restart."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from llm_gateway.adapters.local.semantic import LocalSemanticIndex
from llm_gateway.adapters.local.sqlite import SqliteStore
from llm_gateway.cache.keys import kb_tag
from llm_gateway.contracts import AssistantMessage, ChatCompletion, Choice, Usage
from llm_gateway.semantic.index import DIMENSIONS

FUTURE = 10.0**12

SERVER_CONFIG = """
storage_path: {db}
models:
  echo: {{provider: echo}}
  echo-b: {{provider: echo}}
tenants:
  acme:
    demo: true
    routes:
      default: {{model: echo}}
    semantic_cache: {{enabled: true, target_precision: 0.9}}
  globex:
    demo: true
    routes:
      default: {{model: echo}}
"""


def purge_command(config: Path, *args: str) -> str:
    """Run `llm-gateway purge` in its own process; return what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "llm_gateway.cli.main", "purge", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(DIMENSIONS).astype(np.float32)
    return vector / np.linalg.norm(vector)


def answer(text: str) -> ChatCompletion:
    return ChatCompletion(
        id="c",
        created=0,
        model="echo",
        usage=Usage(),
        choices=[Choice(message=AssistantMessage(content=text), finish_reason="stop")],
    )


def test_a_purge_command_reaches_an_index_and_a_store_open_in_another_process(tmp_path: Path) -> None:
    # Given: this process holds an index and a store on the file, with answers of two tenants,
    # two model versions and a knowledge-base tag, all found in memory
    db = tmp_path / "gw.db"
    config = tmp_path / "gw.yaml"
    config.write_text(SERVER_CONFIG.format(db=db))
    index, store = LocalSemanticIndex(db), SqliteStore(db)
    try:
        entries = {
            "acme/echo": ("acme", "echo", ()),
            "acme/echo-b": ("acme", "echo-b", ()),
            "acme/kb": ("acme", "echo", (kb_tag("v1"),)),
            "globex/echo": ("globex", "echo", ()),
        }
        for seed, (scope, (tenant, model, tags)) in enumerate(entries.items()):
            index.add(scope, tenant, model, "e", unit(seed), "q", answer(scope).model_dump_json(), FUTURE, tags)
            store.put(scope, tenant, model, answer(scope), FUTURE, tags)

        def found() -> set[str]:
            in_index = {s for seed, s in enumerate(entries) if index.search(s, unit(seed), 1, 0.0)}
            in_store = {s for s in entries if store.get(s, 0.0) is not None}
            assert in_index == in_store
            return in_index

        assert found() == set(entries)

        # When/Then: each purge command, once it returns, is seen by this process's next lookup
        assert "purged 2 cached answers" in purge_command(config, "--tenant", "acme", "--kb-version", "v1")
        assert found() == {"acme/echo", "acme/echo-b", "globex/echo"}
        assert "purged 2 cached answers" in purge_command(config, "--tenant", "acme", "--model", "echo-b")
        assert found() == {"acme/echo", "globex/echo"}
        purge_command(config, "--tenant", "acme")
        assert found() == {"globex/echo"}

        # A new answer after the purge is kept (the marker drops what was there, not what comes)
        index.add("acme/echo", "acme", "echo", "e2", unit(0), "q", answer("new").model_dump_json(), FUTURE)
        assert [c.entry_id for c in index.search("acme/echo", unit(0), 1, 0.0)] == ["e2"]
    finally:
        index.close()
        store.close()


@contextmanager
def gateway(config: Path) -> Iterator[tuple[httpx.Client, str]]:
    """`llm-gateway serve` in its own process; yields a client for it and the acme demo key."""
    env = {k: v for k, v in os.environ.items() if k != "LLM_GATEWAY_CONFIG"}
    command = [sys.executable, "-m", "llm_gateway.cli.main", "serve", "--port", "0", "--config", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=config.parent)
    try:
        assert process.stdout is not None
        url, key = "", ""
        for line in process.stdout:
            if line.startswith("ready "):
                url = line.split()[1]
            elif (match := re.fullmatch(r"tenant acme key=(\S+)\n", line)) is not None:
                key = match[1]
            if url and key:
                break
        assert url and key, f"the gateway did not start (exit code {process.poll()})"
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client, key
    finally:
        process.terminate()
        process.wait(timeout=30)


def cache_status(server: tuple[httpx.Client, str], question: str) -> str:
    client, key = server
    response = client.post(
        "/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "default", "messages": [{"role": "user", "content": question}]},
    )
    assert response.status_code == 200, response.text
    return response.headers["x-gateway-cache"]


PAIRS = [
    ("How can I lose weight fast?", "What is the fastest way to lose weight?"),
    ("What is the capital of France?", "What is France's capital?"),
]


def test_a_purge_command_reaches_every_running_gateway_on_the_store(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(SERVER_CONFIG.format(db=tmp_path / "gw.db"))
    (first_q, first_p), (second_q, second_p) = PAIRS
    with gateway(config) as one:
        # Given: the first gateway answered two questions; a second one started after (it loaded them)
        assert [cache_status(one, first_q), cache_status(one, second_q)] == ["miss", "miss"]
        with gateway(config) as two:
            # Both serve them, exactly and by meaning
            assert cache_status(one, first_q) == "exact"
            assert cache_status(two, first_p) == "semantic"
            assert cache_status(two, second_q) == "exact"
            assert cache_status(one, second_p) == "semantic"

            # When: the purge command runs against the store while both are serving
            assert "purged 4 cached answers of tenant acme" in purge_command(config, "--tenant", "acme")

            # Then: neither serves a purged answer, exactly or by meaning
            assert cache_status(one, first_q) == "miss"
            assert cache_status(two, first_p) == "miss"
            assert cache_status(two, second_q) == "miss"
            assert cache_status(one, second_p) == "miss"
