"""`llm-gateway eval run` on the two shipped suites against the local model, as a new user runs it.

No `--config`: the shipped example configuration, whose first demo tenant (acme) gets a key minted
for the run and whose `default` route answers with the packaged SmolLM2-135M on the local model
endpoint (llama.cpp), which the command starts for its lifetime. The store lives in a temporary
data folder. Each case goes through the whole chain: the tenant's guards (its PII guard masks the
extraction emails' addresses before the model sees them), the route's token cap, the
response_format check with its one repair, the usage ledger and the audit log.

A 135M model is not expected to pass these suites; the test checks that the run is real (answers
from the model, the execution scorer running its code, every case audited), not how good the
model is. Both suites take about two minutes on a 2-core CPU: most of it the extraction cases,
whose JSON answers run to the suite's 200-token cap, twice (the answer, then its repair).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.cli.main import main
from llm_gateway.cli.store_location import DATA_DIR_ENV
from llm_gateway.config import EXAMPLE_CONFIG, load_config

pytestmark = pytest.mark.model

LOCAL_MODEL = "smollm2-135m-instruct-q4_1"
LIMITS = {"humaneval": 3, "extraction": 5}
# What the json_schema scorer says of an answer it scored.
JSON_SCHEMA_DETAILS = (
    "valid",
    "fields differ",
    "against the schema",
    "not JSON",
    "the JSON nests",
    "the check stopped",
)
# The gateway's documented answer to a response_format that still fails after one repair
# (docs/guardrails.md, "Output format"): HTTP 502 response_format_mismatch, audited.
FORMAT_MISMATCH = "failed: The model's answer did not satisfy the requested response_format after one repair"


@dataclass
class Run:
    report: dict[str, Any]
    out: Path
    code: int
    printed: str


def first_demo_tenant_and_local_route() -> tuple[str, str]:
    config = load_config(EXAMPLE_CONFIG)
    tenant, policy = next(iter(config.tenants.items()))
    assert policy.demo, "the shipped config's first tenant is a demo tenant: eval run gets a key for it"
    route = next(name for name, r in policy.routes.items() if r.model == LOCAL_MODEL)
    return tenant, route


TENANT, ROUTE = first_demo_tenant_and_local_route()


def children() -> set[int]:
    """The live child processes of this process (the model endpoint, while a run holds it)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.add(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eval-data")


@pytest.fixture(scope="module")
def runs(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Each shipped suite run once, in order, as `llm-gateway eval run SUITE --route default`."""
    found = {}
    with pytest.MonkeyPatch.context() as env:
        env.setenv(DATA_DIR_ENV, str(data_dir))
        env.delenv("LLM_GATEWAY_CONFIG", raising=False)  # the shipped example configuration
        for suite, limit in LIMITS.items():
            out = tmp_path_factory.mktemp(suite)
            before = children()
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                code = main(["eval", "run", suite, "--route", ROUTE, "--limit", str(limit), "--out", str(out)])
            assert not children() - before, "the model endpoint the run started outlives it"
            report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
            found[suite] = Run(report, out, code, printed.getvalue())
    return found


def audited(data_dir: Path, request_id: str) -> dict[str, Any]:
    store = data_dir / ".llm-gateway" / "gateway.db"  # the shipped config's relative storage_path
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM audit WHERE request_id = ?", (request_id,)).fetchone()
    assert row is not None, f"request {request_id} is not in the audit log"
    return dict(row)


def charged(data_dir: Path, request_id: str) -> tuple[int, float] | None:
    """The request's completion tokens and cost in the usage ledger, or None when it has no row."""
    store = data_dir / ".llm-gateway" / "gateway.db"
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT completion_tokens, cost_usd FROM usage WHERE request_id = ?", (request_id,)).fetchone()
    return None if row is None else (int(row[0]), float(row[1]))


@pytest.mark.parametrize("suite", list(LIMITS))
def test_the_suite_runs_on_the_local_model_and_writes_its_report(
    runs: dict[str, Run], data_dir: Path, suite: str
) -> None:
    run = runs[suite]
    assert run.code == 0
    report = run.report
    assert report, "no report.json"
    assert (run.out / "report.md").read_text().startswith(f"# Eval: {suite} on {ROUTE}")
    assert (report["suite"], report["target"], report["tenant"], report["judge"]) == (suite, ROUTE, TENANT, None)
    limit = LIMITS[suite]
    assert report["cases"] == limit == len(report["results"])
    assert 0.0 <= report["pass_rate"] <= 1.0
    assert report["passed"] == sum(r["passed"] for r in report["results"])
    assert report["pass_rate"] == pytest.approx(report["passed"] / limit)
    assert sum(report["outcomes"].values()) == limit
    assert f"pass_rate={report['pass_rate']:.4f} ({report['passed']} of {limit})" in run.printed
    ids = [r["request_id"] for r in report["results"]]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids) and len(set(ids)) == limit
    assert all(r["latency_ms"] > 0 for r in report["results"])
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p95"]
    for result in report["results"]:  # each case went through the chain as the tenant, caches bypassed
        record = audited(data_dir, result["request_id"])
        assert (record["tenant"], record["route"], record["cache"]) == (TENANT, ROUTE, "bypass")
        assert record["latency_ms"] > 0


def test_humaneval_answers_come_from_the_local_model_and_their_code_is_run(runs: dict[str, Run]) -> None:
    report = runs["humaneval"].report
    assert report["outcomes"] == {"answered": LIMITS["humaneval"]}
    for result in report["results"]:
        assert result["answer"].strip()
        assert result["model"] == LOCAL_MODEL
        assert result["prompt_tokens"] > 0 and 0 < result["completion_tokens"] <= 256  # the route's cap
        assert result["cost_usd"] > 0
        # the execution scorer ran the answer's code against the case's tests
        assert result["detail"] == "tests passed" or result["detail"].startswith(("tests failed", "timed out"))
        assert result["passed"] == (result["detail"] == "tests passed")
    assert report["tokens"]["output"] == sum(r["completion_tokens"] for r in report["results"])
    assert report["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in report["results"]))


def test_extraction_emails_are_masked_not_refused_and_a_bad_json_answer_is_the_documented_502(
    runs: dict[str, Run], data_dir: Path
) -> None:
    """Every extraction email holds an email address: the tenant's PII guard (default `mask`)
    lets the case through with the address as a placeholder, so no case is refused. The small
    model's JSON often runs past the suite's 200-token cap, unterminated, and again after the
    repair: such a case fails with the gateway's documented response_format_mismatch, not a crash."""
    report = runs["extraction"].report
    assert set(report["outcomes"]) <= {"answered", "failed"}
    for result in report["results"]:
        record = audited(data_dir, result["request_id"])
        assert "pii:mask" in (record["guards"] or "").split()
        if result["outcome"] == "answered":
            assert result["answer"].strip() and result["model"] == LOCAL_MODEL
            assert record["outcome"] == "ok"
            assert result["detail"].startswith(JSON_SCHEMA_DETAILS), result["detail"]
        else:
            assert result["detail"].startswith(FORMAT_MISMATCH), result["detail"]
            assert not result["passed"] and result["answer"] == ""  # a failed case keeps no answer
            assert (record["outcome"], record["error_code"]) == ("error", "response_format_mismatch")


def format_failures(runs: dict[str, Run]) -> list[dict[str, Any]]:
    failed = [r for r in runs["extraction"].report["results"] if r["outcome"] == "failed"]
    if not failed:
        pytest.skip("every extraction answer satisfied its response_format: no failed repair to check")
    return failed


def test_a_failed_format_repair_is_charged_for_both_calls(runs: dict[str, Run], data_dir: Path) -> None:
    for result in format_failures(runs):
        assert audited(data_dir, result["request_id"])["attempts"] >= 2
        ledger = charged(data_dir, result["request_id"])
        assert ledger is not None and ledger[0] > 0 and ledger[1] > 0


def test_a_failed_case_counts_what_its_calls_cost_in_the_report(runs: dict[str, Run]) -> None:
    for result in format_failures(runs):
        assert result["cost_usd"] > 0 and result["completion_tokens"] > 0
