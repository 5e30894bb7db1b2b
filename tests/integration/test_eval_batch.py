"""Eval suites through the batch path: a run's cases as one batch file under
`batches/in/<tenant>/evals/` (`experiments.batch_eval`), answered by the batch runner (the code
the deployment's batch functions run) with caches bypassed and on no rollout arm, and the job's
output scored into the run's results. On the embedded default: a folder as the bucket, the job
table on SQLite, a wire-compatible OpenAI server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.adapters.local.batch import FolderObjects, SqliteBatchJobs
from llm_gateway.batch.runner import BatchRunner
from llm_gateway.experiments.batch_eval import batch_file, batch_key, batch_results
from llm_gateway.experiments.evals import compare, report
from llm_gateway.experiments.scorers import EvalCase
from llm_gateway.runner import InProcessRunner
from tests.conftest import make_deps, make_state, store_of
from tests.integration.test_batch_local import _config
from tests.support.fake_providers import Behaviour, FakeServer, Script, fake_server, ok

NOW = 1_790_000_000.0


def answer(body: dict[str, Any]) -> Behaviour:
    question = str(body["messages"][-1]["content"])
    return ok("Paris." if "France" in question else "I do not know.", prompt_tokens=12, completion_tokens=6)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    with fake_server("openai", Script(responder=answer)) as server:  # type: ignore[arg-type]
        yield server


def case(case_id: str, question: str, **scoring: Any) -> EvalCase:
    return EvalCase.model_validate({"id": case_id, "messages": [{"role": "user", "content": question}], **scoring})


def cases() -> list[EvalCase]:
    return [
        case("fr", "Capital of France?", scorer="contains", expected="Paris"),
        case("de", "Capital of Germany?", scorer="contains", expected="Berlin"),
        case("blocked", "The codename is blue.", scorer="contains", expected="x"),
        case("shout", "France?", scorer="regex", pattern="^Paris", params={"max_tokens": 5}),
    ]


def test_a_suite_runs_as_an_eval_batch_past_the_cache_and_is_scored_from_the_output(
    upstream: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-fake")
    deps = make_deps(_config(upstream.base_url, batch_api=False), db=tmp_path / "gateway.db")
    InProcessRunner(deps).run(make_state("Capital of France?"))  # cached online: an eval batch must not reuse it
    upstream.script.reset()
    suite = cases()
    key = batch_key("acme", "/suites/capitals.jsonl.gz", "default", NOW)  # the tenant's route
    assert key == "batches/in/acme/evals/capitals-default-20260921T141320.jsonl"
    objects = FolderObjects(tmp_path / "bucket")
    objects.put(key, batch_file(suite, "default"))
    runner = BatchRunner(deps, SqliteBatchJobs(tmp_path / "gateway.db"), objects)
    job, _ = runner.submit(key)
    done = runner.run(job.job_id)
    results_data, _ = objects.get(done.results_key or "")
    errors_data, _ = objects.get(done.errors_key or "")
    results = batch_results(suite, results_data, errors_data)
    assert [(r.id, r.outcome, r.passed) for r in results] == [
        ("fr", "answered", True),
        ("de", "answered", False),
        ("blocked", "refused", False),
        ("shout", "answered", True),
    ]
    asked = [r.body["messages"][-1]["content"] for r in upstream.script.calls("/v1/chat/completions")]
    assert "Capital of France?" in asked  # the cached answer was not used
    (shout,) = [
        c for c in upstream.script.calls("/v1/chat/completions") if c.body["messages"][-1]["content"] == "France?"
    ]
    assert shout.body["max_tokens"] == 5  # a case's params are sent (lines are answered in parallel: found by content)
    assert all(r.cost_usd > 0 and r.prompt_tokens == 12 for r in results if r.outcome == "answered")
    audit = store_of(deps)._db.execute("SELECT outcome, variant FROM audit WHERE request_id LIKE 'batch_%'").fetchall()
    assert "cache_hit" not in {o for o, _ in audit} and {v for _, v in audit} == {None}
    found = report(results, suite="capitals", target="default", tenant="acme", judge=None)
    assert found["pass_rate"] == 0.5 and found["outcomes"] == {"answered": 3, "refused": 1}
    assert compare(found, found)["verdict"] == "no evidence"  # what `eval compare` reads is there


def test_what_an_eval_batch_refuses_and_a_case_missing_from_the_output() -> None:
    judged = EvalCase.model_validate(
        {"id": "j", "messages": [{"role": "user", "content": "Hi"}], "scorer": "judge", "rubric": "Polite?"}
    )
    with pytest.raises(ValueError, match="run this suite online"):
        batch_file([judged], "gpt")
    lines = [json.loads(line) for line in batch_file(cases(), "gpt").decode().splitlines()]
    assert [line["custom_id"] for line in lines] == ["fr", "de", "blocked", "shout"]
    assert all(line["body"]["model"] == "gpt" and line["url"] == "/v1/chat/completions" for line in lines)
    (missing,) = batch_results(cases()[:1], b"", b"")
    assert (missing.outcome, missing.passed, missing.detail) == (
        "failed",
        False,
        "failed: no result in the batch's output",
    )


def test_a_damaged_batch_output_fails_its_cases_or_the_file_never_crashes() -> None:
    suite = cases()[:2]
    hostile = "\n".join(
        json.dumps(record)
        for record in (
            {
                "custom_id": "fr",
                "response": {"status_code": 200, "body": {"choices": ["x"], "usage": {"cost_usd": "abc"}}},
            },
            {"custom_id": "fr", "response": {"status_code": 500, "body": "nope"}},  # a second record for the id
            {"custom_id": "de", "response": "nope", "error": ["x"]},
        )
    ).encode()
    first, second = batch_results(suite, hostile, b"")
    assert (first.outcome, first.cost_usd, first.answer) == ("answered", 0.0, "")  # the first record for an id counts
    assert (second.outcome, second.passed) == ("failed", False)
    for damaged in (b"not json\n", b"\xff\xfe"):
        with pytest.raises(ValueError, match="not a batch output file"):
            batch_results(suite, damaged, b"")
