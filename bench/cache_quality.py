"""Semantic-cache quality: plain cosine (the GPTCache way) against cosine retrieval + the trained verifier.

    python bench/cache_quality.py [--quick] [--distractors 10000] [--cache FILE.npz]

(a) QQP test split (never used in training): precision/recall of plain cosine at thresholds and of the
    verifier at target precisions, plus precision at recall 0.40 for both.
(b) GPTCache simulation: index the 1,000 mock `origin`s plus QQP test questions as distractors, query with
    the `similar`s; a hit is correct when it returns the query's own origin.
(c) Lookup latency as the cache step runs it (serving embedder + local index search + `Verifier.rank`) at
    10k and 100k entries.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from llm_gateway.adapters.local.semantic import LocalSemanticIndex
from llm_gateway.semantic.embeddings import Embedder, default_embedder, embedding_model_slug
from llm_gateway.semantic.index import DIMENSIONS, Candidate
from llm_gateway.semantic.near_miss import near_miss
from llm_gateway.semantic.verifier import Verifier, load_verifier

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TOP_K = 5
TARGETS = (0.80, 0.85, 0.90, 0.95, 0.97, 0.98)
COSINE_THRESHOLDS = (0.70, 0.75, 0.80, 0.85, 0.90, 0.95, 0.98)


def embed_cached(texts: list[str], cache: Path | None, embedder: Embedder) -> dict[str, np.ndarray]:
    unique = sorted(set(texts))
    known: dict[str, np.ndarray] = {}
    if cache is not None and cache.exists():
        stored = np.load(cache, allow_pickle=False)
        known = dict(zip(stored["texts"].tolist(), stored["vecs"], strict=True))
    missing = [t for t in unique if t not in known]
    if missing:
        known.update(zip(missing, embedder.embed(missing), strict=True))
        if cache is not None:
            np.savez(cache, texts=np.array(list(known)), vecs=np.stack(list(known.values())))
    return known


def pr_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float, int]:
    accepted = scores >= threshold
    tp = int((accepted & (labels == 1)).sum())
    n = int(accepted.sum())
    return (tp / n if n else float("nan")), tp / max(int(labels.sum()), 1), n


def precision_at_recall(scores: np.ndarray, labels: np.ndarray, recall: float) -> tuple[float, float]:
    """Best precision among thresholds reaching the recall, and the score threshold that gives it."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(labels[order])
    k = int(np.searchsorted(tp, recall * labels.sum())) + 1
    return float(tp[k - 1] / k), float(scores[order][k - 1])


def qqp_section(rows: list[dict[str, Any]], vecs: dict[str, np.ndarray], verifier: Verifier) -> None:
    a, b = [r["a"] for r in rows], [r["b"] for r in rows]
    va, vb = np.stack([vecs[t] for t in a]), np.stack([vecs[t] for t in b])
    labels = np.array([r["label"] for r in rows])
    cosine = np.einsum("ij,ij->i", va, vb)
    probs = verifier.probabilities(a, b, va, vb)
    print(f"\n## (a) QQP test split: {len(rows)} pairs, {int(labels.sum())} duplicates\n")
    print("| plain cosine ≥ | precision | recall | accepted |\n|---|---|---|---|")
    for t in COSINE_THRESHOLDS:
        p, r, n = pr_at(cosine, labels, t)
        print(f"| {t:.2f} | {p:.3f} | {r:.3f} | {n} |")
    print("\n| ours: target precision | P(same) ≥ | precision | recall | accepted |\n|---|---|---|---|---|")
    for target in TARGETS:
        t = verifier.threshold_for(target)
        p, r, n = pr_at(probs, labels, t)
        print(f"| {target:.2f} | {t:.3f} | {p:.3f} | {r:.3f} | {n} |")
    # The cache step's full decision: the verifier, then the near-miss vetoes (semantic.near_miss).
    vetoed = np.array([near_miss(x, y) is not None for x, y in zip(a, b, strict=True)])
    print("\n| ours + vetoes: target precision | precision | recall | accepted |\n|---|---|---|---|")
    for target in TARGETS:
        p, r, n = pr_at(np.where(vetoed, 0.0, probs), labels, verifier.threshold_for(target))
        print(f"| {target:.2f} | {p:.3f} | {r:.3f} | {n} |")
    pc, tc = precision_at_recall(cosine, labels, 0.40)
    pv, tv = precision_at_recall(probs, labels, 0.40)
    print("\n| at recall 0.40 | precision | threshold |\n|---|---|---|")
    print(f"| plain cosine | {pc:.3f} | cosine {tc:.3f} |\n| ours (verifier) | {pv:.3f} | P(same) {tv:.3f} |")


def retrieve(index: np.ndarray, query_vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = query_vecs @ index.T
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    top_sims = np.take_along_axis(sims, top, axis=1)
    order = np.argsort(-top_sims, axis=1)
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sims, order, axis=1)


def verified_best(
    verifier: Verifier,
    query: str,
    qvec: np.ndarray,
    ids: np.ndarray,
    sims: np.ndarray,
    texts: list[str],
    index: np.ndarray,
) -> tuple[int, float]:
    """The cache step's decision for one query: `Verifier.rank` over the retrieved candidates, less
    the near-miss vetoes."""
    candidates = [Candidate(str(i), texts[i], "", float(c), index[i]) for i, c in zip(ids, sims, strict=True)]
    ranked = [(p, c) for p, c in verifier.rank(query, qvec, candidates) if near_miss(query, c.text) is None]
    return (int(ranked[0][1].entry_id), ranked[0][0]) if ranked else (-1, 0.0)


def gptcache_section(
    mock: list[dict[str, str]], distractors: list[str], vecs: dict[str, np.ndarray], verifier: Verifier
) -> None:
    texts = [m["origin"] for m in mock] + distractors
    index = np.stack([vecs[t] for t in texts])
    queries = [m["similar"] for m in mock]
    qvecs = np.stack([vecs[q] for q in queries])
    ids, sims = retrieve(index, qvecs, TOP_K)
    # Duplicate origins exist in the mock data: any entry with the query's own origin text is correct.
    own = [m["origin"] for m in mock]
    print(
        f"\n## (b) GPTCache simulation: {len(mock)} origins + {len(distractors)} QQP distractors, "
        f"{len(queries)} queries\n"
    )
    print("| method | correct hits | wrong hits | misses | hit precision |\n|---|---|---|---|---|")

    def row(name: str, picks: list[int]) -> None:
        correct = sum(1 for q, i in enumerate(picks) if i >= 0 and texts[i] == own[q])
        wrong = sum(1 for q, i in enumerate(picks) if i >= 0 and texts[i] != own[q])
        miss = len(picks) - correct - wrong
        print(f"| {name} | {correct} | {wrong} | {miss} | {correct / max(correct + wrong, 1):.3f} |")

    for t in (0.95, 0.90, 0.80):
        row(
            f"plain cosine ≥ {t:.2f}" + (" (GPTCache)" if t == 0.95 else ""),
            [int(i[0]) if s[0] >= t else -1 for i, s in zip(ids, sims, strict=True)],
        )
    best = [verified_best(verifier, q, qvecs[n], ids[n], sims[n], texts, index) for n, q in enumerate(queries)]
    for target in (0.90, 0.95, 0.98):
        t = verifier.threshold_for(target)
        row(f"ours: top-{TOP_K} + verifier, target {target:.2f} (P ≥ {t:.3f})", [i if p >= t else -1 for i, p in best])


def latency_section(
    sizes: list[int],
    pool_texts: list[str],
    vecs: dict[str, np.ndarray],
    queries: dict[str, list[str]],
    verifier: Verifier,
) -> None:
    """Time the cache step's semantic lookup as it runs: the serving embedder, the local adapter's
    search of one scope holding `size` entries, and `Verifier.rank` on its top candidates; per
    query set (their lengths differ, and the embedding's cost grows with it)."""
    embedder = default_embedder()
    rng = np.random.default_rng(0)
    threshold = verifier.threshold_for(0.95)
    print(f"\n## (c) Lookup latency, one query at a time (embed + local index search + verify top-{TOP_K})\n")
    print(
        "| queries | median tokens | entries | p50 ms | p99 ms | embed p50 ms | search p50 ms | verify p50 ms "
        "| hits |\n|---|---|---|---|---|---|---|---|---|"
    )
    for size in sizes:
        index = LocalSemanticIndex()
        # Real question vectors first; beyond the pool, random unit vectors stand in (search cost is the same).
        extra = rng.standard_normal((max(size - len(pool_texts), 0), DIMENSIONS)).astype(np.float32)
        for i in range(size):
            text = pool_texts[i % len(pool_texts)]
            vector = vecs[text] if i < len(pool_texts) else extra[i - len(pool_texts)]
            index.add("scope", "tenant", "model", str(i), vector, text, "{}", expires_at=float("inf"))
        for name, texts in queries.items():
            tokens = int(np.median([len(embedder._tokenizer.encode(q).ids) for q in texts]))
            totals, embeds, searches, verifies, hits = [], [], [], [], 0
            for q in texts:
                t0 = time.perf_counter()
                qvec = embedder.embed([q])[0]
                t1 = time.perf_counter()
                candidates = index.search("scope", qvec, TOP_K, now=time.time())
                t2 = time.perf_counter()
                ranked = verifier.rank(q, qvec, candidates)
                hits += bool(ranked and ranked[0][0] >= threshold)
                t3 = time.perf_counter()
                totals.append(t3 - t0)
                embeds.append(t1 - t0)
                searches.append(t2 - t1)
                verifies.append(t3 - t2)

            def ms(xs: list[float], q: float) -> str:
                return f"{np.percentile(xs, q) * 1e3:.2f}"

            print(
                f"| {name} | {tokens} | {size:,} | {ms(totals, 50)} | {ms(totals, 99)} | {ms(embeds, 50)} "
                f"| {ms(searches, 50)} | {ms(verifies, 50)} | {hits}/{len(texts)} |"
            )
        index.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="subsample: 3,000 QQP pairs, 2,000 distractors, 10k index")
    parser.add_argument("--distractors", type=int, default=10_000)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / f"llm_gateway_qqp_test_{embedding_model_slug()}.npz",
        help="embeddings of the questions by text, kept between runs (named after the embedding model)",
    )
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    started = time.perf_counter()
    rng = np.random.default_rng(7)

    with gzip.open(args.data / "qqp_pairs.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [r for r in map(json.loads, f) if r["split"] == "test"]
    mock: list[dict[str, str]] = json.loads((args.data / "gptcache_mock_pairs.json").read_text(encoding="utf-8"))
    if args.quick:
        rows = [rows[i] for i in sorted(rng.choice(len(rows), 3000, replace=False))]
    test_questions = sorted({r["a"] for r in rows} | {r["b"] for r in rows})
    distractor_count = 2000 if args.quick else args.distractors
    distractors = [
        test_questions[i]
        for i in sorted(rng.choice(len(test_questions), min(distractor_count, len(test_questions)), replace=False))
    ]

    # A bulk embedder with all cores for the data; the lookup-latency section uses the serving default.
    bulk = Embedder(threads=None if platform.system() != "Linux" else 2)
    vecs = embed_cached(test_questions + [m["origin"] for m in mock] + [m["similar"] for m in mock], args.cache, bulk)
    verifier = load_verifier()
    print(
        f"# Semantic cache quality ({platform.processor() or platform.machine()}, "
        f"embeddings {time.perf_counter() - started:.0f}s)"
    )
    qqp_section(rows, vecs, verifier)
    gptcache_section(mock, distractors, vecs, verifier)
    sizes = [10_000] if args.quick else [10_000, 100_000]
    # The index holds the queries' origins among QQP questions, so lookups find candidates to verify.
    # The index holds each query's counterpart among QQP questions, so lookups find candidates to verify.
    duplicates = [r for r in rows if r["label"] == 1][:300]
    stored = [m["origin"] for m in mock[:300]] + [r["a"] for r in duplicates]
    query_sets = {
        "QQP questions (duplicates stored)": [r["b"] for r in duplicates],
        "GPTCache `similar`s (origins stored)": [m["similar"] for m in mock[:300]],
    }
    asked = {q for texts in query_sets.values() for q in texts}
    pool = stored + sorted(set(test_questions) - set(stored) - asked)  # a query's own text is never stored
    latency_section(sizes, pool, vecs, query_sets, verifier)
    print(f"\n_total {time.perf_counter() - started:.0f}s_")


if __name__ == "__main__":
    main()
