"""The distillation training job's entrypoint on SageMaker: `distill.train.train`, the same code as
`llm-gateway distill train`, under SageMaker's training container contract.

SageMaker starts the image as `docker run IMAGE train` (the GPU image's `train` runs this module)
and lays out /opt/ml:

    input/config/hyperparameters.json   the job's hyperparameters, every value a string
    input/data/train/                   the `train` channel: the collection (train.jsonl, validation.jsonl, ...)
    model/                              what the job leaves here becomes <output path>/<job>/output/model.tar.gz
    output/failure                      why the job failed (SageMaker shows it as the job's FailureReason)

The hyperparameters are `distill.train.Settings`' fields (`epochs`, `learning_rate`, `rank`,
`batch`, `patience`, `max_tokens`, `seed`, `threads`, `device`); an unknown one or a value of the wrong kind
fails the job before training starts. The exit status is 0 when the student was saved, 1 otherwise.

    python -m llm_gateway.distill.train_job [--root /opt/ml]
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .train import Settings

ROOT = Path("/opt/ml")
CHANNEL = "train"
FAILURE_CHARS = 1024  # SageMaker keeps the first 1,024 characters of the failure file
# Each hyperparameter SageMaker may pass, and how its text is read.
HYPERPARAMETERS: dict[str, Callable[[str], Any]] = {
    "epochs": int,
    "learning_rate": float,
    "rank": int,
    "batch": int,
    "patience": int,
    "max_tokens": int,
    "seed": int,
    "threads": int,
    "device": str,  # torch's device (cuda when the instance has a GPU)
}
_AT_LEAST_ONE = ("epochs", "rank", "batch", "patience", "max_tokens", "threads")

Trainer = Callable[[Path, Path, Settings], dict[str, Any]]


@dataclass(frozen=True)
class JobPaths:
    """SageMaker's training layout under `root` (/opt/ml in the container)."""

    root: Path

    @property
    def hyperparameters(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    @property
    def channel(self) -> Path:
        return self.root / "input" / "data" / CHANNEL

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"


def settings_from(hyperparameters: Mapping[str, Any]) -> Settings:
    """The training settings from the job's hyperparameters (strings, as SageMaker writes them)."""
    unknown = sorted(set(hyperparameters) - set(HYPERPARAMETERS))
    if unknown:
        raise ValueError(f"unknown hyperparameters {', '.join(unknown)}; known: {', '.join(HYPERPARAMETERS)}")
    values: dict[str, Any] = {}
    for name, raw in hyperparameters.items():
        read = HYPERPARAMETERS[name]
        try:
            values[name] = read(str(raw).strip())
        except ValueError:
            kind = "an integer" if read is int else "a number"
            raise ValueError(f"hyperparameter {name}={raw!r} is not {kind}") from None
    small = [name for name in _AT_LEAST_ONE if name in values and values[name] < 1]
    if small or not values.get("learning_rate", 1.0) > 0:
        raise ValueError(f"{', '.join(_AT_LEAST_ONE)} are at least 1 and learning_rate is positive: {dict(values)}")
    return Settings(**values)


def _read_hyperparameters(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}  # a job started without hyperparameters: the defaults
    found = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(found, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return found


def _train(data: Path, out: Path, settings: Settings) -> dict[str, Any]:
    from .train import train

    return train(data, out, settings)


def run(root: Path = ROOT, trainer: Trainer = _train) -> int:
    """Train on the `train` channel into model/; on any failure write output/failure and return 1."""
    paths = JobPaths(root)
    try:
        settings = settings_from(_read_hyperparameters(paths.hyperparameters))
        if not paths.channel.is_dir():
            raise FileNotFoundError(f"no `{CHANNEL}` channel at {paths.channel}: the job needs the collection")
        found = trainer(paths.channel, paths.model, settings)
    except Exception as exc:  # every failure is the job's failure: SageMaker reads why from the file
        traceback.print_exc()
        paths.failure.parent.mkdir(parents=True, exist_ok=True)
        paths.failure.write_text(f"{type(exc).__name__}: {exc}"[:FAILURE_CHARS], encoding="utf-8")
        return 1
    print(
        json.dumps({"student": str(paths.model), "epochs": len(found.get("epochs", [])), **found.get("examples", {})})
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the distilled student under SageMaker's training contract.")
    parser.add_argument("--root", type=Path, default=ROOT, help="SageMaker's /opt/ml (another folder for a dry run)")
    args = parser.parse_args(argv)
    return run(args.root)


if __name__ == "__main__":
    sys.exit(main())
