"""Prompt-injection and jailbreak detection: TF-IDF n-grams and a linear model, in plain Python.

Trained by `scripts/train_injection.py` (scikit-learn `TfidfVectorizer` word 1-2-grams and
`char_wb` 3-5-grams, `LogisticRegression`) and shipped as `data/injection.json.gz`: per vocabulary
term its idf and its weight (float32, see `encode_block_terms`). Scoring reproduces
scikit-learn's transform (the training script checks it against `predict_proba`), so the guard
needs neither scikit-learn nor numpy: a 1,000-character prompt scores in about a millisecond.

The decision threshold comes with the artefact: the lowest score whose false-positive rate on
benign validation prompts stays within the target the artefact records (see its metadata).
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
import math
import re
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ARTEFACT_PATH = Path(__file__).parent / "data" / "injection.json.gz"

# scikit-learn's defaults: `token_pattern` and the whitespace run `char_wb` collapses.
_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_WHITESPACE = re.compile(r"\s\s+")


def word_ngrams(text: str, low: int, high: int) -> Iterable[str]:
    """scikit-learn's `analyzer="word"` after lowercasing: tokens of 2+ word characters, n-grams
    joined by a space."""
    tokens = _TOKEN.findall(text.lower())
    for n in range(low, high + 1):
        for i in range(len(tokens) - n + 1):
            yield " ".join(tokens[i : i + n])


def char_wb_ngrams(text: str, low: int, high: int) -> Iterable[str]:
    """scikit-learn's `analyzer="char_wb"` after lowercasing: character n-grams inside words padded
    with one space on each side (a word shorter than n yields itself once)."""
    for word in _WHITESPACE.sub(" ", text.lower()).split():
        padded = f" {word} "
        for n in range(low, high + 1):
            if len(padded) <= n:  # ... and no longer n-grams of it either
                yield padded
                break
            for i in range(len(padded) - n + 1):
                yield padded[i : i + n]


_WORD_MEMO_LIMIT = 50_000


@dataclass(frozen=True)
class _Vocabulary:
    """One TF-IDF block: sublinear tf x idf, L2-normalised, dotted with the model's weights."""

    analyzer: str
    low: int
    high: int
    terms: dict[str, tuple[float, float]]  # term -> (idf, weight)
    # char_wb: a word's in-vocabulary n-grams, memoised (words repeat across prompts).
    _memo: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False, repr=False)

    def _grams(self, text: str) -> list[str]:
        if self.analyzer == "word":
            return [gram for gram in word_ngrams(text, self.low, self.high) if gram in self.terms]
        grams: list[str] = []
        for word in _WHITESPACE.sub(" ", text.lower()).split():
            known = self._memo.get(word)
            if known is None:
                known = tuple(g for g in char_wb_ngrams(word, self.low, self.high) if g in self.terms)
                if len(self._memo) >= _WORD_MEMO_LIMIT:
                    self._memo.clear()
                self._memo[word] = known
            grams.extend(known)
        return grams

    def contribution(self, text: str) -> float:
        counts = Counter(self._grams(text))
        norm_sq = dot = 0.0
        for term, count in counts.items():
            idf, weight = self.terms[term]
            value = (1.0 + math.log(count)) * idf
            norm_sq += value * value
            dot += value * weight
        return dot / math.sqrt(norm_sq) if norm_sq > 0 else 0.0


def encode_block_terms(terms: list[str], idf: list[float], weights: list[float]) -> dict[str, str]:
    """The artefact's compact form of a vocabulary: terms joined by newlines (n-grams never hold
    one) and two float32 arrays in base64; parsing it is ~10x faster than nested JSON lists."""
    if any("\n" in term for term in terms):
        raise ValueError("a term holds a newline")
    return {
        "terms": "\n".join(terms),
        "idf": base64.b64encode(array("f", idf).tobytes()).decode("ascii"),
        "weight": base64.b64encode(array("f", weights).tobytes()).decode("ascii"),
    }


def block_terms(block: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """term -> (idf, weight) of one artefact block."""
    idf, weights = array("f"), array("f")
    idf.frombytes(base64.b64decode(block["idf"]))
    weights.frombytes(base64.b64decode(block["weight"]))
    terms = block["terms"].split("\n") if block["terms"] else []
    return dict(zip(terms, zip(idf, weights, strict=True), strict=True))


@dataclass(frozen=True)
class InjectionVerdict:
    score: float  # probability-like score of the linear model (class-balanced training)
    flagged: bool


class InjectionClassifier:
    def __init__(self, artefact: dict[str, Any]) -> None:
        self._blocks = [
            _Vocabulary(
                analyzer=block["analyzer"],
                low=block["ngram_range"][0],
                high=block["ngram_range"][1],
                terms=block_terms(block),
            )
            for block in artefact["blocks"]
        ]
        self._bias = float(artefact["bias"])
        self.threshold = float(artefact["threshold"])
        self.metadata: dict[str, Any] = artefact.get("metadata", {})

    def score(self, text: str) -> float:
        z = self._bias + sum(block.contribution(text) for block in self._blocks)
        return 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, z))))

    def classify(self, text: str, threshold: float | None = None) -> InjectionVerdict:
        score = self.score(text)
        return InjectionVerdict(score=score, flagged=score >= (self.threshold if threshold is None else threshold))


@functools.lru_cache(maxsize=1)
def load_injection_classifier(path: Path = ARTEFACT_PATH) -> InjectionClassifier:
    """The shipped classifier, loaded once per process."""
    return InjectionClassifier(json.loads(gzip.decompress(path.read_bytes())))
