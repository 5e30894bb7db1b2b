"""Topic filtering: is the user's latest message about a topic the tenant allows?

Each topic is a handful of example requests. A message's score for a topic is the mean cosine
similarity of its two nearest examples (the semantic cache's embedding model). Besides the
tenant's allowed and denied topics, a packaged library of everyday topics stands for "anything
else"; library topics that mean the same as a tenant topic (centroid cosine >= LIBRARY_OVERLAP, or
the same name) are left out, so they cannot steal the tenant's requests. The nearest topic wins,
allowed topics with a margin. Quality on a held-out set: `bench/guard.py` section (e).
"""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..config import TopicGuard

LIBRARY_PATH = Path(__file__).parent / "data" / "topic_library.json"
LIBRARY_OVERLAP = 0.5
NEAREST = 2
Kind = Literal["allowed", "denied", "other"]


@dataclass(frozen=True)
class TopicMatch:
    topic: str
    kind: Kind
    score: float


def library() -> dict[str, list[str]]:
    data: dict[str, Any] = json.loads(LIBRARY_PATH.read_text(encoding="utf-8"))
    return {name: examples for name, examples in data.items() if not name.startswith("_")}


def _centroid(vectors: np.ndarray) -> np.ndarray:
    mean = vectors.mean(axis=0)
    unit: np.ndarray = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return unit


class TopicClassifier:
    def __init__(self, policy: TopicGuard, embed: Any) -> None:
        self.margin = policy.allowed_margin
        names: list[str] = []
        kinds: list[Kind] = []
        vectors: list[np.ndarray] = []
        for kind, topics in (("allowed", policy.allowed), ("denied", policy.denied)):
            for topic in topics:
                names.append(topic.name)
                kinds.append(kind)  # type: ignore[arg-type]
                vectors.append(embed(topic.examples))
        own = [_centroid(v) for v in vectors]
        taken = {name.lower() for name in names}
        for name, examples in library().items():
            matrix = embed(examples)
            if name.lower() in taken or max(float(_centroid(matrix) @ c) for c in own) >= LIBRARY_OVERLAP:
                continue
            names.append(name)
            kinds.append("other")
            vectors.append(matrix)
        self.names, self.kinds = names, kinds
        self._matrix = np.vstack(vectors).astype(np.float32)
        # Each topic's examples as a row of indices into the matrix, padded to the longest; the
        # padding reads as -inf, except for a one-example topic, whose example fills its row
        # (the mean of its NEAREST = 2 best is then that example's similarity, as before).
        sizes = [len(v) for v in vectors]
        offsets = np.cumsum([0, *sizes[:-1]])
        width = max(*sizes, NEAREST)
        self._slots = np.zeros((len(vectors), width), dtype=np.intp)
        self._padding = np.zeros((len(vectors), width), dtype=bool)
        for i, (offset, size) in enumerate(zip(offsets, sizes, strict=True)):
            self._slots[i, :size] = np.arange(offset, offset + size)
            self._slots[i, size:] = offset
            self._padding[i, size:] = size > 1
        self._bias = np.array([self.margin if k == "allowed" else 0.0 for k in kinds], dtype=np.float32)

    def match(self, vector: np.ndarray) -> TopicMatch:
        sims = self._matrix @ vector
        near = np.where(self._padding, np.float32(-np.inf), sims[self._slots])
        scores = np.partition(near, -NEAREST, axis=1)[:, -NEAREST:].mean(axis=1, dtype=np.float32)
        best = int(np.argmax(scores + self._bias))
        return TopicMatch(self.names[best], self.kinds[best], round(float(scores[best]), 4))


_lock = threading.Lock()


@functools.lru_cache(maxsize=64)
def _classifier(policy_json: str) -> TopicClassifier:
    from ..semantic.embeddings import default_embedder

    return TopicClassifier(TopicGuard.model_validate_json(policy_json), default_embedder().embed)


def topic_classifier(policy: TopicGuard) -> TopicClassifier:
    """One classifier per distinct policy, built on first use (embeds its examples once)."""
    with _lock:
        return _classifier(policy.model_dump_json())


def refusal_message(policy: TopicGuard, match: TopicMatch) -> str:
    allowed = ", ".join(t.name for t in policy.allowed) or "other topics"
    return policy.refusal.format(topic=match.topic, allowed=allowed)
