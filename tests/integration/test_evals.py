"""`llm-gateway eval run` through the gateway's chain and `eval compare`, against fake models
behind a fake OpenAI upstream: a model that answers every case, the same one again, and a
deliberately worse one (wrong on 40 % of the cases). The worse one is flagged worse (exit 1), the
same one "no evidence" (exit 0); the report holds the pass rate, per tag, cost and outcomes; a
refused case counts as failed; the suite runs as a tenant with its guards on."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.cli.main import main
from tests.conftest import ACME_KEY, hash_key
from tests.support.fake_providers import Behaviour, FakeServer, Script, fake_server, ok

CASES = 40


def answer(body: dict[str, Any]) -> Behaviour:
    question = str(body["messages"][-1]["content"])
    found = re.search(r"(\d+) \+ (\d+)", question)
    if found is None:
        return ok("I cannot tell.")
    a, b = int(found[1]), int(found[2])
    right = a + b
    if body["model"] == "gpt-worse" and b % 5 < 2:  # wrong on 40 % of the cases
        right += 1
    return ok(f"The sum is {right}.", prompt_tokens=15, completion_tokens=5)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    with fake_server("openai", Script(responder=answer)) as server:  # type: ignore[arg-type]
        yield server


@pytest.fixture
def setup(upstream: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-fake")
    price = "{input_per_mtok: 1.0, output_per_mtok: 2.0}"
    model = (
        "{{provider: openai, provider_model: {name}, base_url: {url}, api_key_env: FAKE_OPENAI_KEY, price: {price}}}"
    )
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"""storage_path: {tmp_path / "gateway.db"}
models:
  gpt-good: {model.format(name="gpt-good", url=upstream.base_url, price=price)}
  gpt-same: {model.format(name="gpt-good", url=upstream.base_url, price=price)}
  gpt-worse: {model.format(name="gpt-worse", url=upstream.base_url, price=price)}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes: {{default: {{model: gpt-good}}}}
    allowed_models: [gpt-good, gpt-same, gpt-worse]
    input_blocklist: {{keywords: [forbidden]}}
"""
    )
    suite = tmp_path / "suite.jsonl"
    lines = [
        {
            "id": f"sum-{i}",
            "messages": [{"role": "user", "content": f"What is 7 + {i}?"}],
            "scorer": "contains" if i % 2 else "numeric",
            "expected": str(7 + i) if i % 2 else 7 + i,
            "tags": ["odd" if i % 2 else "even"],
        }
        for i in range(CASES)
    ]
    lines.append(
        {
            "id": "refused",
            "messages": [{"role": "user", "content": "A forbidden 1 + 1"}],
            "scorer": "numeric",
            "expected": 2,
        }
    )
    suite.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return config, suite


def run(config: Path, suite: Path, out: Path, *target: str) -> dict[str, Any]:
    assert main(["eval", "run", str(suite), *target, "--config", str(config), "--out", str(out)]) == 0
    return json.loads((out / "report.json").read_text())


def test_a_suite_runs_through_the_chain_and_a_worse_model_is_flagged_worse(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, suite = setup
    good = run(config, suite, tmp_path / "good", "--route", "default")
    assert good["cases"] == CASES + 1 and good["pass_rate"] == pytest.approx(CASES / (CASES + 1))
    assert good["outcomes"] == {"answered": CASES, "refused": 1}  # the tenant's blocklist held
    assert good["by_tag"]["odd"]["pass_rate"] == 1.0 and good["cost_usd"] > 0
    assert (tmp_path / "good" / "report.md").read_text().startswith("# Eval:")
    with sqlite3.connect(tmp_path / "gateway.db") as db:  # every case asked the route, not what answered the last
        routes = db.execute("SELECT DISTINCT route FROM audit WHERE outcome != 'blocked'").fetchall()
    assert routes == [("default",)]
    run(config, suite, tmp_path / "same", "--model", "gpt-same")
    worse = run(config, suite, tmp_path / "worse", "--model", "gpt-worse")
    assert worse["pass_rate"] == pytest.approx((CASES * 0.6) / (CASES + 1))
    capsys.readouterr()

    assert main(["eval", "compare", str(tmp_path / "good"), str(tmp_path / "worse")]) == 1
    printed = capsys.readouterr().out
    assert printed.startswith("verdict=worse")
    assert main(["eval", "compare", str(tmp_path / "good"), str(tmp_path / "same" / "report.json"), "--json"]) == 0
    identical = json.loads(capsys.readouterr().out)
    assert identical["verdict"] == "no evidence" and identical["p_value"] == 1.0 and identical["interval"] == [0.0, 0.0]
    assert main(["eval", "compare", str(tmp_path / "worse"), str(tmp_path / "good"), "--json"]) == 0
    better = json.loads(capsys.readouterr().out)
    assert better["verdict"] == "better" and better["b_passed_a_failed"] == 16 and better["p_value"] < 0.001
    low, high = better["interval"]
    assert 0 < low < 16 / (CASES + 1) < high


def test_a_small_difference_is_no_evidence(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, suite = setup
    good = run(config, suite, tmp_path / "good", "--model", "gpt-good")
    assert good["passed"] == CASES
    slightly = json.loads(json.dumps(good))
    for result in slightly["results"][:2]:  # two cases worse: too few to tell
        result["passed"] = False
    (tmp_path / "slightly.json").write_text(json.dumps(slightly))
    capsys.readouterr()
    assert main(["eval", "compare", str(tmp_path / "good"), str(tmp_path / "slightly.json")]) == 0
    assert capsys.readouterr().out.startswith("verdict=no evidence")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "gpt-nope"], "gpt-nope is not a model (allowed_models) of tenant acme"),
        (["--route", "nope"], "nope is not a route of tenant acme"),
        (["--model", "gpt-good", "--limit", "0"], "--limit is at least 1"),
        (["--model", "gpt-good", "--tenant", "initech"], "tenant initech is not in this configuration"),
    ],
)
def test_eval_run_refuses_what_it_cannot_run(
    setup: tuple[Path, Path], tmp_path: Path, arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config, suite = setup
    assert main(["eval", "run", str(suite), *arguments, "--config", str(config), "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_compare_refuses_what_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.json").write_text("{}")
    assert main(["eval", "compare", str(tmp_path / "a.json"), str(tmp_path / "missing")]) == 2
    assert "not a run's report" in capsys.readouterr().err
