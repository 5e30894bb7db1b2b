"""Batch jobs on the embedded default: a local folder as the bucket, the job table on SQLite, the
chain's steps per line against a wire-compatible OpenAI server. Invalid lines, refusals and cache
hits, results in input order, batch prices, resuming after a crash, one job per object version."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.adapters.local.batch import FolderObjects, SqliteBatchJobs
from llm_gateway.batch.runner import BatchRejected, BatchRunner, job_id_for
from llm_gateway.cli.main import main
from llm_gateway.config import parse_config
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, GLOBEX_KEY, hash_key, make_deps, make_state, store_of
from tests.support.batch_files import chat_line
from tests.support.fake_providers import FakeServer

LINES = 40
INVALID = {7: "not json {", 13: '{"custom_id": "x13", "method": "POST", "url": "/v1/embeddings", "body": {}}'}
BLOCKED = 21  # carries the blocklisted word
CACHED = (3, 4, 30)  # asked online first: the batch gets the cached answers


def _config(url: str, batch_api: bool = True) -> Any:
    return parse_config(
        f"""
models:
  gpt: {{provider: openai, provider_model: gpt-fake, base_url: {url}, api_key_env: FAKE_OPENAI_KEY,
        batch_api: {str(batch_api).lower()}, price: {{input_per_mtok: 1000.0, output_per_mtok: 1000.0}}}}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes: {{default: {{model: gpt}}}}
    input_blocklist: {{keywords: [codename]}}
    rate_limit: {{requests_per_minute: 1, burst: 3}}  # the online warm-up fits, a batch would not
  globex:
    api_keys: [{{id: k1, sha256: {hash_key(GLOBEX_KEY)}}}]
    routes: {{default: {{model: gpt}}}}
"""
    )


def _question(i: int) -> str:
    return f"Question number {i}: what is {i} plus {i}?" + (" The codename is blue." if i == BLOCKED else "")


def _file(duplicate_last: bool = True) -> bytes:
    rows = []
    for i in range(LINES):
        if i in INVALID:
            rows.append(INVALID[i])
            continue
        rows.append(chat_line(f"req-{i}", _question(i), max_tokens=20))
    if duplicate_last:
        rows.append(rows[0])  # a repeated custom_id is refused, the first one runs
    return ("\n".join(rows) + "\n").encode()


@pytest.fixture(params=[True, False], ids=["provider-batch-api", "direct"])
def setup(checker: FakeServer, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[BatchRunner, FakeServer, Path]:
    deps = make_deps(_config(checker.base_url, request.param), db=tmp_path / "gateway.db")
    for i in CACHED:  # the online path answers these first, then the batch reuses the answers
        InProcessRunner(deps).run(make_state(_question(i), max_tokens=20))
    checker.script.reset()
    objects = FolderObjects(tmp_path / "bucket")
    objects.put("batches/in/acme/job.jsonl", _file())
    return BatchRunner(deps, SqliteBatchJobs(tmp_path / "gateway.db"), objects), checker, tmp_path


def _asked(checker: FakeServer) -> list[str]:
    """The questions the model received, online or inside provider batches."""
    online = [r.body["messages"][0]["content"] for r in checker.script.calls("/v1/chat/completions")]
    batched = [
        line["body"]["messages"][0]["content"]
        for batch in checker.script.batches.batches.values()
        for line in batch.requests
    ]
    return online + batched


def _per_line_usd(runner: BatchRunner) -> float:
    """12 + 6 tokens at 1,000 $/Mtok: half through the provider's batch API, full otherwise."""
    return 18 * 1000 / 1_000_000 / (2 if runner.deps.config.models["gpt"].uses_batch_api() else 1)


def _read(runner: BatchRunner, key: str | None) -> list[dict[str, Any]]:
    assert key is not None
    data, _ = runner.objects.get(key)
    return [json.loads(line) for line in data.decode().splitlines()]


def test_a_batch_answers_valid_lines_in_order_and_lists_the_rest_as_errors(
    setup: tuple[BatchRunner, FakeServer, Path],
) -> None:
    runner, checker, _ = setup
    job, created = runner.submit("batches/in/acme/job.jsonl")
    assert created and (job.requests, job.invalid) == (LINES - 2, 3)
    done = runner.run(job.job_id)
    assert done.status == "completed"
    results = _read(runner, done.results_key)
    expected = [f"req-{i}" for i in range(LINES) if i not in INVALID and i != BLOCKED]
    assert [r["custom_id"] for r in results] == expected  # input order, one line each
    assert all(r["response"]["status_code"] == 200 and r["error"] is None for r in results)
    errors = _read(runner, done.errors_key)
    assert [(e.get("line"), e["error"]["code"]) for e in errors] == [
        (8, "invalid_json"),
        (14, "invalid_request"),
        (None, "blocklist"),
        (41, "duplicate_custom_id"),
    ]
    assert errors[2]["custom_id"] == f"req-{BLOCKED}" and errors[2]["response"]["status_code"] == 400
    # Cache hits were not sent to the model; everything else was, once; no online rate limit applied.
    asked = _asked(checker)
    assert len(asked) == len(expected) - len(CACHED) and not {_question(i) for i in CACHED} & set(asked)
    usage = store_of(runner.deps)._db.execute("SELECT request_id, cost_usd FROM usage").fetchall()
    batch_usage = {rid: cost for rid, cost in usage if rid.startswith(job.job_id)}
    assert len(batch_usage) == len(asked)
    assert sorted(batch_usage.values()) == pytest.approx([_per_line_usd(runner)] * len(asked))
    audit = store_of(runner.deps)._db.execute("SELECT outcome FROM audit WHERE request_id LIKE 'batch_%'").fetchall()
    assert sorted(o for (o,) in audit).count("cache_hit") == len(CACHED)


def test_the_same_object_version_never_starts_a_second_job(setup: tuple[BatchRunner, FakeServer, Path]) -> None:
    runner, _, _ = setup
    first, created = runner.submit("batches/in/acme/job.jsonl")
    again, created_again = runner.submit("batches/in/acme/job.jsonl")
    assert created and not created_again and again.job_id == first.job_id
    assert len(runner.jobs.jobs("acme")) == 1
    runner.objects.put("batches/in/acme/job.jsonl", _file(duplicate_last=False))  # a new version: a new job
    third, created_third = runner.submit("batches/in/acme/job.jsonl")
    assert created_third and third.job_id != first.job_id
    with pytest.raises(BatchRejected, match="no tenant 'nobody'"):
        runner.objects.put("batches/in/nobody/x.jsonl", b"{}")
        runner.submit("batches/in/nobody/x.jsonl")
    with pytest.raises(BatchRejected):
        runner.submit("uploads/acme/x.jsonl")
    assert first.job_id == job_id_for("acme", "batches/in/acme/job.jsonl", first.version)


class Crash(Exception):
    """Stands for the process dying (a Lambda timeout, a killed CLI)."""


@pytest.mark.parametrize("crash_at", [12, 80])
def test_a_job_killed_midway_resumes_with_nothing_lost_repeated_or_charged_twice(
    setup: tuple[BatchRunner, FakeServer, Path], monkeypatch: pytest.MonkeyPatch, crash_at: int
) -> None:
    """The process dies at the `crash_at`-th line move after prepare. Direct path: 34 moves, the
    12th line answered and charged but not marked. Provider batch: 34 lines recorded as members,
    34 given the batch's id, then 34 collected: the 12th move dies before the batch exists, the
    80th after the 12th collected line was charged but not marked."""
    runner, checker, tmp_path = setup
    batch_api = runner.deps.config.models["gpt"].uses_batch_api()
    if not batch_api and crash_at == 80:
        pytest.skip("the direct path makes 34 moves")
    runner.parallel = 1
    job, _ = runner.submit("batches/in/acme/job.jsonl")
    runner.prepare(job.job_id)
    real_advance = runner.jobs.advance
    moves = {"n": 0}

    def dying_advance(job_id: str, index: int, expected: Any, **changes: Any) -> bool:
        moves["n"] += 1
        if moves["n"] == crash_at:
            raise Crash
        return real_advance(job_id, index, expected, **changes)

    monkeypatch.setattr(runner.jobs, "advance", dying_advance)
    with pytest.raises(Crash):
        runner.dispatch(job.job_id)
        while not runner.poll(job.job_id):
            pass
    assert runner.complete(job.job_id).status == "running"  # not every line is done: nothing written
    counts = runner.counts(job.job_id)
    assert counts.done < counts.total
    monkeypatch.setattr(runner.jobs, "advance", real_advance)

    # A fresh worker (new stores on the same files) picks the job up where it stopped.
    deps = make_deps(runner.deps.config, db=tmp_path / "gateway.db")
    resumed = BatchRunner(deps, SqliteBatchJobs(tmp_path / "gateway.db"), FolderObjects(tmp_path / "bucket"))
    done = resumed.run(job.job_id)
    assert done.status == "completed"
    results = _read(resumed, done.results_key)
    ids = [r["custom_id"] for r in results]
    assert len(ids) == len(set(ids)) == LINES - len(INVALID) - 1
    answered_by_model = LINES - len(INVALID) - 1 - len(CACHED)
    repeated = 0 if batch_api else 1  # directly: the line caught mid-move was asked twice
    assert len(_asked(checker)) == answered_by_model + repeated
    usage = (
        store_of(deps)
        ._db.execute("SELECT request_id, cost_usd FROM usage WHERE request_id LIKE ?", (job.job_id + "%",))
        .fetchall()
    )
    assert len(usage) == answered_by_model  # ... and charged once
    assert sum(cost for _, cost in usage) == pytest.approx(answered_by_model * _per_line_usd(resumed))
    assert resumed.run(job.job_id).status == "completed"  # running a completed job again changes nothing
    assert len(_asked(checker)) == answered_by_model + repeated
    assert len(checker.script.batches.batches) == (1 if batch_api else 0)  # never a second provider batch


def test_a_file_that_is_not_a_batch_fails_the_job_with_the_reason(setup: tuple[BatchRunner, FakeServer, Path]) -> None:
    runner, _, _ = setup
    runner.objects.put("batches/in/acme/binary.jsonl", b"\xff\xfe\x00")
    job, created = runner.submit("batches/in/acme/binary.jsonl")
    assert created and job.status == "failed" and "not UTF-8" in (job.message or "")
    runner.objects.put("batches/in/acme/empty.jsonl", b"\n\n")
    empty, _ = runner.submit("batches/in/acme/empty.jsonl")
    assert empty.status == "failed" and "no request" in (empty.message or "")


def test_the_cli_submits_runs_with_a_progress_bar_and_resumes_by_submitting_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"storage_path: {tmp_path / 'store' / 'gateway.db'}\n"
        "models:\n  echo: {provider: echo, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}\n"
        "tenants:\n  acme:\n    routes: {default: {model: echo}}\n",
        encoding="utf-8",
    )
    source = tmp_path / "requests.jsonl"
    rows = [chat_line(f"r{i}", f"say {i}") for i in range(12)]
    source.write_text("\n".join([*rows[:4], "{oops", *rows[4:]]) + "\n", encoding="utf-8")
    base = ["--config", str(config)]
    assert main(["batch", "submit", str(source), "--tenant", "acme", *base]) == 0
    out = capsys.readouterr().out
    job_id = re.search(r"created job (batch_\w+) \(12 requests, 1 invalid\)", out).group(1)  # type: ignore[union-attr]
    assert "13/13" in out and "completed: 12 answered, 1 errors" in out  # the progress bar's last state
    assert main(["batch", "results", job_id, *base]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["custom_id"] for a in answers] == [f"r{i}" for i in range(12)]
    assert answers[3]["response"]["body"]["choices"][0]["message"]["content"] == "say 3"
    assert main(["batch", "results", job_id, "--errors", *base]) == 0
    assert json.loads(capsys.readouterr().out)["line"] == 5
    assert main(["batch", "submit", str(source), "--tenant", "acme", *base]) == 0  # the same file: the same job
    assert f"found job {job_id}" in capsys.readouterr().out
    assert main(["batch", "status", *base]) == 0
    assert capsys.readouterr().out.startswith(f"{job_id} acme completed batches/in/acme/requests.jsonl: 13 done")
    assert main(["batch", "submit", str(source), "--tenant", "nobody", *base]) == 2
    assert main(["batch", "results", "batch_missing", *base]) == 2


def test_a_step_stops_at_its_deadline_and_the_next_step_goes_on(setup: tuple[BatchRunner, FakeServer, Path]) -> None:
    runner, _, _ = setup
    job, _ = runner.submit("batches/in/acme/job.jsonl")
    moved, waiting = runner.step(job.job_id, deadline=time.monotonic() - 1)  # a function out of time
    assert moved.status == "running" and not waiting
    assert runner.counts(job.job_id).by_state["new"] == job.requests  # nothing was taken
    steps = 0
    while runner.step(job.job_id)[0].status == "running":
        steps += 1
        assert steps < 10
    assert runner.counts(job.job_id).done == job.requests + job.invalid


def test_a_tenant_reads_its_batch_jobs_over_the_api_and_no_one_elses(
    setup: tuple[BatchRunner, FakeServer, Path],
) -> None:
    import httpx

    from llm_gateway.http.app import create_app
    from tests.support.servers import serve

    runner, _, _ = setup
    job, _ = runner.submit("batches/in/acme/job.jsonl")
    runner.prepare(job.job_id)
    runner.deps.batch_jobs = runner.jobs
    with serve(create_app(InProcessRunner(runner.deps))) as url:

        def get(path: str, key: str | None = ACME_KEY) -> httpx.Response:
            return httpx.get(url + path, headers={"Authorization": f"Bearer {key}"} if key else {})

        running = get(f"/v1/batches/{job.job_id}").json()
        assert (running["object"], running["status"], running["output_file"]) == ("batch", "in_progress", None)
        refused_or_cached = len(CACHED) + 1 + 3  # cache hits, the blocked line, the invalid ones
        assert running["request_counts"] == {"total": LINES + 1, "completed": len(CACHED), "failed": 4}
        assert refused_or_cached == running["request_counts"]["completed"] + running["request_counts"]["failed"]
        runner.run(job.job_id)
        done = get(f"/v1/batches/{job.job_id}").json()
        assert done["status"] == "completed" and done["output_file"].endswith("/results.jsonl")
        assert done["request_counts"] == {"total": LINES + 1, "completed": LINES - 3, "failed": 4}
        assert [b["id"] for b in get("/v1/batches").json()["data"]] == [job.job_id]
        other = get(f"/v1/batches/{job.job_id}", GLOBEX_KEY)  # another tenant: as if it did not exist
        assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
        assert get("/v1/batches", GLOBEX_KEY).json()["data"] == []
        assert get(f"/v1/batches/{job.job_id}", None).status_code == 401
