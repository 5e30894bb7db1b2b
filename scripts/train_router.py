"""Train the complexity router and write routing/data/complexity.json.

    python scripts/train_router.py [--data ../shared/data/qqp_pairs.jsonl.gz]

Data: `llm_gateway.routing.complexity_data` (benchmark prompts as "hard", everyday requests as
"easy"); its held-out 30 % is only read by `bench/cost.py` and the tests. Features: the request's
heuristic features (standardised) and the embedding of its question (all-MiniLM-L6-v2, the
semantic cache's model). Model: class-balanced logistic regression, L2 strength chosen by 5-fold
cross-validation on the training part (the share of easy requests that can go to the small
model while 95 % of hard ones still reach the large one); its logit is Platt-calibrated on the
out-of-fold logits. The quantiles of the calibrated out-of-fold scores are the reference
distribution a target share is read from. Also prints the ablation (heuristics only, embedding
only, both) and a leave-one-source-out check. Deterministic on the same library versions.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from llm_gateway.routing.complexity import ARTEFACT_PATH, ComplexityModel
from llm_gateway.routing.complexity_data import Example, load
from llm_gateway.routing.features import FEATURE_NAMES, heuristic_features
from llm_gateway.semantic.embeddings import Embedder, embedding_model_id
from llm_gateway.weights import encode_array, sigmoid_array

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "qqp_pairs.jsonl.gz"
QUANTILES = 201
TARGET_RECALL = 0.95
C_GRID = (0.3, 1.0, 3.0)


def design(examples: list[Example], embedder: Embedder) -> tuple[np.ndarray, np.ndarray]:
    """(heuristic features, embeddings) of each example as a single-turn text request."""
    heuristics = np.array([heuristic_features(e.text) for e in examples], dtype=np.float64)
    embeddings = embedder.embed([e.text[:2000] for e in examples]).astype(np.float64)
    return heuristics, embeddings


def easy_share_at_recall(scores: np.ndarray, y: np.ndarray, recall: float = TARGET_RECALL) -> float:
    """The share of easy requests below the highest threshold that keeps `recall` of the hard ones
    above it: what the router can save at that quality bar."""
    hard = np.sort(scores[y == 1])
    cut = hard[int(np.floor((1 - recall) * len(hard)))]
    return float((scores[y == 0] < cut).mean())


def auc(scores: np.ndarray, y: np.ndarray) -> float:
    hard, easy = scores[y == 1], scores[y == 0]
    return float((hard[:, None] > easy[None, :]).mean() + 0.5 * (hard[:, None] == easy[None, :]).mean())


def fit(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit(x, y)


def out_of_fold(x: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    model = LogisticRegression(C=c, max_iter=5000, class_weight="balanced")
    logits: np.ndarray = cross_val_predict(model, x, y, cv=folds, method="decision_function")
    return logits


def choose_c(x: np.ndarray, y: np.ndarray) -> float:
    return max(C_GRID, key=lambda c: (easy_share_at_recall(out_of_fold(x, y, c), y), -c))


def leave_one_source_out(train: list[Example], x: np.ndarray, y: np.ndarray, c: float) -> None:
    """Train without one source; report how its requests fare at the 95 %-recall cut of the rest."""
    print("\nleave one source out (trained without it; its requests on the right side of the 95 %-recall cut):")
    origin = np.array([e.source.split(":")[0] for e in train])
    for source in sorted(set(origin)):
        keep = origin != source
        held = fit(x[keep], y[keep], c)
        kept_logits = held.decision_function(x[keep])
        cut = np.sort(kept_logits[y[keep] == 1])[int(np.floor((1 - TARGET_RECALL) * int(y[keep].sum())))]
        logits = held.decision_function(x[~keep])
        label = int(y[~keep][0])
        share = float((logits >= cut).mean()) if label == 1 else float((logits < cut).mean())
        what = "hard reaching large" if label == 1 else "easy going small"
        print(f"  {source:<11} {int((~keep).sum()):>4} requests: {share:.3f} {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="qqp_pairs.jsonl.gz")
    args = parser.parse_args()
    started = time.perf_counter()
    embedder = Embedder()
    train, test = load("train", args.data), load("test", args.data)
    y, y_test = np.array([e.label for e in train]), np.array([e.label for e in test])
    heuristics, embeddings = design(train, embedder)
    heuristics_test, embeddings_test = design(test, embedder)
    mean, scale = heuristics.mean(axis=0), heuristics.std(axis=0)
    scale[scale < 1e-6] = 1.0

    def standardised(h: np.ndarray) -> np.ndarray:
        return (h - mean) / scale

    variants = {
        "heuristics": (standardised(heuristics), standardised(heuristics_test)),
        "embedding": (embeddings, embeddings_test),
        "both": (
            np.hstack([standardised(heuristics), embeddings]),
            np.hstack([standardised(heuristics_test), embeddings_test]),
        ),
    }
    print(f"{len(train)} training requests ({int(y.sum())} hard), {len(test)} held out ({int(y_test.sum())} hard)")
    print(f"{'features':<11} {'C':>5} {'oof AUC':>8} {'oof easy->small @95%':>21}", end="")
    print(f" {'test AUC':>9} {'test easy->small @95%':>22}")
    chosen: dict[str, Any] = {}
    for name, (x, x_test) in variants.items():
        c = choose_c(x, y)
        oof = out_of_fold(x, y, c)
        model = fit(x, y, c)
        test_logits = model.decision_function(x_test)
        print(
            f"{name:<11} {c:>5} {auc(oof, y):>8.3f} {easy_share_at_recall(oof, y):>21.3f} "
            f"{auc(test_logits, y_test):>9.3f} {easy_share_at_recall(test_logits, y_test):>22.3f}"
        )
        chosen[name] = (c, oof, model)

    c, oof, model = chosen["both"]
    platt = LogisticRegression(C=1e6, max_iter=1000).fit(oof.reshape(-1, 1), y)
    a, b = float(platt.coef_[0][0]), float(platt.intercept_[0])
    calibrated = sigmoid_array(a * oof + b)
    quantiles = np.quantile(calibrated, np.linspace(0, 1, QUANTILES))
    weights = model.coef_[0]
    n = len(FEATURE_NAMES)
    artefact: dict[str, Any] = {
        "version": 1,
        "features": list(FEATURE_NAMES),
        "embedding_model": embedding_model_id(),
        "mean": encode_array(np.asarray(mean, dtype=np.float64), "<f8"),
        "scale": encode_array(np.asarray(scale, dtype=np.float64), "<f8"),
        "weights": {
            "heuristic": encode_array(np.round(weights[:n], 6), "<f8"),
            "embedding": encode_array(np.round(weights[n:], 6), "<f8"),
        },
        "bias": round(float(model.intercept_[0]), 6),
        "platt": [round(a, 6), round(b, 6)],
        "quantiles": [round(float(q), 6) for q in quantiles],
        "reference": {
            "examples": len(train),
            "hard_share": round(float(y.mean()), 4),
            "sources": sorted({e.source.split(":")[0] for e in train}),
        },
        "metadata": {"C": c, "out_of_fold_auc": round(auc(oof, y), 4)},
    }
    ours = ComplexityModel.from_artefact(artefact)
    x_both = variants["both"][0]
    drift = max(
        abs(ours.logit(h.tolist(), e.tolist()) - float(model.decision_function(row.reshape(1, -1))[0]))
        for h, e, row in list(zip(heuristics, embeddings, x_both, strict=True))[:200]
    )
    if drift > 1e-3:  # weights are rounded to 6 decimals
        raise SystemExit(f"the plain-Python scorer disagrees with scikit-learn by {drift:.2e}")
    ARTEFACT_PATH.parent.mkdir(parents=True, exist_ok=True)
    ARTEFACT_PATH.write_text(json.dumps(artefact, separators=(",", ":")) + "\n", encoding="utf-8")

    leave_one_source_out(train, x_both, y, c)
    print(f"\nwrote {ARTEFACT_PATH} in {time.perf_counter() - started:.0f}s (max logit drift {drift:.1e})")


if __name__ == "__main__":
    main()
