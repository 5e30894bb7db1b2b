"""Moderation tier 2: a harmful-content classifier with calibrated scores and a category.

One TF-IDF linear model (`guard.text_classifier`) with several heads, trained by
`scripts/train_harmful.py` on packaged data (`harmful_data`): `harmful` (Platt-calibrated
probability) and one head per category (weapons, cybercrime, crime, misinformation, harassment,
other_harm), the highest of which names the category. Artefacts may add an embedding head over
the sentence embedding and a fusion (`Fusion`): a logistic regression over both models' logits
that gives a request (and an answer's worst window) its one calibrated score. The artefact
carries the decision threshold (benign false-positive rate target) and the uncertain band that
the tier 3 judge decides.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..guard.embedding_head import EmbeddingHead
from ..guard.text_classifier import LinearTextClassifier, read_artefact
from ..memo import TextMemo
from ..weights import sigmoid

ARTEFACT_PATH = Path(__file__).parent / "data" / "harmful.json.gz"
# Texts longer than this are scored per sentence and per pair of adjacent sentences, and the worst
# counts: the classifier learnt from request-length texts, and a harmful sentence inside a long
# answer would be diluted if the whole answer were one TF-IDF vector.
LONG_CHARS = 200
# Answers, and long requests, whose worst window the n-grams score below this skip the head: a
# window's embedding (~1.5-2.5 ms) would be computed for the head alone (a short request's is
# shared with the semantic cache and the topic filter). Skipped: ~70 % of everyday answers and
# ~50 % of everyday requests over 200 characters. HarmBench test behaviours inside answers lose 1
# of 240 at the band's bottom (0.921 -> 0.917), none at the threshold; HarmBench's contextual
# behaviours (the lowest scores 0.025) lose none.
HEAD_FROM = 0.01
_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+|\n+")
CATEGORY_NAMES = ("weapons", "cybercrime", "crime", "misinformation", "harassment", "other_harm")
# The fusion reads logits clipped to this: beyond it a model is sure, and one extreme logit must
# not outvote the other model on its own.
FUSION_CLIP = 12.0


@dataclass(frozen=True)
class HarmAssessment:
    score: float  # calibrated probability that the text is harmful
    category: str  # the most likely category, were it harmful
    category_score: float  # that category's share (softmax over the category heads)
    window: str = ""  # the part of a long text the score comes from ("" for the whole text)


def _clipped(logit: float) -> float:
    return max(-FUSION_CLIP, min(FUSION_CLIP, logit))


def probability_logit(probability: float) -> float:
    """The logit of a probability, finite at 0 and 1."""
    p = max(1e-9, min(1.0 - 1e-9, probability))
    return math.log(p) - math.log1p(-p)


@dataclass(frozen=True)
class Fusion:
    """One calibrated probability from the two models of a request: a logistic regression over
    tier 2's calibrated logit and the embedding head's logit, fitted on validation rows neither
    model was fitted on (`scripts/train_harmful.py`). A text that one model alone finds harmful
    while the other is sure it is not scores low, as one both find harmful scores high."""

    ngram: float  # weight of tier 2's logit
    head: float  # weight of the head's logit
    bias: float

    def probability(self, ngram_logit: float, head_logit: float) -> float:
        return sigmoid(self.bias + self.ngram * _clipped(ngram_logit) + self.head * _clipped(head_logit))


def _fusion(spec: dict[str, Any] | None) -> Fusion | None:
    if spec is None:
        return None
    if spec.get("features") != ["ngram", "head"]:
        raise ValueError(f"harmful-content fusion features {spec.get('features')} != ['ngram', 'head']")
    ngram, head = (float(w) for w in spec["weights"])
    return Fusion(ngram, head, float(spec["bias"]))


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
        self.fusion = _fusion(artefact.get("fusion"))

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
        return self._assess_long(_newest(text, start))

    def _assess_long(self, text: str) -> HarmAssessment:
        sentences = sentence_windows(text)
        if len(sentences) == 1:
            return self.assess(text)
        logits, window = self.worst_window_at(sentences)
        return replace(self._assessment(logits), window=" ".join(sentences[i] for i in window))

    def assess_request(self, text: str) -> HarmAssessment:
        """A request's assessment: `assess_long`'s, and with an embedding head (artefacts that
        carry one) the fusion of tier 2's score and the head's for the same text or window (the
        higher of the two for an artefact without a fusion). The head reads the sentence
        embedding; a short request's is the one the semantic cache and the topic filter use,
        computed once. A long request whose worst window the n-grams find clearly benign (below
        HEAD_FROM) keeps their score: its window's embedding would be computed for the head alone."""
        assessed = self.assess_long(text)
        if assessed.window and assessed.score < HEAD_FROM:
            return assessed
        return self._with_head(assessed, text)

    def assess_answer(self, text: str, start: int = 0) -> HarmAssessment:
        """An answer's assessment (whole, or with `start` a stream's newest part as in
        `assess_long`): its worst window, scored as a request's is, so a benign sentence the
        n-grams alone would take for harmful (a question the answer quotes, an aside) is read by
        the head as well. A window the n-grams find clearly benign (below HEAD_FROM) is passed on
        their score alone, without the head's embedding."""
        assessed = self.assess_long(text, start)
        if assessed.score < HEAD_FROM:
            return assessed
        return self._with_head(assessed, _newest(text, start))

    def _with_head(self, assessed: HarmAssessment, text: str) -> HarmAssessment:
        if self.head is None:
            return assessed
        from ..semantic.embeddings import default_embedder  # onnxruntime: only for heads

        head_logit = self.head.logit(default_embedder().embed_one(assessed.window or text))
        return replace(assessed, score=self.fused(assessed.score, head_logit))

    def fused(self, ngram_score: float, head_logit: float) -> float:
        """A request's one score from tier 2's probability and the embedding head's logit."""
        if self.fusion is None:
            return max(ngram_score, sigmoid(head_logit))
        return self.fusion.probability(probability_logit(ngram_score), head_logit)


def _newest(text: str, start: int) -> str:
    """What a stream check scores: the text from about LONG_CHARS before `start`."""
    if start <= LONG_CHARS:
        return text
    cut = text.rfind(" ", 0, start - LONG_CHARS)
    return text[cut + 1 :] if cut >= 0 else text


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
