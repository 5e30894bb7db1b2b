"""Leave-one-source-out: do the guard classifiers generalise to a source they never saw?

    python scripts/guard_sources.py fetch            # once
    python bench/guard_loso.py [--task injection|harmful] [--sources s-labs,vigia] [--json PATH]

For each source, fit the shipped recipe (`scripts/train_injection.py` or
`scripts/train_harmful.py`: same features, same threshold rule) on every other source's fitting
rows and the everyday tuning part, then test on all of the left-out source's rows together with
the everyday set's test part (benign, never fitted on). A benign-only source (news, case
summaries, ...) is reported as its false-positive rate. Harmful content is scored as the input
guard scores a request (n-grams and the embedding head); its rows also give the recall at the
band's bottom (what a competent judge on the band can reach). The last row is the shipped
artefact on the pooled held-out rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import train_harmful
from train_injection import Settings, f1_fpr, fit, load_items

from llm_gateway.guard.injection import load_injection_classifier
from llm_gateway.moderation.harmful import HarmfulClassifier, load_harmful_classifier

Row = dict[str, object]


def _row(name: str, scores: np.ndarray, labels: np.ndarray, everyday: np.ndarray, threshold: float) -> Row:
    row: Row = {"source": name, "attacks": int(labels.sum()), "benign": int((labels == 0).sum())}
    row.update(f1_fpr(scores, labels, threshold))
    row["everyday_fpr"] = round(float((everyday >= threshold).mean()), 4)
    return row


def _fold(
    source: str, held: Sequence[Any], everyday: Sequence[Any], score: Callable[[str], float], threshold: float
) -> Row:
    scores = np.array([score(i.text) for i in [*held, *everyday]])
    labels = np.array([i.label for i in [*held, *everyday]])
    return _row(source, scores, labels, scores[len(held) :], threshold)


def injection(chosen: list[str]) -> list[Row]:
    fitting, test = load_items()
    everyday = [i for i in test if i.source == "everyday-test"]
    rows = []
    for source in chosen or sorted({i.source for i in fitting} - {"everyday-tuning"}):
        started = time.perf_counter()
        classifier, _ = fit([i for i in fitting if i.source != source], Settings())
        held = [i for i in [*fitting, *test] if i.source == source]
        rows.append(_fold(source, held, everyday, classifier.score, classifier.threshold))
        print(f"# {source}: {time.perf_counter() - started:.0f}s {rows[-1]}", file=sys.stderr)
    shipped = load_injection_classifier()
    rows.append(_fold("pooled held-out (shipped artefact)", test, everyday, shipped.score, shipped.threshold))
    return rows


def _harmful_row(source: str, held: Sequence[Any], everyday: Sequence[Any], classifier: HarmfulClassifier) -> Row:
    def score(text: str) -> float:
        return classifier.assess_request(text).score

    row = _fold(source, held, everyday, score, classifier.threshold)
    harmful = np.array([score(e.text) for e in held if e.label == 1])
    row["recall_at_band_bottom"] = round(float((harmful >= classifier.band[0]).mean()), 4) if len(harmful) else 0.0
    return row


def harmful(chosen: list[str]) -> list[Row]:
    args = train_harmful.parser().parse_args([])
    fitting, test = train_harmful.examples(args.data)
    everyday = [e for e in test if e.source == "everyday-test"]
    groups = {e.source.removesuffix("-windows") for e in fitting} - {"everyday-tuning"}
    rows = []
    for source in chosen or sorted(groups):
        started = time.perf_counter()
        family = {source, source + "-windows"} | ({"harmbench-contextual"} if source == "harmbench" else set())
        classifier, _ = train_harmful.fit([e for e in fitting if e.source not in family], args)
        held = [e for e in [*fitting, *test] if e.source in family and not e.source.endswith("-windows")]
        rows.append(_harmful_row(source, held, everyday, classifier))
        print(f"# {source}: {time.perf_counter() - started:.0f}s {rows[-1]}", file=sys.stderr)
    rows.append(_harmful_row("pooled held-out (shipped artefact)", test, everyday, load_harmful_classifier()))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["injection", "harmful"], default="injection")
    parser.add_argument("--sources", default="", help="comma-separated; default every source")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    chosen = [s for s in args.sources.split(",") if s]
    rows = injection(chosen) if args.task == "injection" else harmful(chosen)
    extra = " recall at band bottom |" if args.task == "harmful" else ""
    print(f"| left-out source | attacks | benign | F1 | recall | benign FPR | everyday test FPR |{extra}")
    print("|---|---|---|---|---|---|---|" + ("---|" if extra else ""))
    for r in rows:
        tail = f" {r['recall_at_band_bottom']:.3f} |" if extra else ""
        print(
            f"| {r['source']} | {r['attacks']} | {r['benign']} | {r['f1']:.3f} | {r['recall']:.3f} "
            f"| {r['benign_fpr']:.4f} | {r['everyday_fpr']:.4f} |{tail}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
