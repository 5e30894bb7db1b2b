"""`llm-gateway distill train | eval | register` as commands, on the provider path (fast: the
teacher and the fine-tuned student are the fake OpenAI server): a collection fine-tuned at the
provider, the student evaluated through the gateway against the teacher on the test split, and
registered into the operator's configuration with a staged rollout. And the refusals: not a
collection, a student below its tenant's bar, weights changed since their eval, a name taken or
unsafe, a layout that cannot be edited in place (the file left untouched)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.adapters.local.sqlite import SqliteStore
from llm_gateway.cli.main import main
from llm_gateway.config import hash_key, load_config
from llm_gateway.distill.evaluate import weights_digest
from tests.conftest import ACME_KEY
from tests.support.fake_providers import Behaviour, FakeServer, Script, fake_server, ok

BASE = "gpt-4o-mini-2024-07-18"
WRONG = 1  # test cases the fine-tuned student gets wrong


def ticket(number: int) -> tuple[str, dict[str, str]]:
    return f"Ticket {number}: my kettle number {number} leaks.", {"product": "kettle", "unit": str(number)}


def respond(body: dict[str, Any]) -> Behaviour:
    if "messages" not in body:  # the fine-tuning job's creation plays the script too
        return ok()
    question = str(body["messages"][-1]["content"])
    number = int(question.split(":", maxsplit=1)[0].split()[1])
    answer = dict(ticket(number)[1])
    if str(body["model"]).startswith("ft:") and number < 1000 + WRONG:  # the student's first test case(s)
        answer["unit"] = "?"
    return ok(json.dumps(answer), prompt_tokens=20, completion_tokens=10)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    with fake_server("openai", Script(responder=respond)) as server:  # type: ignore[arg-type]
        yield server


def write_collection(folder: Path) -> Path:
    """A collection as `distill collect` writes it: 12 train, 3 validation, 30 test examples."""
    folder.mkdir(parents=True)
    for split, numbers in (("train", range(12)), ("validation", range(100, 103)), ("test", range(1000, 1030))):
        lines = []
        for number in numbers:
            question, answer = ticket(number)
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": json.dumps(answer)}]
            lines.append(json.dumps({"messages": messages}) + "\n")
        (folder / f"{split}.jsonl").write_text("".join(lines))
    (folder / "card.json").write_text(json.dumps({"tenant": "acme", "route": "support"}))
    return folder


@pytest.fixture
def workspace(upstream: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-fake")
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"""# the operator's own file
storage_path: {tmp_path / "gateway.db"}
models:
  teacher:
    provider: openai
    provider_model: {BASE}
    base_url: {upstream.base_url}
    api_key_env: FAKE_OPENAI_KEY
    price: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}
    allows_training: true
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes:
      support: {{model: teacher}}
    traces: {{store_content: true}}
    training: {{opt_in: true, min_quality_ratio: 0.8}}
"""
    )
    return {"config": config, "data": write_collection(tmp_path / "data"), "root": tmp_path}


def distill(*args: str | Path) -> int:
    return main(["distill", *(str(a) for a in args)])


def fine_tuned(workspace: dict[str, Path]) -> tuple[Path, Path, Path, Path]:
    """The configuration, the collection, the provider fine-tune's student folder (trained at the
    fake provider) and the folder for its eval."""
    config, data, root = workspace["config"], workspace["data"], workspace["root"]
    student = root / "student"
    train = ("train", data, "--out", student, "--provider-model", "teacher", "--poll-s", "0.01")
    assert distill(*train, "--config", config) == 0
    return config, data, student, root / "eval"


def test_a_provider_fine_tune_is_evaluated_registered_and_rolled_out(
    workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, data, student, evaluated = fine_tuned(workspace)
    job = json.loads((student / "job.json").read_text())
    assert job["status"] == "succeeded" and job["fine_tuned_model"].startswith(f"ft:{BASE}")
    capsys.readouterr()

    assert (
        distill("eval", data, "--student", student, "--name", "support-ft", "--out", evaluated, "--config", config) == 0
    )
    assert "quality_ratio=0.9667 meets_bar=true" in capsys.readouterr().out
    found = json.loads((evaluated / "report.json").read_text())
    assert found["runs"]["teacher"]["target"] == "support" and found["runs"]["teacher"]["pass_rate"] == 1.0
    assert found["runs"]["student"]["passed"] == 30 - WRONG and found["provider_job"] == job["job_id"]
    assert found["bar"] == 0.8 and found["cost_ratio"] == 1.0  # the fine-tune keeps its base model's price
    student_run = json.loads((evaluated / "student" / "report.json").read_text())
    assert student_run["target"] == "support-ft" and student_run["suite"] == found["suite"]

    before = config.read_text()
    assert distill("register", evaluated, "--config", config, "--route", "support") == 0
    said = capsys.readouterr().out
    assert "registered support-ft (candidate, tenant acme)" in said
    assert "acme/support teacher -> support-ft at 1 %" in said
    after = load_config(str(config))
    registered = after.models["support-ft"]
    assert (registered.provider_model, registered.lifecycle) == (job["fine_tuned_model"], "candidate")
    assert not registered.allows_training and after.tenants["acme"].allowed_models == ["support-ft"]
    assert config.read_text().startswith("# the operator's own file") and len(config.read_text()) > len(before)
    # registered once: a second registration of the same name is refused and the file stays as it is
    edited = config.read_text()
    assert distill("register", evaluated, "--config", config) == 2
    assert "a model named support-ft already" in capsys.readouterr().err
    assert config.read_text() == edited


def test_a_baseline_may_run_on_the_first_cases_only_and_the_report_says_on_how_many(
    workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, data, student, evaluated = fine_tuned(workspace)
    evaluate = ("eval", data, "--student", student, "--name", "support-ft", "--out", evaluated, "--config", config)
    assert distill(*evaluate, "--baseline", "support", "--baseline-limit", "4") == 0
    capsys.readouterr()
    found = json.loads((evaluated / "report.json").read_text())
    cases = {name: (run["cases"], run["passed"]) for name, run in found["runs"].items()}
    assert cases == {"teacher": (30, 30), "student": (30, 30 - WRONG), "baseline": (4, 4)}
    assert json.loads((evaluated / "baseline" / "report.json").read_text())["cases"] == 4
    assert found["quality_ratio"] == round((30 - WRONG) / 30, 4)  # the student against the teacher on all 30
    assert "| baseline | support | 100.0% (4/4) |" in (evaluated / "report.md").read_text()


def local_eval(root: Path, quality: float) -> tuple[Path, Path]:
    """A local student's eval folder as `distill eval` writes it, and its weights."""
    weights = root / "student"
    weights.mkdir(parents=True)
    (weights / "config.json").write_text("{}")
    (weights / "model.safetensors").write_bytes(b"weights")
    evaluated = root / "eval"
    for run, target in (("teacher", "support"), ("student", "student-v1")):
        (evaluated / run).mkdir(parents=True)
        (evaluated / run / "report.json").write_text(json.dumps({"results": [], "target": target, "suite": "s"}))
    model = {"provider": "sagemaker", "endpoint": "local", "weights": str(weights), "lifecycle": "candidate"}
    summary = {
        "name": "student-v1",
        "tenant": "acme",
        "quality_ratio": quality,
        "model": model,
        "weights_sha256": weights_digest(weights),
        "runs": {"teacher": {"pass_rate": 1.0}},
    }
    (evaluated / "report.json").write_text(json.dumps(summary))
    return evaluated, weights


def test_a_student_below_the_bar_or_with_changed_weights_is_not_registered(
    workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, root = workspace["config"], workspace["root"]
    before = config.read_text()
    evaluated, weights = local_eval(root / "low", quality=0.75)
    assert distill("register", evaluated, "--config", config) == 2
    assert "quality ratio 0.75 on the held-out split is below tenant acme's bar 0.8" in capsys.readouterr().err
    evaluated, weights = local_eval(root / "changed", quality=0.95)
    (weights / "model.safetensors").write_bytes(b"other weights")
    assert distill("register", evaluated, "--config", config) == 2
    assert "are not the ones evaluated" in capsys.readouterr().err
    assert config.read_text() == before
    evaluated, weights = local_eval(root / "good", quality=0.95)
    SqliteStore(str(root / "gateway.db")).close()  # the store `serve` made
    assert distill("register", evaluated, "--config", config, "--route", "support") == 2  # runs of 0 cases
    assert "registered, but its rollout did not start: an eval gate needs runs of at least 30" in (
        capsys.readouterr().err
    )
    assert load_config(str(config)).models["student-v1"].weights == str(weights)


def test_a_flow_layout_is_left_untouched_with_the_lines_to_add(
    workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, root = workspace["config"], workspace["root"]
    flow = config.read_text().replace("training: {opt_in: true, min_quality_ratio: 0.8}", "training: {opt_in: true}")
    flow = flow.replace("  acme:\n", "  acme: {demo: true, routes: {support: {model: teacher}}}\n  unused:\n", 1)
    config.write_text(flow)
    evaluated, _ = local_eval(root, quality=0.95)
    assert distill("register", evaluated, "--config", config) == 2
    assert "tenant acme is not a block mapping" in capsys.readouterr().err
    assert config.read_text() == flow


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("train", "{root}/nothing", "--out", "{root}/s"), "not a collection"),
        (("eval", "{data}", "--student", "{root}", "--name", "x", "--out", "{root}/e"), "neither a checkpoint folder"),
        (("eval", "{data}", "--student", "{root}", "--name", "teacher", "--out", "{root}/e"), "neither a checkpoint"),
        (("eval", "{data}", "--student", "{root}", "--name", "a\nb", "--out", "{root}/e"), "--name"),
        (("eval", "{data}", "--student", "{root}", "--name", "x", "--teacher", "nope", "--out", "{root}/e"), "nope"),
        (("register", "{root}", "--config", "{config}"), "not a distill eval's folder"),
        (
            ("eval", "{data}", "--student", "{root}", "--name", "x", "--baseline-limit", "3", "--out", "{root}/e"),
            "no --b",
        ),
        (
            (
                "eval",
                "{data}",
                "--student",
                "{root}",
                "--name",
                "x",
                "--baseline=support",
                "--baseline-limit=0",
                "--out=e",
            ),
            "--baseline-limit is at least 1",
        ),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(
    workspace: dict[str, Path], capsys: pytest.CaptureFixture[str], args: tuple[str, ...], said: str
) -> None:
    paths = {name: str(path) for name, path in workspace.items()}
    filled = [a.format(**paths) for a in args]
    if filled[0] != "register":
        filled += ["--config", paths["config"]]
    assert distill(*filled) == 2
    assert said in capsys.readouterr().err
