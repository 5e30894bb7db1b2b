"""Linear text classifiers over TF-IDF n-grams, scored in plain Python (no scikit-learn, no numpy).

The guard's prompt-injection classifier and the moderation tier 2 harmful-content classifier are
both trained with scikit-learn (`TfidfVectorizer` word and `char_wb` blocks, logistic regression)
and shipped as a gzipped JSON artefact: per vocabulary term its idf and one weight per output head
(float32, see `encode_block_terms`). Scoring reproduces scikit-learn's transform exactly (the
training scripts check it against `predict_proba`), so a 1,000-character text scores in about a
millisecond with nothing but the standard library.

An artefact has one or more heads (`heads`, one bias each). Artefact version 2 (the injection
classifier) has a single head and a scalar `bias`.
"""

from __future__ import annotations

import base64
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
    """One TF-IDF block: sublinear tf x idf, L2-normalised, dotted with each head's weights."""

    analyzer: str
    low: int
    high: int
    heads: int
    terms: dict[str, tuple[float, tuple[float, ...]]]  # term -> (idf, weight per head)
    # char_wb: a word's in-vocabulary n-grams, memoised (words repeat across texts).
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

    def counts(self, text: str) -> Counter[str]:
        """In-vocabulary n-gram counts of `text` (add two texts' counts for their concatenation,
        up to the n-grams that would span the seam)."""
        return Counter(self._grams(text))

    def contribution(self, counts: Counter[str], heads: int) -> list[float]:
        """This block's share of the first `heads` heads' logits."""
        norm_sq = 0.0
        terms = self.terms
        if heads == 1:  # the common case, without the inner loop
            dot = 0.0
            for term, count in counts.items():
                idf, weights = terms[term]
                value = idf if count == 1 else (1.0 + math.log(count)) * idf
                norm_sq += value * value
                dot += value * weights[0]
            dots = [dot]
        else:
            dots = [0.0] * heads
            for term, count in counts.items():
                idf, weights = terms[term]
                value = idf if count == 1 else (1.0 + math.log(count)) * idf
                norm_sq += value * value
                for head in range(heads):
                    dots[head] += value * weights[head]
        if norm_sq <= 0:
            return dots
        norm = math.sqrt(norm_sq)
        return [dot / norm for dot in dots]

    def parts(self, counts: Counter[str]) -> tuple[float, float]:
        """(dot with head 0, squared norm) before normalisation: a text's share of head 0 is
        dot / sqrt(norm); two texts' parts combine exactly with `joined`."""
        dot = norm_sq = 0.0
        terms = self.terms
        for term, count in counts.items():
            idf, weights = terms[term]
            value = idf if count == 1 else (1.0 + math.log(count)) * idf
            norm_sq += value * value
            dot += value * weights[0]
        return dot, norm_sq

    def joined(
        self, first: Counter[str], second: Counter[str], a: tuple[float, float], b: tuple[float, float]
    ) -> float:
        """Head 0's share for the concatenation of two texts, from their parts: only the terms
        they share change (their counts add under the sublinear tf)."""
        dot, norm_sq = a[0] + b[0], a[1] + b[1]
        small, large = (first, second) if len(first) <= len(second) else (second, first)
        for term, count in small.items():
            other = large.get(term)
            if other is None:
                continue
            idf, weights = self.terms[term]
            separate = [(idf if c == 1 else (1.0 + math.log(c)) * idf) for c in (count, other)]
            together = (1.0 + math.log(count + other)) * idf
            dot += (together - separate[0] - separate[1]) * weights[0]
            norm_sq += together * together - separate[0] ** 2 - separate[1] ** 2
        return dot / math.sqrt(norm_sq) if norm_sq > 0 else 0.0


def encode_block_terms(terms: list[str], idf: list[float], weights: list[list[float]]) -> dict[str, str]:
    """The artefact's compact form of a vocabulary: terms joined by newlines (n-grams never hold
    one), idf and the weights (term-major: all heads of a term together) as float32 arrays in
    base64; parsing it is ~10x faster than nested JSON lists. `weights` holds one list per term."""
    if any("\n" in term for term in terms):
        raise ValueError("a term holds a newline")
    flat = [w for per_term in weights for w in per_term]
    return {
        "terms": "\n".join(terms),
        "idf": base64.b64encode(array("f", idf).tobytes()).decode("ascii"),
        "weight": base64.b64encode(array("f", flat).tobytes()).decode("ascii"),
    }


def export_blocks(vectorizers: list[tuple[str, Any]], coef: Any) -> list[dict[str, Any]]:
    """The artefact's blocks from fitted scikit-learn `TfidfVectorizer`s (name, vectorizer), in the
    order their features were stacked, and the model's coefficients (heads x features)."""
    blocks, offset = [], 0
    for name, vectorizer in vectorizers:
        vocabulary: dict[str, int] = vectorizer.vocabulary_
        terms = sorted(vocabulary)
        idf = [float(vectorizer.idf_[vocabulary[t]]) for t in terms]
        weights = [[float(w) for w in coef[:, offset + vocabulary[t]]] for t in terms]
        blocks.append(
            {
                "name": name,
                "analyzer": vectorizer.analyzer,
                "ngram_range": list(vectorizer.ngram_range),
                "size": len(terms),
                **encode_block_terms(terms, idf, weights),
            }
        )
        offset += len(vocabulary)
    return blocks


def block_terms(block: dict[str, Any], heads: int = 1) -> dict[str, tuple[float, tuple[float, ...]]]:
    """term -> (idf, weight per head) of one artefact block."""
    idf, weights = array("f"), array("f")
    idf.frombytes(base64.b64decode(block["idf"]))
    weights.frombytes(base64.b64decode(block["weight"]))
    terms = block["terms"].split("\n") if block["terms"] else []
    if len(weights) != len(terms) * heads or len(idf) != len(terms):
        raise ValueError(f"block {block.get('name')!r}: array sizes do not match {len(terms)} terms x {heads} heads")
    rows = [tuple(weights[i * heads : (i + 1) * heads]) for i in range(len(terms))]
    return dict(zip(terms, zip(idf, rows, strict=True), strict=True))


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, z))))


class LinearTextClassifier:
    """The logits of every head for a text: bias + the sum of the blocks' contributions."""

    def __init__(self, artefact: dict[str, Any]) -> None:
        bias = artefact["bias"]
        self.biases = [float(b) for b in bias] if isinstance(bias, list) else [float(bias)]
        self.heads: list[str] = list(artefact.get("heads", ["positive"]))
        if len(self.heads) != len(self.biases):
            raise ValueError(f"{len(self.heads)} heads but {len(self.biases)} biases")
        self._blocks = [
            _Vocabulary(
                analyzer=block["analyzer"],
                low=block["ngram_range"][0],
                high=block["ngram_range"][1],
                heads=len(self.heads),
                terms=block_terms(block, len(self.heads)),
            )
            for block in artefact["blocks"]
        ]
        self.metadata: dict[str, Any] = artefact.get("metadata", {})

    def logits(self, text: str) -> list[float]:
        return self.logits_of(self.counts(text))

    def counts(self, text: str) -> list[Counter[str]]:
        """Per block, the in-vocabulary n-gram counts of `text`."""
        return [block.counts(text) for block in self._blocks]

    def first_logits(self, counts: list[list[Counter[str]]]) -> list[float]:
        """Head 0's logit for each text given by its per-block counts, then for each pair of
        neighbours (text i joined with text i+1): len(counts) + len(counts) - 1 values."""
        parts = [[block.parts(c) for block, c in zip(self._blocks, per_block, strict=True)] for per_block in counts]
        singles = [
            self.biases[0] + sum(dot / math.sqrt(norm) if norm > 0 else 0.0 for dot, norm in text_parts)
            for text_parts in parts
        ]
        pairs = [
            self.biases[0]
            + sum(
                block.joined(counts[i][k], counts[i + 1][k], parts[i][k], parts[i + 1][k])
                for k, block in enumerate(self._blocks)
            )
            for i in range(len(counts) - 1)
        ]
        return singles + pairs

    def logits_of(self, counts: list[Counter[str]], heads: int | None = None) -> list[float]:
        """The first `heads` logits (all by default) of a text given by its per-block counts."""
        wanted = len(self.biases) if heads is None else heads
        totals = self.biases[:wanted]
        for block, block_counts in zip(self._blocks, counts, strict=True):
            for head, value in enumerate(block.contribution(block_counts, wanted)):
                totals[head] += value
        return totals


def read_artefact(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(gzip.decompress(path.read_bytes()))
    return data


def write_artefact(path: Path, artefact: dict[str, Any]) -> None:
    """Deterministic bytes for the same content (no gzip timestamp)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(artefact, separators=(",", ":"), ensure_ascii=False).encode()
    path.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
