"""Recall of the Momento semantic index's LSH scheme against exact search.

For each query the exact answer is the local index's top-1 (`LocalSemanticIndex`, full matrix
product); the LSH answer is what `MomentoSemanticIndex` returns: the union of the query's bucket
postings, ranked by cosine. Recall@1 = share of queries whose LSH top-1 is the exact top-1, reported
for queries whose exact nearest neighbour is at or above a cosine threshold.

Data sets:
- synthetic: clustered unit vectors (entries of a cluster have cosine ~0.36, like unrelated
  questions under one system prompt), queries at cosine 0.75-1.0 from a stored entry;
- gptcache: real MiniLM embeddings of ../shared/data/gptcache_mock_pairs.json, origins indexed and
  the paraphrases ("similar") queried — when `llm_gateway.semantic.embeddings` is importable.

The LSH side is simulated in memory with the adapter's own hash family (`HyperplaneLSH`) and
float16 postings; `--check-momento N` also runs N queries through the real adapter on the gRPC
stand-in and asserts the same answers.

    python bench/lsh_recall.py [--entries 5000] [--queries 2000] [--check-momento 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from llm_gateway.adapters.local.semantic import LocalSemanticIndex
from llm_gateway.semantic.index import DIMENSIONS
from llm_gateway.semantic.lsh import HyperplaneLSH, band_match_probability

Matrix = npt.NDArray[np.float32]
THRESHOLDS = (0.70, 0.80, 0.85, 0.90, 0.95)
SCOPE = "bench-scope"
PAIRS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "gptcache_mock_pairs.json"


def _normalise(matrix: Matrix) -> Matrix:
    normalised: Matrix = (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)
    return normalised


def _towards(base: Matrix, cosines: npt.NDArray[np.float64], rng: np.random.Generator) -> Matrix:
    """Rows at the given cosines from the rows of `base`."""
    noise = rng.standard_normal(base.shape).astype(np.float32)
    noise -= np.sum(noise * base, axis=1, keepdims=True) * base
    noise = _normalise(noise)
    c = cosines.astype(np.float32)[:, None]
    return _normalise((c * base + np.sqrt(1 - c**2) * noise).astype(np.float32))


def synthetic(entries: int, queries: int, seed: int = 11) -> tuple[Matrix, Matrix]:
    rng = np.random.default_rng(seed)
    centres = _normalise(rng.standard_normal((max(1, entries // 100), DIMENSIONS)).astype(np.float32))
    stored = _towards(centres[rng.integers(0, len(centres), entries)], np.full(entries, 0.6), rng)
    targets = stored[rng.integers(0, entries, queries)]
    return stored, _towards(targets, rng.uniform(0.75, 1.0, queries), rng)


def gptcache() -> tuple[Matrix, Matrix] | None:
    try:
        from llm_gateway.semantic.embeddings import default_embedder
    except ImportError:
        return None
    pairs = json.loads(PAIRS.read_text())
    embedder = default_embedder()
    origins = np.asarray(embedder.embed([p["origin"] for p in pairs]), dtype=np.float32)
    similars = np.asarray(embedder.embed([p["similar"] for p in pairs]), dtype=np.float32)
    return origins, similars


@dataclass
class LshIndex:
    """The Momento adapter's candidate generation and ranking, in memory."""

    lsh: HyperplaneLSH
    buckets: dict[tuple[int, int], list[int]]
    postings: Matrix  # float16-rounded, as the buckets store them

    @classmethod
    def build(cls, lsh: HyperplaneLSH, stored: Matrix) -> LshIndex:
        buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
        for row, hashes in enumerate(lsh.band_hashes_many(stored)):
            for band, value in enumerate(hashes):
                buckets[(band, int(value))].append(row)
        return cls(lsh, buckets, stored.astype(np.float16).astype(np.float32))

    def search(self, query: Matrix) -> tuple[int | None, int, int]:
        """(top-1 row or None, distinct candidates, postings transferred) for one query."""
        hashes = self.lsh.band_hashes(query)
        fetched = [self.buckets.get((band, value), []) for band, value in enumerate(hashes)]
        candidates = sorted({row for bucket in fetched for row in bucket})
        if not candidates:
            return None, 0, 0
        best = candidates[int(np.argmax(self.postings[candidates] @ query))]
        return best, len(candidates), sum(len(b) for b in fetched)


def exact_top1(stored: Matrix, queries: Matrix) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    local = LocalSemanticIndex(":memory:")
    far = time.time() + 3600
    for row, vector in enumerate(stored):
        local.add(SCOPE, "bench", "m", str(row), vector, "", "", far)
    rows, cosines = [], []
    for query in queries:
        [hit] = local.search(SCOPE, query, 1, time.time())
        rows.append(int(hit.entry_id))
        cosines.append(hit.cosine)
    local.close()
    return np.asarray(rows, dtype=np.int64), np.asarray(cosines, dtype=np.float32)


def report(name: str, stored: Matrix, queries: Matrix, families: list[HyperplaneLSH]) -> None:
    truth, nn_cosine = exact_top1(stored, queries)
    print(f"\n{name}: {len(stored)} entries in one scope, {len(queries)} queries")
    header = "bands x bits | " + " | ".join(f"R@1 cos>={t:.2f} (n)" for t in THRESHOLDS)
    print(header + " | cand/query | postings/query | bucket RTs")
    for lsh in families:
        index = LshIndex.build(lsh, stored)
        answers = [index.search(q) for q in queries]
        hit = np.asarray([a[0] == t for a, t in zip(answers, truth, strict=True)])
        cells = []
        for threshold in THRESHOLDS:
            mask = nn_cosine >= threshold
            cells.append(f"{hit[mask].mean():.3f} ({int(mask.sum())})" if mask.any() else "-")
        candidates = np.mean([a[1] for a in answers])
        transferred = np.mean([a[2] for a in answers])
        print(
            f"{lsh.bands:>5} x {lsh.bits:<4} | "
            + " | ".join(f"{c:>18}" for c in cells)
            + f" | {candidates:10.1f} | {transferred:14.1f} | {lsh.bands:10d}"
        )


def check_momento(stored: Matrix, queries: Matrix, count: int) -> None:
    """The real adapter on the gRPC stand-in returns the simulation's answers (first 1,000 entries)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from llm_gateway.adapters.aws.momento_semantic import MomentoSemanticIndex
    from tests.support.momento_standin import MomentoStandIn

    stored = stored[:1000]
    lsh = HyperplaneLSH()
    simulated = LshIndex.build(lsh, stored)
    with MomentoStandIn(caches=("bench",)) as standin, standin.cache_client() as client:
        remote = MomentoSemanticIndex(client, "bench", lsh=lsh)
        far = time.time() + 3600
        started = time.perf_counter()
        for row, vector in enumerate(stored):
            remote.add(SCOPE, "bench", "m", str(row), vector, "", "{}", far)
        add_ms = (time.perf_counter() - started) * 1000 / len(stored)
        agree, started = 0, time.perf_counter()
        for query in queries[:count]:
            found = remote.search(SCOPE, query, 1, time.time())
            expected = simulated.search(query)[0]
            agree += (int(found[0].entry_id) if found else None) == expected
        search_ms = (time.perf_counter() - started) * 1000 / count
        remote.close()
    print(
        f"\nmomento adapter on the stand-in, {len(stored)} entries: {agree}/{count} top-1 answers equal the "
        "simulation; "
        f"{add_ms:.1f} ms per add, {search_ms:.1f} ms per search (loopback)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--check-momento", type=int, default=0, metavar="N")
    args = parser.parse_args()
    families = [HyperplaneLSH(b, r) for b, r in [(16, 8), (8, 8), (12, 6), (20, 10), (24, 10)]]
    print("theory, P(share a band) at cosine 0.85 / 0.90:")
    for lsh in families:
        print(
            f"  {lsh.bands} x {lsh.bits}: "
            f"{band_match_probability(0.85, lsh.bands, lsh.bits):.3f} / "
            f"{band_match_probability(0.90, lsh.bands, lsh.bits):.3f}"
        )
    stored, queries = synthetic(args.entries, args.queries)
    report("synthetic clustered", stored, queries, families)
    real = gptcache()
    if real is None:
        print("\ngptcache: skipped (llm_gateway.semantic.embeddings is not importable)")
    else:
        report("gptcache mock pairs (MiniLM)", real[0], real[1], families)
    if args.check_momento:
        check_momento(stored, queries, min(args.check_momento, len(queries)))


if __name__ == "__main__":
    main()
