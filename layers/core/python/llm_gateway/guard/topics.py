"""Topic filtering: is the user's latest message about a topic the tenant allows?

Each topic is a handful of example requests. A message's score for a topic is the mean cosine
similarity of its two nearest examples (the semantic cache's embedding model). Besides the
tenant's allowed and denied topics, a packaged library of everyday topics stands for "anything
else"; library topics that mean the same as a tenant topic (centroid cosine >= LIBRARY_OVERLAP, or
the same name) are left out, so they cannot steal the tenant's requests. The nearest topic wins,
allowed topics with a margin.

Advice: a denied topic whose examples ask for personal advice (what should *I* take or do about
*my* situation) is paired with the library's information topic on the same subject (general
health, general law), which then stays. A message nearest to either is decided by the advice
head (`data/topic_advice_head.json`, `scripts/train_topics.py`): a logistic regression over the
message's embedding and two word cues, plus how much nearer the advice examples are than the
information ones. Personal -> the denied topic; general ("what does ibuprofen do?") -> the
information topic, answered. Quality: `bench/guard.py` section (e), `bench/everyday_refusals.py`.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..config import TopicGuard
from ..weights import decode_array

DATA = Path(__file__).parent / "data"
LIBRARY_PATH = DATA / "topic_library.json"
HEAD_PATH = DATA / "topic_advice_head.json"
CUES_PATH = DATA / "topic_cues.json"
LIBRARY_OVERLAP = 0.5
# An information topic is on the subject of the tenant topic nearest to it at this centroid cosine
# or more (measured: health and medical advice 0.44-0.49, law and legal advice 0.47; any other
# library topic and either advice topic at most 0.23): paired with it when that topic is denied
# advice, left out otherwise (a tenant that allows or denies the whole subject).
PAIRING = 0.35
NEAREST = 2
CUE_CHARS = 1000  # the cues read a request's beginning: a pasted document adds nothing to them
# A long message is matched by its opening and its end, where people put what they ask ("Summarise
# this email: …", "… what should I take for it?"): embedding 1,000 characters costs 15-25 ms on
# this project's CPU, the 160 kept ~2 ms.
EMBED_HEAD, EMBED_TAIL = 100, 60
Kind = Literal["allowed", "denied", "other"]
_WORD = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class TopicMatch:
    topic: str
    kind: Kind
    score: float


def embedded_text(text: str) -> str:
    """What the topic filter embeds of a message: all of a short one; a long one's opening and end
    (cut at spaces)."""
    if len(text) <= EMBED_HEAD + EMBED_TAIL + 40:
        return text
    head = text[:EMBED_HEAD].rsplit(maxsplit=1)[0]
    tail = text[-EMBED_TAIL:].split(maxsplit=1)[-1]
    return f"{head} … {tail}"


def library() -> dict[str, list[str]]:
    data: dict[str, Any] = json.loads(LIBRARY_PATH.read_text(encoding="utf-8"))
    return {name: examples for name, examples in data.items() if not name.startswith("_")}


def information_topics() -> set[str]:
    """Library topics that stand for general information on a subject an advice topic denies."""
    return set(json.loads(LIBRARY_PATH.read_text(encoding="utf-8")).get("_information", []))


class Cues:
    """Word cues the embedding cannot give: MiniLM reads English only (`data/topic_cues.json`)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.english = frozenset(data["english"])
        lists = data["first_person"]
        self.first_person_en = frozenset(lists["en"])
        self.first_person_other = frozenset(w for lang, words in lists.items() if lang != "en" for w in words)
        self.marks = tuple(data["first_person_marks"])
        stems = [s for words in data["subject"].values() for s in words]
        alternatives = [re.escape(s[:-1]) + r"(?!\w)" if s.endswith("$") else re.escape(s) for s in stems]
        self.subject = re.compile(r"(?<!\w)(?:" + "|".join(sorted(alternatives, key=len, reverse=True)) + ")")

    def __call__(self, text: str) -> tuple[float, float]:
        """(first person, another language with first person and a medical or legal word)."""
        low = text[:CUE_CHARS].lower()
        words = _WORD.findall(low)
        english = sum(w in self.english for w in words) > 0.15 * len(words)
        if english:
            return float(any(w in self.first_person_en for w in words)), 0.0
        first = any(w in self.first_person_other for w in words) or any(m in low for m in self.marks)
        return float(first), float(first and self.subject.search(low) is not None)


@dataclass(frozen=True)
class AdviceHead:
    """Logistic regression: personal advice request (1) or not (0), over [embedding, cues];
    `margin_weight` adds the advice topic's score minus the information topic's."""

    weights: np.ndarray
    cue_weights: np.ndarray
    bias: float
    margin_weight: float
    threshold: float
    cues: Cues

    def logit(self, vector: np.ndarray, text: str) -> float:
        """The head alone (the margin left out): > threshold reads as a personal request."""
        cues = np.asarray(self.cues(text), dtype=np.float32)
        return float(self.weights @ vector) + float(self.cue_weights @ cues) + self.bias

    def personal(self, vector: np.ndarray, text: str, margin: float) -> bool:
        return self.logit(vector, text) + self.margin_weight * margin >= self.threshold


@functools.cache
def advice_head() -> AdviceHead:
    data: dict[str, Any] = json.loads(HEAD_PATH.read_text(encoding="utf-8"))
    cues = Cues(json.loads(CUES_PATH.read_text(encoding="utf-8")))
    return AdviceHead(
        weights=decode_array(data["weights"]).astype(np.float32),
        cue_weights=decode_array(data["cue_weights"]).astype(np.float32),
        bias=float(data["bias"]),
        margin_weight=float(data["margin_weight"]),
        threshold=float(data["threshold"]),
        cues=cues,
    )


def _centroid(vectors: np.ndarray) -> np.ndarray:
    mean = vectors.mean(axis=0)
    unit: np.ndarray = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return unit


def is_advice_topic(head: AdviceHead, examples: list[str], vectors: np.ndarray) -> bool:
    """At least half the topic's examples read as personal requests to the head alone."""
    personal = sum(head.logit(v, text) >= head.threshold for v, text in zip(vectors, examples, strict=True))
    return 2 * personal >= len(examples)


class TopicClassifier:
    def __init__(self, policy: TopicGuard, embed: Any, head: AdviceHead | None = None) -> None:
        self.margin = policy.allowed_margin
        self.head = head or advice_head()
        names: list[str] = []
        kinds: list[Kind] = []
        vectors: list[np.ndarray] = []
        advice: list[bool] = []
        for kind, topics in (("allowed", policy.allowed), ("denied", policy.denied)):
            for topic in topics:
                names.append(topic.name)
                kinds.append(kind)  # type: ignore[arg-type]
                vectors.append(embed(topic.examples))
                advice.append(kind == "denied" and is_advice_topic(self.head, topic.examples, vectors[-1]))
        own = [_centroid(v) for v in vectors]
        taken = {name.lower() for name in names}
        information = information_topics()
        pair_of = list(range(len(names)))  # a topic's advice topic: itself, its partner, or -1
        pair_of = [i if advice[i] else -1 for i in pair_of]
        for name, examples in library().items():
            if name.lower() in taken:
                continue
            matrix = embed(examples)
            overlaps = [float(_centroid(matrix) @ c) for c in own]
            nearest = int(np.argmax(overlaps))
            if name in information and overlaps[nearest] >= PAIRING:
                if not advice[nearest]:
                    continue  # the tenant's own topic on this subject (allowed, or denied as a whole)
                pair_of.append(nearest)
            elif max(overlaps) >= LIBRARY_OVERLAP:
                continue
            else:
                pair_of.append(-1)
            names.append(name)
            kinds.append("other")
            vectors.append(matrix)
        self.names, self.kinds = names, kinds
        self._pair_of = np.array(pair_of, dtype=np.intp)
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

    def scores(self, vector: np.ndarray) -> np.ndarray:
        sims = self._matrix @ vector
        near = np.where(self._padding, np.float32(-np.inf), sims[self._slots])
        scores: np.ndarray = np.partition(near, -NEAREST, axis=1)[:, -NEAREST:].mean(axis=1, dtype=np.float32)
        return scores

    def pair(self, scores: np.ndarray) -> tuple[int, int] | None:
        """(advice topic, its best information topic) when the nearest topic is either of a pair."""
        advice = int(self._pair_of[int(np.argmax(scores + self._bias))])
        partners = np.flatnonzero((self._pair_of == advice) & (np.arange(len(self.names)) != advice))
        if advice < 0 or not len(partners):
            return None
        return advice, int(partners[np.argmax(scores[partners])])

    def match(self, vector: np.ndarray, text: str = "") -> TopicMatch:
        """The nearest topic; between an advice topic and its information topic, the head decides
        (`text` gives it the word cues; without it, only the embedding speaks)."""
        scores = self.scores(vector)
        best = int(np.argmax(scores + self._bias))
        if (pair := self.pair(scores)) is not None:
            advice, information = pair
            margin = float(scores[advice] - scores[information])
            best = advice if self.head.personal(vector, text, margin) else information
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
