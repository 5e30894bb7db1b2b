"""Prompt-injection and jailbreak detection: TF-IDF n-grams and a linear model, in plain Python
(`text_classifier`).

Trained by `scripts/train_injection.py` (scikit-learn `TfidfVectorizer` word 1-2-grams and
`char_wb` 3-5-grams, `LogisticRegression`) and shipped as `data/injection.json.gz`; a
1,000-character prompt scores in about a millisecond.

The decision threshold comes with the artefact: the lowest score whose false-positive rate on
benign validation prompts stays within the target the artefact records (see its metadata).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..memo import TextMemo
from ..weights import sigmoid
from .text_classifier import LinearTextClassifier, read_artefact

ARTEFACT_PATH = Path(__file__).parent / "data" / "injection.json.gz"


@dataclass(frozen=True)
class InjectionVerdict:
    score: float  # probability-like score of the linear model (class-balanced training)
    flagged: bool


class InjectionClassifier(LinearTextClassifier):
    def __init__(self, artefact: dict[str, Any]) -> None:
        super().__init__(artefact)
        self.threshold = float(artefact["threshold"])
        self._scores: TextMemo[float] = TextMemo()

    def score(self, text: str) -> float:
        return self._scores.get(text, self._score)

    def _score(self, text: str) -> float:
        return sigmoid(self.logits(text)[0])

    def classify(self, text: str, threshold: float | None = None) -> InjectionVerdict:
        score = self.score(text)
        return InjectionVerdict(score=score, flagged=score >= (self.threshold if threshold is None else threshold))


@functools.lru_cache(maxsize=1)
def load_injection_classifier(path: Path = ARTEFACT_PATH) -> InjectionClassifier:
    """The shipped classifier, loaded once per process."""
    return InjectionClassifier(read_artefact(path))
