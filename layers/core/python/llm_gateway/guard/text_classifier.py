"""Linear text classifiers over TF-IDF n-grams, scored with numpy (no scikit-learn).

The guard's prompt-injection classifier and the moderation tier 2 harmful-content classifier are
both trained with scikit-learn (`TfidfVectorizer` word and `char_wb` blocks, logistic regression)
and shipped as a gzipped JSON artefact: per vocabulary term its idf and one weight per output head
(packed float32 arrays, see `encode_block_terms`). Scoring reproduces scikit-learn's transform exactly (the
training scripts check it against `predict_proba`). The n-grams are found in Python (a word's
character n-grams once per process, memoised); the arithmetic runs in numpy, for any number of
windows of a text at once (`window_logits`: a long answer's sentences and their pairs), so a
1,000-character text scores in well under a millisecond.

An artefact has one or more heads (`heads`, one bias each). Artefact version 2 (the injection
classifier) has a single head and a scalar `bias`.
"""

from __future__ import annotations

import functools
import gzip
import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..weights import decode_array, encode_array

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

# A run of word characters and the joiners codes use, holding at least one digit. Linear in the
# text: a match starts only where a run starts (the lookbehind), and the possessive repeats never
# give back what they took, so a long run without a digit fails once, not once per position (the
# plain `[...]*\d[...]*` took quadratic time on one: 15 s for 40,000 letters, holding the GIL).
_CODE_LIKE = re.compile(r"(?<![\w#+/=.:\-])(?:[^\W\d]|[#+/=.:\-])*+\d[\w#+/=.:\-]*+")
_CODE_TRAILER = ".:-"
ID_WORD = "xid"  # an identifier, hash, code or token mixing letters and digits
NUMBER_WORD = "xnum"  # a number of four digits or more


def _identifier(match: re.Match[str]) -> str:
    """An id mixes letters and digits back and forth (`3a02c1`, `A7F-22981`, a hash) or carries
    four digits or more (`ORD123456`); a word with a number on it (`base64`, `sha256`, `mp3`,
    `b64decode`, `21st`) is left as it is."""
    token = match.group(0)
    core = token.rstrip(_CODE_TRAILER)
    kinds = [c.isdigit() for c in core if c.isalnum()]
    digits = sum(kinds)
    letters = len(kinds) - digits
    if letters:
        switches = sum(a != b for a, b in itertools.pairwise(kinds))
        return ID_WORD + token[len(core) :] if switches >= 3 or digits >= 4 else token
    return NUMBER_WORD + token[len(core) :] if digits >= 4 else token


def mask_identifiers(text: str) -> str:
    """`text` with ids, hashes, order numbers, codes and long numbers replaced by one placeholder
    word each (`xid`, `xnum`), for the classifiers only: `3a02c1`, `A7F-22981`, a UUID or a
    base64 blob carry no meaning a classifier can learn, and their random character n-grams
    otherwise push a harmless request towards whatever class the training data happened to put
    such strings in. The model still sees the original text."""
    return _CODE_LIKE.sub(_identifier, text)


def analysed(text: str) -> tuple[list[str], list[str]]:
    """(word tokens, whitespace-separated words) of the lowercased text, as the word and char_wb
    analyzers read it; remembered for recent texts of up to 4,000 characters, so the classifiers
    that score the same text (injection and harmful content on a user message) share it. Callers
    must not change the lists."""
    return _analysed(text) if len(text) <= 4000 else _analyse(text)


def _analyse(text: str) -> tuple[list[str], list[str]]:
    lowered = text.lower()
    return _TOKEN.findall(lowered), _WHITESPACE.sub(" ", lowered).split()


_analysed = functools.lru_cache(maxsize=256)(_analyse)


def _joined(tokens: list[str], n: int) -> Iterable[str]:
    """The n-grams of `tokens`, joined by a space (as `word_ngrams`)."""
    if n == 1:
        return tokens
    return map(" ".join, zip(*(tokens[i:] for i in range(n)), strict=False))


def _word_char_ngrams(word: str, low: int, high: int) -> list[str]:
    """`char_wb_ngrams` of one lowercased word."""
    padded = f" {word} "
    size = len(padded)
    if size <= low:
        return [padded]
    grams = [padded[i : i + n] for n in range(low, min(high, size - 1) + 1) for i in range(size - n + 1)]
    if size <= high:  # ... a word shorter than n yields itself once, and no longer n-grams
        grams.append(padded)
    return grams


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
        self.head0 = np.ascontiguousarray(self.weights[:, 0])
        # char_wb: a word's in-vocabulary n-gram rows, memoised (words repeat across texts).
        self._memo: dict[str, tuple[int, ...]] = {}

    def grams(self, text: str) -> list[int]:
        """The rows of `text`'s in-vocabulary n-grams, once per occurrence."""
        get = self.rows.get
        if self.analyzer == "word":  # word_ngrams, without a generator frame per n-gram
            tokens = analysed(text)[0]
            grams = [gram for n in range(self.low, self.high + 1) for gram in _joined(tokens, n)]
            return [row for row in map(get, grams) if row is not None]
        found: list[int] = []
        memo = self._memo
        low, high = self.low, self.high
        for word in analysed(text)[1]:
            known = memo.get(word)
            if known is None:
                known = tuple(row for row in map(get, _word_char_ngrams(word, low, high)) if row is not None)
                if len(memo) >= _WORD_MEMO_LIMIT:
                    memo.clear()
                memo[word] = known
            found.extend(known)
        return found

    def share(self, rows: list[int], heads: int) -> list[float]:
        """This block's share of the first `heads` logits of one text given by its `grams`."""
        counts = Counter(rows)
        if not counts:
            return [0.0] * heads
        at = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
        values = self.idf[at]
        if len(counts) < len(rows):  # some n-gram repeats: sublinear tf
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            values = values * np.where(tf == 1.0, 1.0, 1.0 + np.log(tf))
        norm = math.sqrt(float(values @ values))
        shares: list[float] = ((values @ self.weights[at, :heads]) / norm).tolist()
        return shares

    def neighbour_parts(self, texts: list[list[int]]) -> tuple[list[float], list[float]]:
        """Head 0's share of each text (given by its `grams`), then of each pair of neighbours
        taken together: len(texts) + len(texts) - 1 values, in one numpy pass. A pair is its two
        texts' sums corrected for the n-grams they share (their counts add under the sublinear
        tf), so each text is counted once."""
        count = len(texts)
        lengths = [len(rows) for rows in texts]
        found = np.fromiter(chain.from_iterable(texts), dtype=np.int64, count=sum(lengths))
        owner = np.repeat(np.arange(count, dtype=np.int64), lengths)
        # Counted per (row, text), sorted by row, then text: equal rows of texts i and i + 1 meet.
        keys, tf = np.unique(found * count + owner, return_counts=True)
        rows, text = np.divmod(keys, count)
        idf = self.idf[rows]
        values = idf * np.where(tf == 1, 1.0, 1.0 + np.log(tf))
        w0 = self.head0[rows]
        norms = np.bincount(text, values * values, count)
        dots = np.bincount(text, values * w0, count)
        a = np.nonzero((rows[:-1] == rows[1:]) & (text[1:] == text[:-1] + 1))[0]
        b = a + 1
        together = idf[a] * (1.0 + np.log(tf[a] + tf[b]))
        pair = text[a]
        pairs = count - 1
        pair_dots = dots[:-1] + dots[1:] + np.bincount(pair, (together - values[a] - values[b]) * w0[a], pairs)
        pair_norms = (
            norms[:-1] + norms[1:] + np.bincount(pair, together * together - values[a] ** 2 - values[b] ** 2, pairs)
        )
        alone: list[float] = _ratio(dots, norms).tolist()
        joined: list[float] = _ratio(pair_dots, pair_norms).tolist()
        return alone, joined


def _ratio(dots: Any, norms: Any) -> Any:
    """dot / sqrt(norm), 0 where the norm is 0 (a text with no in-vocabulary n-gram)."""
    safe = np.where(norms > 0, norms, 1.0)
    return np.where(norms > 0, dots / np.sqrt(safe), 0.0)


def encode_block_terms(terms: list[str], idf: list[float], weights: list[list[float]]) -> dict[str, Any]:
    """The artefact's compact form of a vocabulary: terms joined by newlines (n-grams never hold
    one), idf and the weights (terms x heads) as packed float32 arrays (`weights.encode_array`);
    parsing it is ~10x faster than nested JSON lists. `weights` holds one list per term."""
    if any("\n" in term for term in terms):
        raise ValueError("a term holds a newline")
    return {
        "terms": "\n".join(terms),
        "idf": encode_array(np.asarray(idf, dtype=np.float32).reshape(len(terms))),
        "weight": encode_array(np.asarray(weights, dtype=np.float32).reshape(len(terms), -1)),
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
    terms, idf, weights = _block_arrays(block, heads)
    rows = [tuple(float(w) for w in row) for row in weights]
    return dict(zip(terms, zip((float(v) for v in idf), rows, strict=True), strict=True))


def _block_arrays(block: dict[str, Any], heads: int) -> tuple[list[str], Any, Any]:
    """(terms, idf, weights as terms x heads) of one artefact block."""
    idf, weights = decode_array(block["idf"]), decode_array(block["weight"])
    terms = block["terms"].split("\n") if block["terms"] else []
    if weights.shape != (len(terms), heads) or idf.shape != (len(terms),):
        raise ValueError(f"block {block.get('name')!r}: array sizes do not match {len(terms)} terms x {heads} heads")
    return terms, idf, weights


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
        # Artefacts trained on texts with their identifiers masked (`mask_identifiers`) say so.
        self._prepare: Callable[[str], str] = mask_identifiers if artefact.get("identifiers") == "masked" else str

    def logits(self, text: str, heads: int | None = None) -> list[float]:
        """The first `heads` logits (all by default) of one text."""
        wanted = len(self.biases) if heads is None else heads
        totals = self.biases[:wanted]
        for block, rows in zip(self._blocks, self.grams(text), strict=True):
            for head, value in enumerate(block.share(rows, wanted)):
                totals[head] += value
        return totals

    def grams(self, text: str) -> list[list[int]]:
        """Per block, the rows of `text`'s in-vocabulary n-grams."""
        prepared = self._prepare(text)
        return [block.grams(prepared) for block in self._blocks]

    def worst_window(self, texts: list[str]) -> list[float]:
        """The logits (all heads) of the window whose head 0 logit is highest, among the texts
        alone and each pair of neighbours taken together (the first of equals)."""
        return self.worst_window_at(texts)[0]

    def worst_window_at(self, texts: list[str]) -> tuple[list[float], list[int]]:
        """`worst_window`'s logits and the indices of the texts that window is made of."""
        grams = [self.grams(text) for text in texts]
        singles = [self.biases[0]] * len(texts)
        pairs = [self.biases[0]] * (len(texts) - 1)
        for k, block in enumerate(self._blocks):
            alone, together = block.neighbour_parts([g[k] for g in grams])
            singles = [a + b for a, b in zip(singles, alone, strict=True)]
            pairs = [a + b for a, b in zip(pairs, together, strict=True)]
        first = singles + pairs
        worst = max(range(len(first)), key=first.__getitem__)
        window = [worst] if worst < len(texts) else [worst - len(texts), worst - len(texts) + 1]
        totals = list(self.biases)
        for k, block in enumerate(self._blocks):
            rows = [row for i in window for row in grams[i][k]]
            for head, value in enumerate(block.share(rows, len(totals))):
                totals[head] += value
        return totals, window


def read_artefact(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(gzip.decompress(path.read_bytes()))
    return data


def write_artefact(path: Path, artefact: dict[str, Any]) -> None:
    """Deterministic bytes for the same content (no gzip timestamp)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = json.dumps(artefact, separators=(",", ":"), ensure_ascii=False).encode()
    path.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
