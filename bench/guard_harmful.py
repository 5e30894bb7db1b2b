"""The harmful-content classifier on its held-out rows, by source, as the input guard scores a
request (`HarmfulClassifier.assess_request`: the fusion of tier 2's n-grams and the embedding
head).

    python scripts/guard_sources.py fetch            # once
    python bench/guard_harmful.py [--json PATH]

Held-out rows (`scripts/train_harmful.py`): HarmBench test (standard and contextual: the context,
then the request), the corpora's test splits, QQP test questions, a fixed quarter of every
packaged source and the everyday set's test part. For each source: recall (harmful) or the
false-positive rate (benign) at the decision threshold, at or above the band's top (refused
without asking the judge) and at or above its bottom (sent to the judge at least).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from train_harmful import DEFAULT_DATA, examples

from llm_gateway.moderation.harmful import load_harmful_classifier


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="qqp_pairs.jsonl.gz")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    classifier = load_harmful_classifier()
    low, high = classifier.band
    _, test = examples(args.data)
    scores: dict[tuple[str, int], list[float]] = defaultdict(list)
    for example in test:
        scores[(example.source, example.label)].append(classifier.assess_request(example.text).score)
    print(f"threshold {classifier.threshold:.4f}, band [{low:.4f}, {high:.4f})\n")
    print("| source | kind | rows | at threshold | at band top (refused) | at band bottom (judged or refused) |")
    print("|---|---|---|---|---|---|")
    rows = []
    for (source, label), values in sorted(scores.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
        shares = [sum(v >= t for v in values) / len(values) for t in (classifier.threshold, high, low)]
        kind = "harmful: recall" if label else "benign: false positives"
        rows.append({"source": source, "label": label, "rows": len(values), "shares": shares})
        print(f"| {source} | {kind} | {len(values)} | " + " | ".join(f"{s:.3f}" for s in shares) + " |")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
