"""Batch jobs through the providers' batch APIs (OpenAI Batch, Anthropic Message Batches), on
the wire-compatible fakes with the real SDKs: one provider batch per model, polling with backoff,
per-line upstream errors, output moderation per line, batch prices, and a batch the provider
refuses as a whole answered line by line instead."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.adapters.local.batch import FolderObjects, SqliteBatchJobs
from llm_gateway.batch.runner import BatchRunner, poll_delay_s
from llm_gateway.config import parse_config
from tests.conftest import ACME_KEY, RecordingSleep, hash_key, make_deps, store_of
from tests.support.batch_files import chat_line
from tests.support.fake_providers import FakeServer, fake_server, ok, status


@pytest.fixture(scope="module")
def claude_server() -> Iterator[FakeServer]:
    with fake_server("anthropic") as server:
        yield server


@pytest.fixture
def claude(claude_server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "sk-ant-test")
    claude_server.script.reset()
    return claude_server


def _runner(openai_url: str, anthropic_url: str, tmp_path: Path) -> BatchRunner:
    config = parse_config(
        f"""
models:
  gpt: {{provider: openai, provider_model: gpt-fake, base_url: {openai_url}, api_key_env: FAKE_OPENAI_KEY,
        price: {{input_per_mtok: 1000.0, output_per_mtok: 1000.0}}}}
  claude: {{provider: anthropic, provider_model: claude-fake, base_url: {anthropic_url},
           api_key_env: FAKE_ANTHROPIC_KEY, price: {{input_per_mtok: 2000.0, output_per_mtok: 2000.0}}}}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes: {{default: {{model: gpt}}}}
    allowed_models: [claude]
    output_blocklist: {{keywords: [forbidden]}}
"""
    )
    deps = make_deps(config, db=tmp_path / "gateway.db")
    return BatchRunner(deps, SqliteBatchJobs(tmp_path / "gateway.db"), FolderObjects(tmp_path / "bucket"))


def _line(i: int, model: str, content: Any = None) -> str:
    return chat_line(f"q{i}", content or f"question {i}", model, max_tokens=50)


def _outputs(runner: BatchRunner, key: str | None) -> list[dict[str, Any]]:
    assert key is not None
    return [json.loads(line) for line in runner.objects.get(key)[0].decode().splitlines()]


def test_lines_go_to_each_models_batch_api_and_come_back_moderated_in_order(
    checker: FakeServer, claude: FakeServer, tmp_path: Path
) -> None:
    runner = _runner(checker.base_url, claude.url, tmp_path)
    checker.script.batches.polls_until_done = claude.script.batches.polls_until_done = 3
    # gpt lines 0, 2, 4, 6, 8; claude lines 1, 3, 5, 7, 9. gpt's 2nd request fails upstream,
    # claude's 3rd answers with a blocklisted word.
    checker.script.push(ok("a0"), status(400, message="bad prompt"), ok("a4"), ok("a6"), ok("a8"))
    claude.script.push(ok("c1"), ok("c3"), ok("the forbidden answer"), ok("c7"), ok("c9"))
    lines = [_line(i, "default" if i % 2 == 0 else "claude") for i in range(10)]
    runner.objects.put("batches/in/acme/mixed.jsonl", ("\n".join(lines) + "\n").encode())
    job, _ = runner.submit("batches/in/acme/mixed.jsonl")
    done = runner.run(job.job_id)
    assert done.status == "completed"

    (openai_batch,) = checker.script.batches.batches.values()
    (anthropic_batch,) = claude.script.batches.batches.values()
    assert [r["custom_id"] for r in openai_batch.requests] == [f"{job.job_id}-{i}" for i in (0, 2, 4, 6, 8)]
    assert {r["body"]["model"] for r in openai_batch.requests} == {"gpt-fake"}
    assert openai_batch.metadata == {"llm_gateway_batch": f"{job.job_id}:gpt:0"}
    assert [r["params"]["model"] for r in anthropic_batch.requests] == ["claude-fake"] * 5
    assert all("timeout" not in r["params"] for r in anthropic_batch.requests)
    assert not checker.script.calls("/v1/chat/completions") and not claude.script.calls("/v1/messages")
    assert isinstance(runner.deps.sleep, RecordingSleep)
    assert runner.deps.sleep.delays == [poll_delay_s(0), poll_delay_s(1), poll_delay_s(2)]  # 5, 10, 20 s

    results = _outputs(runner, done.results_key)
    assert [r["custom_id"] for r in results] == ["q0", "q1", "q3", "q4", "q5", "q6", "q7", "q8", "q9"]
    texts = {r["custom_id"]: r["response"]["body"]["choices"][0] for r in results}
    assert texts["q0"]["message"]["content"] == "a0" and texts["q1"]["message"]["content"] == "c1"
    assert texts["q5"]["finish_reason"] == "content_filter" and "content" not in texts["q5"]["message"]
    (error,) = _outputs(runner, done.errors_key)
    assert error["custom_id"] == "q2" and error["error"]["code"] == "upstream_bad_request"
    assert "bad prompt" in error["error"]["message"]
    usage = dict(store_of(runner.deps)._db.execute("SELECT request_id, cost_usd FROM usage").fetchall())
    # 12 + 6 tokens at half the online price: gpt 1,000 $/Mtok, claude 2,000 $/Mtok.
    assert usage[f"{job.job_id}-0"] == pytest.approx(18 * 500 / 1e6)
    assert usage[f"{job.job_id}-1"] == pytest.approx(18 * 1000 / 1e6)
    assert f"{job.job_id}-2" not in usage and len(usage) == 9


def test_a_batch_the_provider_refuses_whole_is_answered_line_by_line(
    checker: FakeServer, claude: FakeServer, tmp_path: Path
) -> None:
    runner = _runner(checker.base_url, claude.url, tmp_path)
    image = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
    lines = [_line(0, "claude"), _line(1, "claude", image), _line(2, "claude")]
    runner.objects.put("batches/in/acme/images.jsonl", ("\n".join(lines) + "\n").encode())
    job, _ = runner.submit("batches/in/acme/images.jsonl")
    done = runner.run(job.job_id)
    assert not claude.script.batches.batches  # the image line made the whole batch impossible
    assert len(claude.script.calls("/v1/messages")) == 2  # the two text lines, answered directly
    assert [r["custom_id"] for r in _outputs(runner, done.results_key)] == ["q0", "q2"]
    (error,) = _outputs(runner, done.errors_key)
    assert error["custom_id"] == "q1" and error["response"]["status_code"] == 400
    usage = dict(store_of(runner.deps)._db.execute("SELECT request_id, cost_usd FROM usage").fetchall())
    assert usage[f"{job.job_id}-0"] == pytest.approx(18 * 2000 / 1e6)  # answered online: the online price


def test_lines_the_provider_batch_could_not_answer_are_answered_online(
    checker: FakeServer, claude: FakeServer, tmp_path: Path
) -> None:
    runner = _runner(checker.base_url, claude.url, tmp_path)
    # In the provider batch: the 2nd line overloaded upstream (503), the 3rd refused (400).
    checker.script.push(ok("b0"), status(503), status(400, message="bad"), ok("b3"))
    lines = [_line(i, "default") for i in range(4)]
    runner.objects.put("batches/in/acme/retry.jsonl", ("\n".join(lines) + "\n").encode())
    job, _ = runner.submit("batches/in/acme/retry.jsonl")
    checker.script.push(ok("online answer"))  # what the online endpoint says to the retried line
    done = runner.run(job.job_id)
    results = {r["custom_id"]: r for r in _outputs(runner, done.results_key)}
    assert sorted(results) == ["q0", "q1", "q3"]
    assert results["q1"]["response"]["body"]["choices"][0]["message"]["content"] == "online answer"
    online = checker.script.calls("/v1/chat/completions")
    assert [c.body["messages"][0]["content"] for c in online] == ["question 1"]
    (error,) = _outputs(runner, done.errors_key)
    assert error["custom_id"] == "q2" and error["error"]["code"] == "upstream_bad_request"
    usage = dict(store_of(runner.deps)._db.execute("SELECT request_id, cost_usd FROM usage").fetchall())
    assert usage[f"{job.job_id}-1"] == pytest.approx(18 * 1000 / 1e6)  # online: the online price
    assert usage[f"{job.job_id}-0"] == pytest.approx(18 * 500 / 1e6)
