"""Pair features for the verifier: embedding interactions plus lexical mismatch detectors.

Cosine similarity alone accepts the classic false hits of a semantic cache: questions that share
almost every word but differ in a number, a date, a negation, an entity, a direction or a time frame.
Each detector below turns one of those differences into a number the verifier can weigh.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatVector = npt.NDArray[np.float32]

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CAPITALISED = re.compile(r"\b[A-Z][A-Za-z0-9&.+#-]*")
_FROM_TO = re.compile(r"\bfrom\s+(.+?)\s+to\s+(\w[\w ]*?)(?:[?.!,]|$| by | in | on | via | for )")
_X_TO_Y = re.compile(r"(\w+)\s+(?:to|into|vs\.?|versus|than)\s+(\w+)")

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "doing",
        "have",
        "has",
        "had",
        "having",
        "i",
        "me",
        "my",
        "we",
        "our",
        "you",
        "your",
        "he",
        "she",
        "it",
        "its",
        "they",
        "them",
        "their",
        "this",
        "that",
        "these",
        "those",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "how",
        "when",
        "where",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "of",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "about",
        "as",
        "into",
        "through",
        "to",
        "from",
        "up",
        "down",
        "out",
        "over",
        "under",
        "again",
        "then",
        "once",
        "there",
        "here",
        "all",
        "any",
        "both",
        "each",
        "few",
        "more",
        "most",
        "other",
        "some",
        "such",
        "only",
        "own",
        "same",
        "so",
        "than",
        "too",
        "very",
        "just",
        "and",
        "but",
        "if",
        "or",
        "because",
        "until",
        "while",
        "s",
        "t",
        "get",
        "got",
        "best",
        "way",
        "good",
        "ways",
        "one",
        "also",
        "like",
        "make",
        "there's",
        "it's",
        "i'm",
    ]
)
NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "none",
        "nobody",
        "nothing",
        "neither",
        "nor",
        "without",
        "cannot",
        "can't",
        "don't",
        "doesn't",
        "didn't",
        "isn't",
        "aren't",
        "wasn't",
        "weren't",
        "won't",
        "wouldn't",
        "shouldn't",
        "couldn't",
        "hasn't",
        "haven't",
        "hadn't",
    ]
)
MONTHS = frozenset(
    [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    ]
)
WEEKDAYS = frozenset(["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "weekend"])
TIME_FRAME = frozenset(
    [
        "today",
        "tonight",
        "yesterday",
        "tomorrow",
        "now",
        "currently",
        "current",
        "recent",
        "recently",
        "last",
        "next",
        "previous",
        "upcoming",
        "ago",
        "future",
        "past",
        "present",
        "soon",
        "later",
        "daily",
        "weekly",
        "monthly",
        "yearly",
        "annual",
        "morning",
        "evening",
        "night",
        "week",
        "month",
        "year",
        "decade",
        "century",
        "before",
        "after",
    ]
)
QUESTION_WORDS = ("what", "why", "how", "when", "where", "who", "which", "whom", "whose")
QUANTITY_WORDS = frozenset(
    [
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "twenty",
        "thirty",
        "forty",
        "fifty",
        "hundred",
        "thousand",
        "million",
        "billion",
        "trillion",
        "first",
        "second",
        "third",
        "half",
        "double",
        "dozen",
        "percent",
        "dollars",
        "rupees",
        "euros",
    ]
)

LEXICAL_FEATURES: tuple[str, ...] = (
    "cosine",
    "token_jaccard",
    "content_jaccard",
    "char3_jaccard",
    "length_ratio",
    "unshared_content",
    "unshared_content_max",
    "number_mismatch",
    "number_unshared",
    "quantity_word_mismatch",
    "date_mismatch",
    "negation_asymmetry",
    "entity_unshared",
    "direction_swap",
    "order_discordance",
    "time_frame_mismatch",
    "question_word_mismatch",
    "first_word_mismatch",
)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _char_ngrams(text: str, n: int = 3) -> set[str]:
    s = " ".join(_words(text))
    return {s[i : i + n] for i in range(max(len(s) - n + 1, 1))}


def _differs(a: set[str], b: set[str]) -> float:
    """1 when the two texts mention different members of a category (one side empty counts too)."""
    return 1.0 if a != b else 0.0


def _entities(text: str) -> set[str]:
    # Capitalised words after the first word: proper nouns, products, places (Quora capitalises loosely,
    # so the lowercase content-word detectors carry most of the weight).
    found = _CAPITALISED.findall(text)
    first = text.split(maxsplit=1)[0] if text.strip() else ""
    return {w.lower().rstrip(".") for w in found if w != first and w.lower() not in STOPWORDS}


def _direction(text: str) -> tuple[str, str] | None:
    lowered = text.lower()
    match = _FROM_TO.search(lowered) or _X_TO_Y.search(lowered)
    if match is None:
        return None
    return match.group(1).strip(), match.group(2).strip()


def _direction_swap(a: str, b: str) -> float:
    da, db = _direction(a), _direction(b)
    if da is None or db is None:
        return 0.0
    return 1.0 if da[0] == db[1] and da[1] == db[0] and da[0] != da[1] else 0.0


def _order_discordance(wa: list[str], wb: list[str]) -> float:
    """Share of pairs of shared content words whose order flips between the texts (X vs Y, Y vs X)."""
    pos_a = {w: i for i, w in enumerate(wa) if w not in STOPWORDS}
    pos_b = {w: i for i, w in enumerate(wb) if w not in STOPWORDS}
    shared = [w for w in pos_a if w in pos_b]
    if len(shared) < 2:
        return 0.0
    flips = total = 0
    for i, x in enumerate(shared):
        for y in shared[i + 1 :]:
            total += 1
            flips += (pos_a[x] - pos_a[y]) * (pos_b[x] - pos_b[y]) < 0
    return flips / total


def lexical_features(a: str, b: str, cosine: float) -> list[float]:
    """The LEXICAL_FEATURES of one text pair, in that order; symmetric in a and b."""
    wa, wb = _words(a), _words(b)
    sa, sb = set(wa), set(wb)
    ca, cb = sa - STOPWORDS, sb - STOPWORDS
    only_a, only_b = ca - cb, cb - ca
    nums_a, nums_b = set(_NUMBER.findall(a)), set(_NUMBER.findall(b))
    dates_a = (sa & (MONTHS | WEEKDAYS)) | {n for n in nums_a if len(n) == 4 and n[:2] in ("19", "20")}
    dates_b = (sb & (MONTHS | WEEKDAYS)) | {n for n in nums_b if len(n) == 4 and n[:2] in ("19", "20")}
    neg_a, neg_b = (
        sum(w in NEGATIONS or w.endswith("n't") for w in wa),
        sum(w in NEGATIONS or w.endswith("n't") for w in wb),
    )
    ents_a, ents_b = _entities(a), _entities(b)
    qa = {w for w in wa if w in QUESTION_WORDS}
    qb = {w for w in wb if w in QUESTION_WORDS}
    return [
        cosine,
        _jaccard(sa, sb),
        _jaccard(ca, cb),
        _jaccard(_char_ngrams(a), _char_ngrams(b)),
        min(len(a), len(b)) / max(len(a), len(b), 1),
        (len(only_a) + len(only_b)) / max(len(ca | cb), 1),
        float(min(max(len(only_a), len(only_b)), 5)),
        _differs(nums_a, nums_b),
        float(min(len(nums_a ^ nums_b), 3)),
        _differs(sa & QUANTITY_WORDS, sb & QUANTITY_WORDS),
        _differs(dates_a, dates_b),
        1.0 if (neg_a > 0) != (neg_b > 0) else 0.0,
        float(min(len(ents_a ^ ents_b), 3)),
        _direction_swap(a, b),
        _order_discordance(wa, wb),
        _differs(sa & TIME_FRAME, sb & TIME_FRAME),
        _differs(qa, qb),
        1.0 if (wa[:1] or [""])[0] != (wb[:1] or [""])[0] else 0.0,
    ]


def pair_features(
    queries: Sequence[str], candidates: Sequence[str], query_vecs: FloatVector, candidate_vecs: FloatVector
) -> FloatVector:
    """Feature matrix for aligned pairs: lexical features, then u*v and |u-v| of the unit embeddings."""
    u = np.asarray(query_vecs, dtype=np.float32).reshape(len(queries), -1)
    v = np.asarray(candidate_vecs, dtype=np.float32).reshape(len(candidates), -1)
    cosines = np.einsum("ij,ij->i", u, v)
    lexical = np.array(
        [lexical_features(a, b, float(c)) for a, b, c in zip(queries, candidates, cosines, strict=True)],
        dtype=np.float32,
    ).reshape(len(queries), len(LEXICAL_FEATURES))
    return np.hstack([lexical, u * v, np.abs(u - v)]).astype(np.float32)
