"""`llm-gateway replay`: a request whose trace kept its content runs again through the chain, as
its tenant, caches bypassed, on another model when asked, and the two runs are compared: the
answers' diff, models, outcomes, tokens, cost, guard decisions (two fake models behind a fake
OpenAI upstream)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
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
from tests.support.fake_providers import Behaviour, FakeServer, Script, fake_server, ok, status


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    with fake_server("openai") as server:
        yield server


@pytest.fixture
def config_path(upstream: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-fake")
    upstream.script.reset()
    return write_config(tmp_path, upstream.base_url)


def write_config(tmp_path: Path, base_url: str) -> Path:
    model = (
        "{{provider: openai, provider_model: {name}, base_url: {url}, api_key_env: FAKE_OPENAI_KEY, price: {price}}}"
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"""storage_path: {tmp_path / "gateway.db"}
models:
  gpt-a: {model.format(name="gpt-a", url=base_url, price="{input_per_mtok: 1.0, output_per_mtok: 2.0}")}
  gpt-b: {model.format(name="gpt-b", url=base_url, price="{input_per_mtok: 0.1, output_per_mtok: 0.2}")}
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


def by_question(body: dict[str, object]) -> Behaviour:
    """gpt-a answers question i "Answer i."; gpt-b the same for even i, otherwise in its own words,
    and fails question 3."""
    question = str(body["messages"][-1]["content"])  # type: ignore[index]
    i = int(question.rsplit(" ", 1)[-1].rstrip("?"))
    if body["model"] == "gpt-a" or i % 2 == 0:
        return ok(f"Answer {i}.", prompt_tokens=20, completion_tokens=4)
    return status(500) if i == 3 else ok(f"Answer {i}, in other words.", prompt_tokens=20, completion_tokens=7)


def test_a_sample_of_a_tenants_traffic_replays_on_another_model_into_a_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-fake")
    with fake_server("openai", Script(responder=by_question)) as upstream:  # type: ignore[arg-type]
        config_path = write_config(tmp_path, upstream.base_url)
        asked = [answered(config_path, ACME_KEY, f"Mail ana@example.com the answer to question {i}") for i in range(8)]
        other = answered(config_path, GLOBEX_KEY, "Question 0")  # another tenant: never sampled
        out = tmp_path / "report"
        command = ["replay", "--tenant", "acme", "--since", "1h", "--sample", "6", "--seed", "7", "--model", "gpt-b"]
        assert main([*command, "--out", str(out), "--config", str(config_path)]) == 0
        replayed = [r.body for r in upstream.script.requests if r.body["model"] == "gpt-b"]

    printed = capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    assert report["stored"] == 8 and report["tenant"] == "acme" and report["model"] == "gpt-b"
    originals = [c["original"]["request_id"] for c in report["requests"]]
    assert len(set(originals)) == 6 and set(originals) <= set(asked) and other not in originals
    numbers = [int(str(b["messages"][-1]["content"]).rsplit(" ", 1)[-1]) for b in replayed]
    odd = [n for n in set(numbers) if n % 2]
    summary = report["summary"]
    assert summary["requests"] == 6
    assert summary["same_answer"] == 6 - len(odd)  # the even questions: the same answer
    assert summary["outcome_changed"] == (3 in numbers) and summary["models"]["replay"] == ["gpt-b"]
    assert summary["cost_usd"]["replay"] < summary["cost_usd"]["original"]
    assert summary["guards_changed"] == 0  # PII masked in the original, already masked in the replay
    assert all("[EMAIL_1]" in str(b["messages"][-1]["content"]) for b in replayed)  # masked, as kept
    changed = [c for c in report["requests"] if c["answer_diff"]]
    assert len(changed) == len(odd)
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# Replay of acme's traffic on gpt-b")
    assert all(c["original"]["request_id"] in markdown for c in changed)
    assert "+Answer 1, in other words." in markdown or 1 not in numbers
    assert "replayed 6 of 8 stored requests of acme" in printed.out
    # replays are never sampled: the same seed picks the same requests again
    with fake_server("openai", Script(responder=by_question)) as upstream:  # type: ignore[arg-type]
        again = tmp_path / "again"
        assert main([*command, "--out", str(again), "--config", str(write_config(tmp_path, upstream.base_url))]) == 0
    repeated = json.loads((again / "report.json").read_text())
    assert repeated["stored"] == 8 and [c["original"]["request_id"] for c in repeated["requests"]] == originals


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "name a request id, or --tenant"),
        (["0" * 32, "--tenant", "acme"], "not both"),
        (["--tenant", "initech"], "tenant initech is not in this configuration"),
        (["--tenant", "acme", "--sample", "0"], "--sample is 1 to"),
        (["--tenant", "acme", "--since", "yesterday"], "not an ISO date"),
        (["--tenant", "globex"], "no stored request with its content"),
        (["--tenant", "acme", "--since", "99999999999d"], "further back than a date can be"),
        (["--tenant", "acme", "--since", "\u00b2h"], "not an ISO date"),
        (["--tenant", "acme", "--model", "gpt-z"], "gpt-z is neither a route of tenant acme nor a model"),
        (["--tenant", "acme", "--out", "/dev/null/report"], "cannot write the report there"),
    ],
)
def test_a_sample_replay_refuses_what_it_cannot_do(
    config_path: Path, arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    answered(config_path, GLOBEX_KEY, "Hello?")  # a store exists; globex keeps no content
    assert main(["replay", *arguments, "--config", str(config_path)]) == 2
    assert message in capsys.readouterr().err


def test_damaged_traces_are_left_out_of_a_sample_before_anything_is_replayed(
    config_path: Path, upstream: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upstream.script.push(ok("Answer \x1b[31mred\x1b[0m."), ok("Answer two."))
    good = answered(config_path, ACME_KEY, "Question 1")
    second = answered(config_path, ACME_KEY, "Question 2")
    db = sqlite3.connect(tmp_path / "gateway.db")
    kept = json.loads(db.execute("SELECT trace FROM traces WHERE request_id = ?", (second,)).fetchone()[0])
    damaged = {
        "not-json": "{not json",
        "newer": json.dumps({**kept, "request_id": "newer", "a_later_field": 1}),
        "odd-content": json.dumps(
            {**kept, "request_id": "odd-content", "content": {"request": {"model": "default"}, "messages": "?"}}
        ),
    }
    now = time.time()
    with db:
        db.execute("UPDATE traces SET trace = ? WHERE request_id = ?", (damaged["odd-content"], second))
        db.execute("UPDATE traces SET request_id = 'odd-content' WHERE request_id = ?", (second,))
        for request_id in ("not-json", "newer"):
            db.execute(
                "INSERT INTO traces (tenant, request_id, ts, expires_at, trace) VALUES ('acme', ?, ?, ?, ?)",
                (request_id, now, now + 3600, damaged[request_id]),
            )
    db.close()
    asked = len(upstream.script.requests)
    out = tmp_path / "report"
    assert main(["replay", "--tenant", "acme", "--since", "1h", "--out", str(out), "--config", str(config_path)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [c["original"]["request_id"] for c in report["requests"]] == [good]
    assert sorted(report["unreadable"]) == ["newer", "odd-content"]  # a row that is not JSON is never sampled
    assert len(upstream.script.requests) == asked + 1
    assert "\x1b" not in (out / "report.md").read_text() and "\\x1b[31m" in (out / "report.md").read_text()
    # by id: a clear refusal, and an answer's escape sequences never reach the terminal
    assert main(["replay", "newer", "--config", str(config_path)]) == 2
    assert "cannot be read" in capsys.readouterr().err
    upstream.script.push(ok("Answer three."))
    assert main(["replay", good, "--config", str(config_path)]) == 0
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "-Answer \\x1b[31mred\\x1b[0m." in printed


def test_a_report_folder_that_cannot_be_written_is_refused_before_anything_is_replayed(
    config_path: Path, upstream: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    answered(config_path, ACME_KEY, "Question 1")
    asked = len(upstream.script.requests)
    assert main(["replay", "--tenant", "acme", "--out", str(config_path), "--config", str(config_path)]) == 2
    assert "cannot write the report there" in capsys.readouterr().err
    assert len(upstream.script.requests) == asked
