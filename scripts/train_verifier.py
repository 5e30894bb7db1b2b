"""Train the semantic-cache pair verifier on the QQP dev split and write semantic/data/verifier.json.

    python scripts/train_verifier.py [--data ../shared/data/qqp_pairs.jsonl.gz] [--cache FILE.npz]

Only rows with split == "dev" are read: 80 % fit an ensemble of MLPs (different seeds, logits averaged),
20 % fit Platt calibration and give the precision curve stored in the artefact. The test split is never
touched. Seeds are fixed, so a rerun gives the same artefact (up to floating-point differences between
machines). The embeddings are those of the prepared (quantised) model the gateway serves with.
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from llm_gateway.semantic.embeddings import Embedder, embedding_model_id, embedding_model_slug
from llm_gateway.semantic.features import LEXICAL_FEATURES, pair_features
from llm_gateway.semantic.verifier import ARTEFACT_PATH, Verifier
from llm_gateway.weights import encode_array

SEED = 20240917
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "qqp_pairs.jsonl.gz"


def load_pairs(path: Path, split: str) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [row for row in map(json.loads, f) if row["split"] == split]


def embed_texts(texts: list[str], cache: Path | None) -> dict[str, np.ndarray]:
    """Embeddings by text, reusing a .npz cache outside the repo while iterating."""
    unique = sorted(set(texts))
    if cache is not None and cache.exists():
        stored = np.load(cache, allow_pickle=False)
        known = dict(zip(stored["texts"].tolist(), stored["vecs"], strict=True))
        if all(t in known for t in unique):
            return known
    vecs = Embedder(threads=2).embed(unique)
    if cache is not None:
        np.savez(cache, texts=np.array(unique), vecs=vecs)
    return dict(zip(unique, vecs, strict=True))


def features_for(rows: list[dict[str, Any]], vecs: dict[str, np.ndarray]) -> np.ndarray:
    a = [r["a"] for r in rows]
    b = [r["b"] for r in rows]
    return pair_features(a, b, np.stack([vecs[t] for t in a]), np.stack([vecs[t] for t in b]))


def precision_curve(probs: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    """Precision and recall of "accept when p >= t" at each distinct held-out probability (ascending t)."""
    order = np.argsort(-probs, kind="stable")
    p, y = probs[order], labels[order]
    tp = np.cumsum(y)
    accepted = np.arange(1, len(y) + 1)
    last = np.r_[np.nonzero(np.diff(p))[0], len(p) - 1]  # last index of each distinct probability
    thresholds, precision, recall = p[last], tp[last] / accepted[last], tp[last] / max(y.sum(), 1)
    keep = np.unique(np.linspace(0, len(last) - 1, min(len(last), 400)).astype(int))  # keep the artefact small
    return {
        "threshold": [round(float(x), 6) for x in thresholds[keep][::-1]],
        "precision": [round(float(x), 6) for x in precision[keep][::-1]],
        "recall": [round(float(x), 6) for x in recall[keep][::-1]],
    }


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(logits[:, None], labels)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def precision_at_recall(probs: np.ndarray, labels: np.ndarray, recall: float) -> float:
    order = np.argsort(-probs)
    tp = np.cumsum(labels[order])
    k = int(np.searchsorted(tp, recall * labels.sum())) + 1
    return float(tp[k - 1] / k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / f"llm_gateway_qqp_dev_{embedding_model_slug()}.npz",
        help="embeddings of the questions by text, kept between runs (named after the embedding model)",
    )
    parser.add_argument("--hidden", type=int, default=128, help="hidden units of each MLP")
    parser.add_argument("--members", type=int, default=6, help="MLPs in the ensemble (seeds SEED, SEED+1, ...)")
    parser.add_argument("--alpha", type=float, default=1e-2, help="L2 penalty")
    parser.add_argument("--out", type=Path, default=ARTEFACT_PATH)
    args = parser.parse_args()
    started = time.perf_counter()

    rows = load_pairs(args.data, "dev")
    vecs = embed_texts([r["a"] for r in rows] + [r["b"] for r in rows], args.cache)
    print(f"{len(vecs)} dev question embeddings ready after {time.perf_counter() - started:.0f}s")
    x = features_for(rows, vecs)
    y = np.array([r["label"] for r in rows], dtype=np.int64)
    rng = np.random.default_rng(SEED)
    perm = rng.permutation(len(rows))
    cut = int(0.8 * len(rows))
    fit_idx, hold_idx = perm[:cut], perm[cut:]

    scaler = StandardScaler().fit(x[fit_idx])
    scale = np.where(scaler.scale_ > 1e-6, scaler.scale_, 1.0)
    members = []
    for member in range(args.members):
        mlp = MLPClassifier(
            hidden_layer_sizes=(args.hidden,),
            alpha=args.alpha,
            learning_rate_init=1e-3,
            batch_size=256,
            max_iter=60,
            early_stopping=True,
            validation_fraction=0.1,
            n_iter_no_change=6,
            random_state=SEED + member,
        ).fit((x[fit_idx] - scaler.mean_) / scale, y[fit_idx])
        # float16 weights halve the artefact; the scores move by about 1e-3.
        members.append(
            {
                "layers": [
                    {"weight": encode_array(w, "<f2"), "bias": encode_array(b)}
                    for w, b in zip(mlp.coefs_, mlp.intercepts_, strict=True)
                ]
            }
        )
        print(f"member {member + 1}/{args.members}: {mlp.n_iter_} epochs, {time.perf_counter() - started:.0f}s")

    artefact: dict[str, Any] = {
        "version": 2,
        "features": {"lexical": list(LEXICAL_FEATURES), "embedding": ["u*v", "|u-v|"], "count": int(x.shape[1])},
        "mean": encode_array(scaler.mean_),
        "scale": encode_array(scale),
        "members": members,
        "platt": {"a": 1.0, "b": 0.0},
        "curve": {"threshold": [0.0], "precision": [0.0], "recall": [1.0]},
    }
    logits = Verifier(artefact).logits(x[hold_idx])
    a, b = fit_platt(logits, y[hold_idx])
    artefact["platt"] = {"a": a, "b": b}
    probs = Verifier(artefact).calibrate(logits)
    artefact["curve"] = precision_curve(probs, y[hold_idx])
    cosine_hold = x[hold_idx, 0]
    artefact["metadata"] = {
        "trained_on": "QQP split=dev (80% fit, 20% calibration/curve holdout)",
        "embedding_model": embedding_model_id(),
        "seed": SEED,
        "members": args.members,
        "hidden": args.hidden,
        "alpha": args.alpha,
        # Candidates below this cosine are rejected unscored: it keeps 99.5 % of held-out duplicates.
        "cosine_floor": round(float(np.quantile(cosine_hold[y[hold_idx] == 1], 0.005)), 4),
        "holdout_pairs": len(hold_idx),
        "holdout_precision_at_recall_0.40": round(precision_at_recall(probs, y[hold_idx], 0.40), 4),
        "holdout_cosine_precision_at_recall_0.40": round(precision_at_recall(cosine_hold, y[hold_idx], 0.40), 4),
    }
    args.out.write_text(json.dumps(artefact, separators=(",", ":")), encoding="utf-8")
    print(json.dumps(artefact["metadata"], indent=2))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
