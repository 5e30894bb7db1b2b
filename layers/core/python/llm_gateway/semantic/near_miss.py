"""Hard vetoes on semantic-cache hits: two requests that differ in one thing that changes the answer.

The verifier (`verifier.py`) weighs such differences among many features, and for two long
requests that share every other word it can still score "same meaning" high enough to serve: "…
crash note 106 …" and "… crash note 107 …" score 0.81 against a threshold of 0.80 at the shipped
target precision. A cached answer to the wrong ticket is worse than a miss, so these differences
are not weighed but vetoed, whatever the verifier says:

- number: the numbers differ ("106" vs "107", "two" vs "3"; "2" and "two" are the same number);
- negation: one side negates and the other does not, or uses a word's opposite (enable / disable,
  with / without, include / exclude, allow / deny);
- direction: a word's reverse (buy / sell, import / export, before / after, increase / decrease),
  or the same words around an asymmetric link in the other order ("London to Paris" vs "Paris to
  London");
- date: different months, weekdays, years, quarters or relative days (today / tomorrow);
- plan: different product tiers or billing periods (free, pro, team, enterprise, monthly, annual);
- unit: different units of measure or currencies (miles / km, tablespoons / teaspoons);
- entity: a proper noun or a country or US state one side names and the other never mentions, or
  names where the other has another word ("pandas" / "Polars").

The word lists live in `data/near_miss_words.json`.

`near_miss(a, b)` returns the kind of difference found, or None. It only ever removes hits.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..stopwords import STOPWORDS
from .embeddings import normalize_text

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CAPITALISED = re.compile(r"\b[A-Z][A-Za-z0-9&+#-]*[A-Za-z0-9]|\b[A-Z]\b")
_DIGIT_LETTER = re.compile(r"(?<=\d)(?=[a-z])|(?<=[a-z])(?=\d)")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\n\"(]\s*|^\W*)$")
_QUARTER = re.compile(r"\bq[1-4]\b|\bh[12]\b")
_ORDINAL = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b")
_ORDINAL_WORDS = {"1st": "1", "2nd": "2", "3rd": "3", "4th": "4", "5th": "5", "2x": "2", "3x": "3"}
_MODAL_NEGATIONS = {"can't": "cannot", "won't": "will not", "don't": "do not", "isn't": "is not"}
WORDS_PATH = Path(__file__).parent / "data" / "near_miss_words.json"


@dataclass(frozen=True)
class _Words:
    """The word lists (`data/near_miss_words.json`)."""

    number_words: dict[str, str]
    negations: frozenset[str]
    negating_prefixes: tuple[str, ...]
    opposite: dict[str, frozenset[str]]
    reverse: dict[str, frozenset[str]]
    links: frozenset[str]
    months: dict[str, str]
    days: frozenset[str]
    relative_dates: frozenset[str]
    deictic: frozenset[str]
    time_units: frozenset[str]
    plans: frozenset[str]
    units: frozenset[str]


def _pairs_index(pairs: list[list[str]]) -> dict[str, frozenset[str]]:
    index: dict[str, set[str]] = {}
    for left, right in pairs:
        index.setdefault(left, set()).add(right)
        index.setdefault(right, set()).add(left)
    return {word: frozenset(others) for word, others in index.items()}


@functools.cache
def _words() -> _Words:
    data = json.loads(WORDS_PATH.read_text(encoding="utf-8"))
    days = frozenset(data["days"])
    return _Words(
        number_words=data["number_words"],
        negations=frozenset(data["negations"]),
        negating_prefixes=tuple(data["negating_prefixes"]),
        opposite=_pairs_index(data["opposites"]),
        reverse=_pairs_index(data["reverses"]),
        links=frozenset(data["links"]),
        months=data["months"],
        days=days,
        relative_dates=frozenset(data["relative_dates"]),
        deictic=frozenset(data["deictic"]),
        time_units=frozenset(data["time_units"]) | days,
        plans=frozenset(data["plans"]),
        units=frozenset(data["units"]),
    )


@functools.cache
def _places() -> frozenset[str]:
    data = json.loads((Path(__file__).parents[1] / "guard" / "data" / "places.json").read_text(encoding="utf-8"))
    names = [*data.get("countries", []), *data.get("us_states", [])]
    return frozenset(name.lower() for name in names if isinstance(name, str))


@dataclass(frozen=True)
class _Read:
    """What the vetoes compare, read once per text."""

    lowered: str  # the tokens joined, with a space at each end (phrase lookups)
    tokens: tuple[str, ...]
    token_set: frozenset[str]
    numbers: tuple[str, ...]
    negations: int
    dates: frozenset[str]
    plans: frozenset[str]
    units: frozenset[str]
    entities: frozenset[str]


def _tokens(text: str) -> list[str]:
    lowered = _DIGIT_LETTER.sub(" ", text.lower().replace("\u2019", "'"))
    lowered = lowered.replace("day after tomorrow", "overmorrow").replace("day before yesterday", "ereyesterday")
    for contraction, expanded in _MODAL_NEGATIONS.items():
        lowered = lowered.replace(contraction, expanded)
    return [t.replace("n't", "nt").replace("'", "") for t in _TOKEN.findall(lowered)]


def _numbers(text: str, tokens: list[str], words: _Words) -> tuple[str, ...]:
    found = [n.replace(",", "").lstrip("0") or "0" for n in _NUMBER.findall(_ORDINAL.sub(r"\1", text))]
    found += [words.number_words[t] for t in tokens if t in words.number_words]
    return tuple(sorted(_ORDINAL_WORDS.get(n, n) for n in found))


def _entities(text: str, tokens: list[str], words: _Words) -> frozenset[str]:
    # Capitalised words that do not open a sentence: names, products, places.
    capitalised = {
        m.group().lower()
        for m in _CAPITALISED.finditer(text)
        if len(m.group()) > 1 and not _SENTENCE_START.search(text[: m.start()])
    }
    capitalised -= words.negations | words.plans | words.days | set(words.months) | STOPWORDS
    capitalised -= {"i'm", "i've", "i'd", "i'll"}
    lowered = " " + " ".join(tokens) + " "
    places = {place for place in _places() if f" {place} " in lowered}
    return frozenset(capitalised | places)


@functools.lru_cache(maxsize=4096)
def _read(raw: str) -> _Read:
    words = _words()
    text = normalize_text(raw)
    tokens = _tokens(text)
    token_set = frozenset(tokens)
    years = {t for t in tokens if len(t) == 4 and t[:2] in ("19", "20") and t.isdigit()}
    dates = {words.months[t] for t in tokens if t in words.months} | years
    dates |= token_set & (words.days | words.relative_dates)
    dates |= set(_QUARTER.findall(text.lower()))
    dates |= {f"{t} {u}" for t, u in itertools.pairwise(tokens) if t in words.deictic and u in words.time_units}
    return _Read(
        lowered=" " + " ".join(tokens) + " ",
        tokens=tuple(tokens),
        token_set=token_set,
        numbers=_numbers(text, tokens, words),
        negations=sum(t in words.negations for t in tokens),
        dates=frozenset(dates),
        plans=token_set & words.plans,
        units=token_set & words.units,
        entities=_entities(text, tokens, words),
    )


def _uses_pair(a: _Read, b: _Read, pairs: dict[str, frozenset[str]]) -> bool:
    """A word only `a` uses whose pair only `b` uses (or the reverse)."""
    only_a, only_b = a.token_set - b.token_set, b.token_set - a.token_set
    return any(pairs.get(word, frozenset()) & only_b for word in only_a)


def _negated_by_prefix(a: _Read, b: _Read) -> bool:
    """A word one side uses with a negating prefix the other uses without ("eligible" / "ineligible")."""
    only_a, only_b = a.token_set - b.token_set, b.token_set - a.token_set
    return any(
        len(word) > 4 and word.startswith(prefix) and word[len(prefix) :] in other
        for mine, other in ((only_a, only_b), (only_b, only_a))
        for word in mine
        for prefix in _words().negating_prefixes
    )


def _sides(tokens: tuple[str, ...], link: str, links: frozenset[str], reach: int = 2) -> tuple[set[str], set[str]]:
    """The `reach` content words just left, and just right, of the first `link` (a word on both
    sides dropped): the two ends an asymmetric link joins, not a whole reordered sentence."""
    at = tokens.index(link)
    left = {t for t in [t for t in tokens[:at] if t not in STOPWORDS and t not in links][-reach:]}
    right = {t for t in [t for t in tokens[at + 1 :] if t not in STOPWORDS and t not in links][:reach]}
    return left - right, right - left


def _close(word: str, others: frozenset[str]) -> bool:
    """A spelling variant of one of `others` ("Hilary" / "Hillary"): same start, one edit apart."""
    return len(word) >= 5 and any(
        len(other) >= 5 and other[:2] == word[:2] and _one_edit(word, other) for other in others
    )


def _one_edit(a: str, b: str) -> bool:
    if abs(len(a) - len(b)) > 1:
        return False
    i = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return a[i + 1 :] == b[i + 1 :] or a[i + 1 :] == b[i:] or a[i:] == b[i + 1 :]


def _changed(only_a: frozenset[str], only_b: frozenset[str], a: _Read, b: _Read, category: frozenset[str]) -> bool:
    """True when the two requests name different members of a category: one replaced by another, or
    one added to a request that is otherwise word for word the same."""
    if only_a and only_b:
        return True
    if not (only_a or only_b):
        return False
    return (a.token_set - category) == (b.token_set - category)


# The checks, walked in order: each says whether its kind of difference separates the two requests.


def _number(a: _Read, b: _Read) -> bool:
    if a.numbers == b.numbers:
        return False
    words = _words().number_words
    number_tokens = frozenset(t for t in a.token_set | b.token_set if t in words or _NUMBER.fullmatch(t))
    numbers_a, numbers_b = frozenset(a.numbers), frozenset(b.numbers)
    return _changed(numbers_a - numbers_b, numbers_b - numbers_a, a, b, number_tokens)


def _negation(a: _Read, b: _Read) -> bool:
    return (a.negations > 0) != (b.negations > 0) or _uses_pair(a, b, _words().opposite) or _negated_by_prefix(a, b)


def _direction(a: _Read, b: _Read) -> bool:
    """A word's reverse, or words on either side of an asymmetric link ("to", "from", "than"...) that
    trade sides: "PDF to Word" / "Word document to PDF"."""
    words = _words()
    if _uses_pair(a, b, words.reverse):
        return True
    for link in words.links & a.token_set & b.token_set:
        left_a, right_a = _sides(a.tokens, link, words.links)
        left_b, right_b = _sides(b.tokens, link, words.links)
        if (left_a & right_b) and (right_a & left_b):
            return True
    return False


def _date(a: _Read, b: _Read) -> bool:
    words = _words()
    return _changed(a.dates - b.dates, b.dates - a.dates, a, b, a.dates | b.dates | words.deictic | words.time_units)


def _plan(a: _Read, b: _Read) -> bool:
    return _changed(a.plans - b.plans, b.plans - a.plans, a, b, a.plans | b.plans)


def _unit(a: _Read, b: _Read) -> bool:
    return _changed(a.units - b.units, b.units - a.units, a, b, a.units | b.units)


def _entity(a: _Read, b: _Read) -> bool:
    missing_a = frozenset(e for e in a.entities if f" {' '.join(_tokens(e))} " not in b.lowered)
    missing_b = frozenset(e for e in b.entities if f" {' '.join(_tokens(e))} " not in a.lowered)
    missing_a = frozenset(e for e in missing_a if not _close(e, missing_b | b.token_set))
    missing_b = frozenset(e for e in missing_b if not _close(e, missing_a | a.token_set))
    words = frozenset(t for e in missing_a | missing_b for t in _tokens(e))
    if _changed(missing_a, missing_b, a, b, words):
        return True
    # One side names an entity where the other has another word ("pandas" / "Polars").
    extra_a, extra_b = (a.token_set - b.token_set) - STOPWORDS, (b.token_set - a.token_set) - STOPWORDS
    return (bool(missing_b) and extra_b <= words and 1 <= len(extra_a) <= 2) or (
        bool(missing_a) and extra_a <= words and 1 <= len(extra_b) <= 2
    )


CHECKS: tuple[tuple[str, Callable[[_Read, _Read], bool]], ...] = (
    ("number", _number),
    ("negation", _negation),
    ("direction", _direction),
    ("date", _date),
    ("plan", _plan),
    ("unit", _unit),
    ("entity", _entity),
)


def near_miss(a: str, b: str) -> str | None:
    """The kind of answer-changing difference between two requests (see the module docstring), or
    None when there is none."""
    ra, rb = _read(a), _read(b)
    return next((kind for kind, differs in CHECKS if differs(ra, rb)), None)
