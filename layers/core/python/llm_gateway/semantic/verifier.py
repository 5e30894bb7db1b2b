"""Pair verifier: decides whether a cosine-retrieved cache entry means the same as the query.

A small ensemble of MLPs over `features.pair_features`, trained on the QQP dev split by scripts/train_verifier.py and
shipped as `data/verifier.json`. Inference is numpy only. Its output is Platt-calibrated, and the artefact
carries the precision curve of a held-out part of dev, so a tenant asks for a precision, not a cosine.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from llm_gateway import weights
from llm_gateway.semantic.features import pair_features
from llm_gateway.semantic.index import Candidate
from llm_gateway.weights import sigmoid_array

ARTEFACT_PATH = Path(__file__).parent / "data" / "verifier.json"

FloatArray = npt.NDArray[np.float32]


def decode_array(packed: dict[str, Any]) -> FloatArray:
    """A packed weight array (`weights.decode_array`) as float32, whatever its stored precision."""
    return weights.decode_array(packed).astype(np.float32)


class Verifier:
    """Calibrated P(same meaning) for a (query, cached question) pair."""

    def __init__(self, artefact: dict[str, Any]) -> None:
        self._mean = decode_array(artefact["mean"])
        self._scale = decode_array(artefact["scale"])
        # An ensemble of one-hidden-layer MLPs trained with different seeds; their logits are
        # averaged. The members' hidden layers are packed side by side so that scoring is two
        # matrix products whatever the ensemble size.
        members = [
            [(decode_array(layer["weight"]), decode_array(layer["bias"])) for layer in member["layers"]]
            for member in artefact["members"]
        ]
        if not members or any(len(layers) != 2 or layers[1][0].shape[1] != 1 for layers in members):
            raise ValueError("the verifier artefact must hold one-hidden-layer MLPs with one output")
        self._w1 = np.ascontiguousarray(np.hstack([layers[0][0] for layers in members]))
        self._b1 = np.concatenate([layers[0][1] for layers in members])
        self._w2 = np.stack([layers[1][0][:, 0] for layers in members])  # (members, hidden)
        self._b2 = np.array([layers[1][1][0] for layers in members], dtype=np.float32)
        self._platt_a = float(artefact["platt"]["a"])
        self._platt_b = float(artefact["platt"]["b"])
        curve = artefact["curve"]
        self._thresholds = np.asarray(curve["threshold"], dtype=np.float64)
        precision = np.asarray(curve["precision"], dtype=np.float64)
        # Precision of "accept when p >= t" is not monotonic in t on finite data; use the guaranteed
        # envelope (the worst precision at t or above), so a higher target never lowers the threshold.
        self._precision_floor = np.minimum.accumulate(precision[::-1])[::-1]
        self.metadata: dict[str, Any] = artefact.get("metadata", {})
        # Candidates below this cosine are rejected without computing their features: 99.5 % of
        # the held-out duplicates lie above it (see the training script).
        self.cosine_floor = float(self.metadata.get("cosine_floor", -1.0))

    def logits(self, features: FloatArray) -> npt.NDArray[np.float64]:
        """Uncalibrated scores of a feature matrix from `pair_features`."""
        x = (np.asarray(features, dtype=np.float32) - self._mean) / self._scale
        hidden = np.maximum(x @ self._w1 + self._b1, 0.0).reshape(len(x), *self._w2.shape)
        per_member = np.einsum("nmh,mh->nm", hidden, self._w2) + self._b2
        mean: npt.NDArray[np.float64] = per_member.mean(axis=1).astype(np.float64)
        return mean

    def calibrate(self, logits: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return sigmoid_array(self._platt_a * logits + self._platt_b)

    def probabilities(
        self,
        queries: Sequence[str],
        candidates: Sequence[str],
        query_vecs: FloatArray,
        candidate_vecs: FloatArray,
    ) -> npt.NDArray[np.float64]:
        """Calibrated P(same meaning) for aligned pairs whose unit embeddings are given."""
        if len(queries) == 0:
            return np.zeros(0, dtype=np.float64)
        return self.calibrate(self.logits(pair_features(queries, candidates, query_vecs, candidate_vecs)))

    def probability(
        self,
        query: str,
        candidate: str,
        cosine: float | None = None,
        query_vec: FloatArray | None = None,
        candidate_vec: FloatArray | None = None,
    ) -> float:
        """Calibrated P(same meaning); embeds whichever text has no vector given.

        `cosine` is accepted for callers that already have it; it is recomputed from the vectors,
        which the verifier needs anyway.
        """
        del cosine
        if query_vec is None or candidate_vec is None:
            from llm_gateway.semantic.embeddings import default_embedder

            missing = [t for t, v in ((query, query_vec), (candidate, candidate_vec)) if v is None]
            embedded = iter(default_embedder().embed(missing))
            query_vec = next(embedded) if query_vec is None else query_vec
            candidate_vec = next(embedded) if candidate_vec is None else candidate_vec
        return float(
            self.probabilities([query], [candidate], np.asarray(query_vec)[None], np.asarray(candidate_vec)[None])[0]
        )

    def rank(self, query: str, query_vec: FloatArray, candidates: Sequence[Candidate]) -> list[tuple[float, Candidate]]:
        """(calibrated P(same meaning), candidate) for the candidates at or above `cosine_floor`,
        best first; one batched pass. Candidates without a stored vector are embedded."""
        kept = [c for c in candidates if c.cosine >= self.cosine_floor]
        if not kept:
            return []
        missing = [c.text for c in kept if c.vector is None]
        if missing:
            from llm_gateway.semantic.embeddings import default_embedder

            embedded = iter(default_embedder().embed(missing))
        vectors = np.stack([c.vector if c.vector is not None else next(embedded) for c in kept])
        queries = np.repeat(np.asarray(query_vec, dtype=np.float32).reshape(1, -1), len(kept), axis=0)
        probs = self.probabilities([query] * len(kept), [c.text for c in kept], queries, vectors)
        return sorted(zip(probs.tolist(), kept, strict=True), key=lambda pair: -pair[0])

    def threshold_for(self, target_precision: float) -> float:
        """The lowest probability threshold whose held-out precision stays at or above the target.

        Returns 1.0 (accept nothing) when no threshold reached that precision on the held-out data.
        """
        reached = np.nonzero(self._precision_floor >= target_precision)[0]
        return float(self._thresholds[reached[0]]) if reached.size else 1.0


@functools.lru_cache(maxsize=1)
def load_verifier(path: Path = ARTEFACT_PATH) -> Verifier:
    """The shipped verifier (loaded once per process); needs numpy only."""
    return Verifier(json.loads(path.read_text(encoding="utf-8")))
