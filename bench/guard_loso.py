"""Leave-one-source-out: does the prompt-injection classifier generalise to a source it never saw?

    python scripts/guard_sources.py fetch            # once
    python bench/guard_loso.py [--sources s-labs,vigia] [--json PATH]

For each source, fit the shipped recipe (`scripts/train_injection.py`: same features, same
threshold rule) on every other source's fitting rows and the everyday tuning part, then test on
all of the left-out source's rows together with the everyday set's test part (benign, never
fitted on). A benign-only source (news, case summaries, ...) is reported as its false-positive
rate. The last row is the shipped artefact on the pooled held-out rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from guard_sources import Item
from train_injection import Settings, f1_fpr, fit, load_items

from llm_gateway.guard.injection import load_injection_classifier


def _row(
    name: str, scores: np.ndarray, labels: np.ndarray, everyday: np.ndarray, threshold: float
) -> dict[str, object]:
    row: dict[str, object] = {"source": name, "attacks": int(labels.sum()), "benign": int((labels == 0).sum())}
    row.update(f1_fpr(scores, labels, threshold))
    row["everyday_fpr"] = round(float((everyday >= threshold).mean()), 4)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", default="", help="comma-separated; default every source")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    fitting, test = load_items()
    everyday_test = [i for i in test if i.source == "everyday-test"]
    every = sorted({i.source for i in fitting} - {"everyday-tuning"})
    chosen = [s for s in args.sources.split(",") if s] or every
    rows = []
    for source in chosen:
        started = time.perf_counter()
        classifier, _ = fit([i for i in fitting if i.source != source], Settings())
        held: list[Item] = [i for i in [*fitting, *test] if i.source == source]
        scores = np.array([classifier.score(i.text) for i in [*held, *everyday_test]])
        labels = np.array([i.label for i in [*held, *everyday_test]])
        everyday = scores[len(held) :]
        rows.append(_row(source, scores, labels, everyday, classifier.threshold))
        print(f"# {source}: {time.perf_counter() - started:.0f}s {rows[-1]}", file=sys.stderr)
    shipped = load_injection_classifier()
    scores = np.array([shipped.score(i.text) for i in test])
    labels = np.array([i.label for i in test])
    everyday = np.array([shipped.score(i.text) for i in everyday_test])
    rows.append(_row("pooled held-out (shipped artefact)", scores, labels, everyday, shipped.threshold))
    print("| left-out source | attacks | benign | F1 | recall | benign FPR | everyday test FPR |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['source']} | {r['attacks']} | {r['benign']} | {r['f1']:.3f} | {r['recall']:.3f} "
            f"| {r['benign_fpr']:.4f} | {r['everyday_fpr']:.4f} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
