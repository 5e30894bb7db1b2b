"""A collection written out (`llm-gateway distill collect --out DIR`): `train.jsonl`,
`validation.jsonl`, `test.jsonl` in the chat fine-tuning format (one `{"messages": [...]}` a line,
the teacher's answer last), the same splits as a Hugging Face `datasets` dataset (`hf/`, from
`datasets.load_from_disk`), and a data card (`card.json`, `README.md`): counts, the tenant and
route, the teachers, the filters and what each removed, the date range."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .collect import Collected, Example

SPLITS = ("train", "validation", "test")


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def card(collected: Collected, **about: Any) -> dict[str, Any]:
    everything = [*collected.train, *collected.validation, *collected.test]
    return {
        **about,
        "examples": {name: len(getattr(collected, name)) for name in SPLITS},
        "traces_read": collected.read,
        "removed": collected.removed,
        "teachers": collected.models,
        "from": _when(min(e.ts for e in everything)) if everything else None,
        "to": _when(max(e.ts for e in everything)) if everything else None,
        "split": "by time: the oldest {} % train, the next {} % validation, the newest {} % test".format(
            *collected.split
        ),
        "format": "chat fine-tuning JSONL (messages, the teacher's answer last); PII as the tenant's placeholders",
    }


def split_lines(examples: list[Example]) -> str:
    """A split as JSONL in the chat fine-tuning format, one example a line (the teacher's answer last)."""
    return "".join(json.dumps(example.chat(), ensure_ascii=False) + "\n" for example in examples)


def write(collected: Collected, out: Path, **about: Any) -> dict[str, Any]:
    """Write the splits, the Hugging Face dataset and the card into `out`; the card."""
    from datasets import Dataset, DatasetDict

    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict[str, Any]]] = {}
    for name in SPLITS:
        examples: list[Example] = getattr(collected, name)
        rows[name] = [{**e.chat(), "request_id": e.request_id, "teacher": e.model} for e in examples]
        (out / f"{name}.jsonl").write_text(split_lines(examples), encoding="utf-8")
    DatasetDict({name: Dataset.from_list(rows[name]) for name in SPLITS if rows[name]}).save_to_disk(str(out / "hf"))
    found = card(collected, **about)
    (out / "card.json").write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    lines = [
        f"# Distillation data: {about.get('tenant')} / {about.get('route')}",
        "",
        f"Teachers: {', '.join(found['teachers']) or 'none'}. From {found['from']} to {found['to']}.",
        "",
        "| split | examples |",
        "|---|---|",
        *(f"| {name} | {found['examples'][name]} |" for name in SPLITS),
        "",
        f"Traces read: {found['traces_read']}. Removed: "
        + "; ".join(f"{why} {count}" for why, count in found["removed"].items())
        + ".",
        "",
        f"Split {found['split']}. Format: {found['format']}.",
    ]
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return found
