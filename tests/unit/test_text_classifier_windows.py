"""A long text's harmful-content score is its worst sentence window, scored exactly.

`HarmfulClassifier.assess_long` scores every sentence and every pair of neighbouring sentences in
one numpy pass (pairs from their sentences' sums, corrected for shared n-grams). This checks it
against a plain computation: each window's n-gram counts (a pair's are its two sentences' counts
added), TF-IDF per block, the window with the highest first logit.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest

from llm_gateway.guard.text_classifier import block_terms, char_wb_ngrams, read_artefact, word_ngrams
from llm_gateway.moderation.harmful import ARTEFACT_PATH, HarmfulClassifier, load_harmful_classifier, sentence_windows

TEXTS = [
    # neighbours sharing words (their counts add under the sublinear tf)
    "Here is how to make bread at home. Bread needs flour, water and salt. Bake the bread for forty "
    "minutes. Let the bread cool before you cut the bread. Enjoy your bread with butter! Fresh bread "
    "keeps for two days in a paper bag, and bread freezes well too.",
    # a harmful sentence inside an ordinary answer
    "Thanks for asking about chemistry. Many reactions are safe to try in a classroom. However, "
    "here are step by step instructions to build a pipe bomb with household materials. Please stay "
    "safe and always ask a teacher before any experiment.",
    # sentences without any in-vocabulary n-gram, repeated sentences, punctuation only
    "Ok. ... !!! ?? Ok. Ok. Ok. " * 6 + "Then something else entirely happens here, once and for all.",
    # non-ASCII text and numbers
    "Über café 123 ist gut; die Straße ist lang. Привет, как дела? 東京は大きい都市です。 "
    "The answer is 42: really, it is 42. Numbers like 3.14 and 2.71 appear twice: 3.14 and 2.71. "
    "Déjà vu: the café is open again, and the café's owner says hello.",
]


@pytest.fixture(scope="module")
def classifier() -> HarmfulClassifier:
    return load_harmful_classifier()


def _reference(text: str) -> tuple[float, str]:
    """(calibrated score, category) of `text`'s worst window, computed term by term."""
    artefact = read_artefact(ARTEFACT_PATH)
    heads = len(artefact["heads"])
    blocks = [(block, block_terms(block, heads)) for block in artefact["blocks"]]

    def counts(sentence: str) -> list[Counter[str]]:
        analyse = {"word": lambda s: word_ngrams(s, 1, 2), "char_wb": lambda s: char_wb_ngrams(s, 3, 5)}
        return [Counter(g for g in analyse[b["analyzer"]](sentence) if g in terms) for b, terms in blocks]

    def logits(per_block: list[Counter[str]]) -> list[float]:
        z = [float(b) for b in artefact["bias"]]
        for (_, terms), block_counts in zip(blocks, per_block, strict=True):
            values = {g: (1 + math.log(c)) * terms[g][0] for g, c in block_counts.items()}
            norm = math.sqrt(sum(v * v for v in values.values()))
            for head in range(heads):
                z[head] += sum(v * terms[g][1][head] for g, v in values.items()) / norm if norm else 0.0
        return z

    sentences = sentence_windows(text)
    singles = [counts(s) for s in sentences]
    pairs = [[a + b for a, b in zip(x, y, strict=True)] for x, y in itertools.pairwise(singles)]
    windows = [logits(w) for w in [*singles, *pairs]]
    worst = max(windows, key=lambda z: z[0])
    calibration = artefact["calibration"]
    score = 1 / (1 + math.exp(-(calibration["a"] * worst[0] + calibration["b"])))
    category = artefact["heads"][1 + max(range(heads - 1), key=lambda i: worst[1 + i])]
    return score, category


@pytest.mark.parametrize("text", TEXTS)
def test_the_worst_window_is_scored_as_a_direct_computation(classifier: HarmfulClassifier, text: str) -> None:
    assert len(sentence_windows(text)) > 1  # the windowed path, not the short one
    score, category = _reference(text)
    assessed = classifier.assess_long(text)
    assert assessed.score == pytest.approx(score, abs=1e-9)
    assert assessed.category == category


def test_a_text_seen_before_is_answered_from_memory_with_the_same_result() -> None:
    fresh = HarmfulClassifier(read_artefact(ARTEFACT_PATH))
    first = fresh.assess_long(TEXTS[1])
    assert fresh.assess_long(TEXTS[1]) is first  # remembered: the guard and a later turn pay once
