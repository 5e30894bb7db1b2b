"""Moderation tier 2: a harmful-content classifier with calibrated scores and a category.

One TF-IDF linear model (`guard.text_classifier`) with several heads, trained by
`scripts/train_harmful.py` on packaged data (`harmful_data`): `harmful` (Platt-calibrated
probability) and one head per category (weapons, cybercrime, crime, misinformation, harassment,
other_harm), the highest of which names the category. The artefact carries the decision threshold
(benign false-positive rate target) and the uncertain band that the tier 3 judge decides.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..guard.embedding_head import EmbeddingHead
from ..guard.text_classifier import LinearTextClassifier, TextMemo, read_artefact, sigmoid

ARTEFACT_PATH = Path(__file__).parent / "data" / "harmful.json.gz"
# Texts longer than this are scored per sentence and per pair of adjacent sentences, and the worst
# counts: the classifier learnt from request-length texts, and a harmful sentence inside a long
# answer would be diluted if the whole answer were one TF-IDF vector.
LONG_CHARS = 200
_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+|\n+")
CATEGORY_NAMES = ("weapons", "cybercrime", "crime", "misinformation", "harassment", "other_harm")


@dataclass(frozen=True)
class HarmAssessment:
    score: float  # calibrated probability that the text is harmful
    category: str  # the most likely category, were it harmful
    category_score: float  # that category's share (softmax over the category heads)
    window: str = ""  # the part of a long text the score comes from ("" for the whole text)


class HarmfulClassifier(LinearTextClassifier):
    def __init__(self, artefact: dict[str, Any]) -> None:
        super().__init__(artefact)
        if tuple(self.heads[1:]) != CATEGORY_NAMES:
            raise ValueError(f"harmful-content artefact heads {self.heads} != ['harmful', *{list(CATEGORY_NAMES)}]")
        self._a = float(artefact["calibration"]["a"])
        self._b = float(artefact["calibration"]["b"])
        self.threshold = float(artefact["threshold"])
        low, high = artefact["band"]
        self.band = (float(low), float(high))
        self._assessed: TextMemo[HarmAssessment] = TextMemo()
        head = artefact.get("embedding_head")
        self.head = EmbeddingHead(head) if head is not None else None

    def assess(self, text: str) -> HarmAssessment:
        return self._assessment(self.logits(text))

    def _assessment(self, logits: list[float]) -> HarmAssessment:
        score = sigmoid(self._a * logits[0] + self._b)
        top = max(range(1, len(logits)), key=logits.__getitem__)
        total = sum(math.exp(z - logits[top]) for z in logits[1:])
        return HarmAssessment(score=score, category=self.heads[top], category_score=1.0 / total)

    def assess_long(self, text: str, start: int = 0) -> HarmAssessment:
        """The worst of `text`'s sentence windows; with `start`, only those from about
        LONG_CHARS before it (a stream scoring what it added since the last check). Each sentence
        is counted once: a pair's counts are its two sentences' counts added, and every window
        is scored in one pass."""
        if start == 0:  # a whole text: the guard may have scored it already (or on an earlier turn)
            return self._assessed.get(text, self._assess_long)
        if start > LONG_CHARS:
            cut = text.rfind(" ", 0, start - LONG_CHARS)
            text = text[cut + 1 :] if cut >= 0 else text
        return self._assess_long(text)

    def _assess_long(self, text: str) -> HarmAssessment:
        sentences = sentence_windows(text)
        if len(sentences) == 1:
            return self.assess(text)
        logits, window = self.worst_window_at(sentences)
        return replace(self._assessment(logits), window=" ".join(sentences[i] for i in window))

    def assess_request(self, text: str) -> HarmAssessment:
        """A request's assessment: `assess_long`'s, and with an embedding head (artefacts that
        carry one) the higher of it and the head's probability for the same text or window. The
        head reads the sentence embedding; a short request's is the one the semantic cache and
        the topic filter use, computed once."""
        assessed = self.assess_long(text)
        if self.head is None:
            return assessed
        from ..semantic.embeddings import default_embedder  # onnxruntime: only for heads

        probability = self.head.probability(default_embedder().embed_one(assessed.window or text))
        return replace(assessed, score=max(assessed.score, probability))


def sentence_windows(text: str) -> list[str]:
    """A short text whole; a long one as its sentences (scored alone and in adjacent pairs)."""
    if len(text) <= LONG_CHARS:
        return [text]
    sentences = [s for s in _SENTENCE_END.split(text) if s.strip()]
    return sentences if len(sentences) > 1 else [text]


@functools.lru_cache(maxsize=1)
def load_harmful_classifier(path: Path = ARTEFACT_PATH) -> HarmfulClassifier:
    """The shipped classifier, loaded once per process."""
    return HarmfulClassifier(read_artefact(path))
