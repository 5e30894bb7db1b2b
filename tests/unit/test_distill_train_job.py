"""The distillation training job's entrypoint under SageMaker's training contract, on a /opt/ml tree
laid out in a temporary folder: the `train` channel and the hyperparameters (strings, as SageMaker
writes them) reach the training code as `distill train` would pass them, the student goes to
model/, and a failure — a hyperparameter of the wrong kind or unknown, no channel, training that
raises — ends the job with exit status 1 and its reason in output/failure. The training itself is
a stand-in here (the real one is `distill.train.train`, run by tests/e2e/test_distill_pipeline.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.distill.train import Settings
from llm_gateway.distill.train_job import FAILURE_CHARS, JobPaths, run, settings_from

ROOT = Path(__file__).resolve().parents[2]


def sagemaker_tree(root: Path, hyperparameters: dict[str, str] | None) -> JobPaths:
    """/opt/ml as SageMaker lays it out for a job with the `train` channel."""
    paths = JobPaths(root)
    paths.channel.mkdir(parents=True)
    conversation = [{"role": "user", "content": "Which product?"}, {"role": "assistant", "content": '{"p": 1}'}]
    for split in ("train", "validation"):
        (paths.channel / f"{split}.jsonl").write_text(json.dumps({"messages": conversation}) + "\n")
    paths.model.mkdir(parents=True)
    if hyperparameters is not None:
        paths.hyperparameters.parent.mkdir(parents=True)
        paths.hyperparameters.write_text(json.dumps(hyperparameters))
    return paths


class RecordingTrainer:
    """Stands in for `distill.train.train`: records what it was given and saves a 'student'."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[Path, Path, Settings]] = []
        self.error = error

    def __call__(self, data: Path, out: Path, settings: Settings) -> dict[str, Any]:
        self.calls.append((data, out, settings))
        if self.error is not None:
            raise self.error
        (out / "config.json").write_text("{}")
        return {"epochs": [{"epoch": 1}], "examples": {"train": 1, "validation": 1}}


def test_the_job_trains_on_the_train_channel_into_the_model_folder_with_its_hyperparameters(tmp_path: Path) -> None:
    paths = sagemaker_tree(tmp_path, {"epochs": "2", "learning_rate": "0.0005", "rank": "8", "batch": "4"})
    trainer = RecordingTrainer()

    assert run(tmp_path, trainer) == 0

    assert trainer.calls == [(paths.channel, paths.model, Settings(epochs=2, learning_rate=5e-4, rank=8, batch=4))]
    assert (paths.model / "config.json").is_file()
    assert not paths.failure.exists()


def test_a_job_without_hyperparameters_trains_with_the_defaults(tmp_path: Path) -> None:
    sagemaker_tree(tmp_path, None)
    trainer = RecordingTrainer()
    assert run(tmp_path, trainer) == 0
    assert trainer.calls[0][2] == Settings()


@pytest.mark.parametrize(
    ("hyperparameters", "reason"),
    [
        ({"epochs": "four"}, "hyperparameter epochs='four' is not an integer"),
        ({"learning_rate": "fast"}, "hyperparameter learning_rate='fast' is not a number"),
        ({"epochs": "2", "dropout": "0.1"}, "unknown hyperparameters dropout"),
        ({"rank": "0"}, "are at least 1"),
        ({"learning_rate": "0"}, "learning_rate is positive"),
    ],
    ids=["not-an-integer", "not-a-number", "unknown", "rank-zero", "no-learning-rate"],
)
def test_a_bad_hyperparameter_fails_the_job_before_training_with_the_reason(
    tmp_path: Path, hyperparameters: dict[str, str], reason: str
) -> None:
    paths = sagemaker_tree(tmp_path, hyperparameters)
    trainer = RecordingTrainer()
    assert run(tmp_path, trainer) == 1
    assert trainer.calls == []
    failure = paths.failure.read_text()
    assert failure.startswith("ValueError: ") and reason in failure


def test_training_that_fails_ends_the_job_with_its_reason_cut_to_what_sagemaker_keeps(tmp_path: Path) -> None:
    paths = sagemaker_tree(tmp_path, {"epochs": "1"})
    assert run(tmp_path, RecordingTrainer(ValueError("the collection needs train and validation examples"))) == 1
    assert paths.failure.read_text() == "ValueError: the collection needs train and validation examples"
    assert run(tmp_path, RecordingTrainer(RuntimeError("x" * 5000))) == 1
    assert len(paths.failure.read_text()) == FAILURE_CHARS


def test_the_hyperparameters_the_workflow_passes_are_the_settings_distill_train_takes() -> None:
    from cdk.config import DistillConfig

    config = DistillConfig(epochs=3, learning_rate=2e-4, rank=32, batch=16)
    assert settings_from(config.hyperparameters()) == Settings(epochs=3, learning_rate=2e-4, rank=32, batch=16)


def test_the_images_train_command_runs_the_module_and_fails_a_job_without_its_channel(tmp_path: Path) -> None:
    """`train` (model_server/train, SageMaker's `docker run IMAGE train`) runs this module; with no
    `train` channel the job fails, saying so, and nothing is trained."""
    script = (ROOT / "model_server" / "train").read_text()
    assert "python -m llm_gateway.distill.train_job" in script
    env = {"PYTHONPATH": f"{ROOT / 'layers' / 'core' / 'python'}:{ROOT}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "llm_gateway.distill.train_job", "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    failure = (tmp_path / "output" / "failure").read_text()
    assert failure.startswith("FileNotFoundError: no `train` channel at") and str(tmp_path) in failure
    assert not (tmp_path / "model").exists()
