"""Groundedness of RAG answers: is each claim of the answer supported by the request's context?

Claims are the answer's sentences (hedges such as "I don't know" and fragments of fewer than
four words are not claims). A claim's support is the best, over the context's sentences, of

    0.5 * cosine(claim, sentence)            (the semantic cache's embedding model)
  + 0.5 * share of the claim's content words found in that sentence (or its neighbours)

and 0 when the claim states a number the context never does (the commonest fabricated detail).
Claims below the tenant's threshold are unsupported. Measured on a labelled set in
`bench/guard.py` section (f); the optional second-model check (`consistency.py`) covers what word
and embedding overlap cannot (negation, swapped roles).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..stopwords import STOPWORDS

if TYPE_CHECKING:
    import numpy as np

Embed = Callable[[list[str]], "np.ndarray"]

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[a-z0-9]+(?:['.][a-z0-9]+)*")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_HEDGES = ("i don't know", "i do not know", "the context does not", "not in the context", "i'm not sure")
# The overlap of a claim with the passages counts neither function words nor negations and
# possessives: word overlap cannot tell what they change (the second-model check can)
_IGNORED = STOPWORDS | {"no", "not", "his", "her"}
MIN_CLAIM_WORDS = 4


@dataclass(frozen=True)
class ClaimSupport:
    claim: str
    support: float  # 0..1
    evidence: int | None  # index of the best context sentence


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def claims(answer: str) -> list[str]:
    """The answer's checkable sentences."""
    found = []
    for sentence in split_sentences(answer):
        lowered = sentence.lower()
        if len(_WORD.findall(lowered)) < MIN_CLAIM_WORDS or any(h in lowered for h in _HEDGES):
            continue
        found.append(sentence)
    return found


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _IGNORED}


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


def support(answer: str, passages: list[str], embed: Embed) -> list[ClaimSupport]:
    """Each claim's support by the passages (an empty list when the answer makes no claim)."""
    found = claims(answer)
    evidence = [s for passage in passages for s in split_sentences(passage)]
    if not found:
        return []
    if not evidence:
        return [ClaimSupport(claim, 0.0, None) for claim in found]
    vectors = embed(found + evidence)
    cosine = vectors[: len(found)] @ vectors[len(found) :].T
    words = [_content_words(s) for s in evidence]
    context_numbers = _numbers(" ".join(passages))
    results = []
    for i, claim in enumerate(found):
        wanted = _content_words(claim)
        if _numbers(claim) - context_numbers:
            results.append(ClaimSupport(claim, 0.0, None))
            continue
        best, best_at = 0.0, None
        for j in range(len(evidence)):
            # The sentence with its neighbours: a claim often joins two adjacent context sentences.
            nearby = words[j].union(*words[max(0, j - 1) : j + 2])
            lexical = len(wanted & nearby) / len(wanted) if wanted else 1.0
            score = 0.5 * max(0.0, float(cosine[i, j])) + 0.5 * lexical
            if score > best:
                best, best_at = score, j
        results.append(ClaimSupport(claim, round(best, 4), best_at))
    return results
