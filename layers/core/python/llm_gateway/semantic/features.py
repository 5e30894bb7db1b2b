"""Pair features for the verifier: embedding interactions plus lexical mismatch detectors.

Cosine similarity alone accepts the classic false hits of a semantic cache: questions that share
almost every word but differ in a number, a date, a negation, an entity, a direction or a time frame.
Each detector below turns one of those differences into a number the verifier can weigh.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..stopwords import STOPWORDS
from .embeddings import normalize_text

FloatVector = npt.NDArray[np.float32]

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CAPITALISED = re.compile(r"\b[A-Z][A-Za-z0-9&.+#-]*")
_FROM_TO = re.compile(r"\bfrom\s+(.+?)\s+to\s+(\w[\w ]*?)(?:[?.!,]|$| by | in | on | via | for )")
# A match starts where a word starts and takes the whole word (`\w++`): a long run of word
# characters is tried once, not once per position (quadratic before).
_X_TO_Y = re.compile(r"(?<!\w)(\w++)\s+(?:to|into|vs\.?|versus|than)\s+(\w+)")
# The detectors read a text's first characters only: its question (the embedder reads no more
# than ~256 tokens either), so a long text costs what a long question costs, not its length
# squared (the order-discordance pairs and the lazy `from ... to` patterns are not linear).
MAX_ANALYSED_CHARS = 2_000

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


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _char_ngrams(text: str, n: int = 3) -> set[str]:
    s = " ".join(_words(text))
    return {s[i : i + n] for i in range(max(len(s) - n + 1, 1))}


def _differs(a: frozenset[str], b: frozenset[str]) -> float:
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


@dataclass(frozen=True)
class _Text:
    """What the detectors read from one text; computed once per text (see `_analyse`)."""

    words: list[str]
    word_set: frozenset[str]
    content: frozenset[str]
    char3: frozenset[str]
    length: int
    numbers: frozenset[str]
    dates: frozenset[str]
    negated: bool
    entities: frozenset[str]
    lowered: str
    question_words: frozenset[str]
    quantities: frozenset[str]
    time_frame: frozenset[str]
    direction: tuple[str, str] | None


@functools.lru_cache(maxsize=4096)
def _analyse(raw: str) -> _Text:
    """Cached: a query is compared with several candidates, and popular entries with many queries."""
    text = normalize_text(raw)[:MAX_ANALYSED_CHARS]  # what the embedder saw, as far as it reads
    words = _words(text)
    word_set = frozenset(words)
    numbers = frozenset(_NUMBER.findall(text))
    return _Text(
        words=words,
        word_set=word_set,
        content=word_set - STOPWORDS,
        char3=frozenset(_char_ngrams(text)),
        length=len(text),
        numbers=numbers,
        dates=(word_set & (MONTHS | WEEKDAYS)) | {n for n in numbers if len(n) == 4 and n[:2] in ("19", "20")},
        negated=any(w in NEGATIONS or w.endswith("n't") for w in words),
        entities=frozenset(_entities(text)),
        lowered=text.lower(),
        question_words=frozenset(w for w in words if w in QUESTION_WORDS),
        quantities=word_set & QUANTITY_WORDS,
        time_frame=word_set & TIME_FRAME,
        direction=_direction(text),
    )


def _missing_entities(a: _Text, b: _Text) -> int:
    """Entities of `a` that `b` does not mention at all, in any case: "France" vs "france" is the
    same place, "France" vs "Spain" is not (chat users often type in lowercase)."""
    return sum(1 for entity in a.entities if entity not in b.lowered)


def lexical_features(a: str, b: str, cosine: float) -> list[float]:
    """The LEXICAL_FEATURES of one text pair, in that order; symmetric in a and b."""
    ta, tb = _analyse(a), _analyse(b)
    only_a, only_b = ta.content - tb.content, tb.content - ta.content
    da, db = ta.direction, tb.direction
    swapped = da is not None and db is not None and da[0] == db[1] and da[1] == db[0] and da[0] != da[1]
    return [
        cosine,
        _jaccard(ta.word_set, tb.word_set),
        _jaccard(ta.content, tb.content),
        _jaccard(ta.char3, tb.char3),
        min(ta.length, tb.length) / max(ta.length, tb.length, 1),
        (len(only_a) + len(only_b)) / max(len(ta.content | tb.content), 1),
        float(min(max(len(only_a), len(only_b)), 5)),
        _differs(ta.numbers, tb.numbers),
        float(min(len(ta.numbers ^ tb.numbers), 3)),
        _differs(ta.quantities, tb.quantities),
        _differs(ta.dates, tb.dates),
        1.0 if ta.negated != tb.negated else 0.0,
        float(min(_missing_entities(ta, tb) + _missing_entities(tb, ta), 3)),
        1.0 if swapped else 0.0,
        _order_discordance(ta.words, tb.words),
        _differs(ta.time_frame, tb.time_frame),
        _differs(ta.question_words, tb.question_words),
        1.0 if (ta.words[:1] or [""])[0] != (tb.words[:1] or [""])[0] else 0.0,
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
