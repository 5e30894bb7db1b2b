"""Linear text classifiers over TF-IDF n-grams, scored with numpy (no scikit-learn).

The guard's prompt-injection classifier and the moderation tier 2 harmful-content classifier are
both trained with scikit-learn (`TfidfVectorizer` word and `char_wb` blocks, logistic regression)
and shipped as a gzipped JSON artefact: per vocabulary term its idf and one weight per output head
(float32, see `encode_block_terms`). Scoring reproduces scikit-learn's transform exactly (the
training scripts check it against `predict_proba`). The n-grams are found in Python (a word's
character n-grams once per process, memoised); the arithmetic runs in numpy, for any number of
windows of a text at once (`window_logits`: a long answer's sentences and their pairs), so a
1,000-character text scores in well under a millisecond.

An artefact has one or more heads (`heads`, one bias each). Artefact version 2 (the injection
classifier) has a single head and a scalar `bias`.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import re
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

# scikit-learn's defaults: `token_pattern` and the whitespace run `char_wb` collapses.
_TOKEN = re.compile(r"(?u)\b\w\w+\b")
_WHITESPACE = re.compile(r"\s\s+")
T = TypeVar("T")


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


class _Vocabulary:
    """One TF-IDF block: sublinear tf x idf, L2-normalised, dotted with each head's weights.

    Terms are rows of an idf vector and a (terms x heads) weight matrix. A text becomes the list
    of its in-vocabulary n-grams' rows, and any number of windows (each one or more texts taken
    together, as if concatenated) are scored in one numpy pass."""

    def __init__(self, analyzer: str, low: int, high: int, terms: list[str], idf: Any, weights: Any) -> None:
        self.analyzer, self.low, self.high = analyzer, low, high
        self.rows: dict[str, int] = {term: row for row, term in enumerate(terms)}
        self.size = len(terms)
        self.idf = np.asarray(idf, dtype=np.float64)
        self.weights = np.asarray(weights, dtype=np.float64).reshape(len(terms), -1)
        # char_wb: a word's in-vocabulary n-gram rows, memoised (words repeat across texts).
        self._memo: dict[str, tuple[int, ...]] = {}

    def grams(self, text: str) -> list[int]:
        """The rows of `text`'s in-vocabulary n-grams, once per occurrence."""
        rows = self.rows
        if self.analyzer == "word":
            return [row for gram in word_ngrams(text, self.low, self.high) if (row := rows.get(gram)) is not None]
        found: list[int] = []
        memo = self._memo
        for word in _WHITESPACE.sub(" ", text.lower()).split():
            known = memo.get(word)
            if known is None:
                known = tuple(
                    row for gram in char_wb_ngrams(word, self.low, self.high) if (row := rows.get(gram)) is not None
                )
                if len(memo) >= _WORD_MEMO_LIMIT:
                    memo.clear()
                memo[word] = known
            found.extend(known)
        return found

    def scores(self, texts: list[list[int]], windows: Sequence[tuple[int, ...]], heads: int) -> Any:
        """This block's share of the first `heads` logits of each window (the texts it names,
        their n-grams counted together): a (windows x heads) array."""
        out = np.zeros((len(windows), heads), dtype=np.float64)
        arrays = [np.array(rows, dtype=np.int64) for rows in texts]
        parts = [arrays[i] for window in windows for i in window]
        lengths = [sum(len(texts[i]) for i in window) for window in windows]
        if not any(lengths):
            return out
        owner = np.repeat(np.arange(len(windows), dtype=np.int64), lengths)
        keys, tf = np.unique(owner * self.size + np.concatenate(parts), return_counts=True)
        window, rows = np.divmod(keys, self.size)  # sorted by window, then row
        counts = tf.astype(np.float64)
        values = self.idf[rows] * np.where(tf == 1, 1.0, 1.0 + np.log(counts))  # sublinear tf, exact at 1
        starts = np.searchsorted(window, np.arange(len(windows)))
        kept = np.nonzero(np.asarray(lengths) > 0)[0]
        norms = np.sqrt(np.add.reduceat(values * values, starts[kept]))
        dots = np.add.reduceat(values[:, None] * self.weights[rows, :heads], starts[kept], axis=0)
        out[kept] = dots / norms[:, None]
        return out


class TextMemo(Generic[T]):
    """The results of a function of one text for the last `size` texts of up to `max_chars`
    characters (a conversation's earlier messages are scanned again on every turn); thread-safe."""

    def __init__(self, size: int = 1024, max_chars: int = 4000) -> None:
        self._size, self._max_chars = size, max_chars
        self._results: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str, compute: Callable[[str], T]) -> T:
        if len(text) > self._max_chars:
            return compute(text)
        with self._lock:
            found = self._results.get(text)
            if found is not None:
                self._results.move_to_end(text)
                return found
        result = compute(text)
        with self._lock:
            self._results[text] = result
            if len(self._results) > self._size:
                self._results.popitem(last=False)
        return result


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


def _block_arrays(block: dict[str, Any], heads: int) -> tuple[list[str], Any, Any]:
    """(terms, idf, weights as terms x heads) of one artefact block."""
    idf = np.frombuffer(base64.b64decode(block["idf"]), dtype="<f4")
    weights = np.frombuffer(base64.b64decode(block["weight"]), dtype="<f4")
    terms = block["terms"].split("\n") if block["terms"] else []
    if len(weights) != len(terms) * heads or len(idf) != len(terms):
        raise ValueError(f"block {block.get('name')!r}: array sizes do not match {len(terms)} terms x {heads} heads")
    return terms, idf, weights.reshape(len(terms), heads)


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
                block["analyzer"],
                block["ngram_range"][0],
                block["ngram_range"][1],
                *_block_arrays(block, len(self.heads)),
            )
            for block in artefact["blocks"]
        ]
        self.metadata: dict[str, Any] = artefact.get("metadata", {})

    def logits(self, text: str) -> list[float]:
        logits: list[float] = self.window_logits([self.grams(text)], [(0,)])[0].tolist()
        return logits

    def grams(self, text: str) -> list[list[int]]:
        """Per block, the rows of `text`'s in-vocabulary n-grams."""
        return [block.grams(text) for block in self._blocks]

    def window_logits(
        self, texts: list[list[list[int]]], windows: Sequence[tuple[int, ...]], heads: int | None = None
    ) -> Any:
        """The first `heads` logits (all by default) of each window, a tuple of indices into
        `texts` (each text given by its per-block `grams`) scored as their concatenation, up to
        the n-grams that would span the seams: a (windows x heads) array, one pass per block."""
        wanted = len(self.biases) if heads is None else heads
        total = np.tile(np.array(self.biases[:wanted], dtype=np.float64), (len(windows), 1))
        for k, block in enumerate(self._blocks):
            total += block.scores([text[k] for text in texts], windows, wanted)
        return total


def read_artefact(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(gzip.decompress(path.read_bytes()))
    return data


def write_artefact(path: Path, artefact: dict[str, Any]) -> None:
    """Deterministic bytes for the same content (no gzip timestamp)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(artefact, separators=(",", ":"), ensure_ascii=False).encode()
    path.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
