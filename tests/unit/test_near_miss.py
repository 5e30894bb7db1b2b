"""The semantic cache's near-miss vetoes: a request that differs from a cached one only in a number,
a negation, an entity, a date, a plan or a direction is not served the cached answer.

Two pair sets (tests/data): `cache_near_miss_tuning.jsonl` (477 pairs the vetoes were developed
on) and `cache_near_miss_test.jsonl` (511 pairs written for the purpose by someone who saw neither
the code nor the other set, measured once and never tuned on). The decision measured is the one
the cache step makes: the verifier's probability at the shipped target precision (0.90), then the
vetoes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llm_gateway.semantic.embeddings import default_embedder
from llm_gateway.semantic.near_miss import near_miss
from llm_gateway.semantic.verifier import load_verifier

DATA = Path(__file__).parents[1] / "data"


def _pairs(name: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def _served(pairs: list[dict[str, object]]) -> tuple[np.ndarray, np.ndarray]:
    """(served by the verifier alone, served by the cache step: verifier and vetoes) per pair."""
    a, b = [str(p["a"]) for p in pairs], [str(p["b"]) for p in pairs]
    embedder, verifier = default_embedder(), load_verifier()
    probabilities = verifier.probabilities(a, b, embedder.embed(a), embedder.embed(b))
    by_verifier = probabilities >= verifier.threshold_for(0.90)
    vetoed = np.array([near_miss(x, y) is not None for x, y in zip(a, b, strict=True)])
    return by_verifier, by_verifier & ~vetoed


@pytest.mark.parametrize(
    ("a", "b", "kind"),
    [
        (
            "Summarise crash note 106 for the on-call engineer.",
            "Summarise crash note 107 for the on-call engineer.",
            "number",
        ),
        ("Give me three ideas for a party", "Give me 5 ideas for a party", "number"),
        ("Can I cancel my order?", "Can't I cancel my order?", "negation"),
        ("Is this ticket refundable?", "Is this ticket non-refundable?", "negation"),
        ("Are contractors eligible for the plan?", "Are contractors ineligible for the plan?", "negation"),
        ("Flights from London to Paris tomorrow", "Flights from Paris to London tomorrow", "direction"),
        ("How do I convert a PDF to Word?", "How do I convert a Word document to PDF?", "direction"),
        ("Should I buy Voltra shares now?", "Should I sell Voltra shares now?", "direction"),
        ("Cron expression for every Monday at 9am", "Cron expression for every Monday at 9pm", "date"),
        ("What's the forecast for this weekend in Austin?", "What's the forecast for next weekend in Austin?", "date"),
        ("Is the Pro plan billed monthly?", "Is the Team plan billed monthly?", "plan"),
        ("How much is a 10-mile taxi ride in Chicago?", "How much is a 10-kilometer taxi ride in Chicago?", "unit"),
        ("How do I read a CSV file in pandas?", "How do I read a CSV file in Polars?", "entity"),
        ("Who is the captain of the Norvessa Rowing Club?", "Who is the captain of the Quillon Rowing Club?", "entity"),
    ],
)
def test_each_kind_of_difference_is_named(a: str, b: str, kind: str) -> None:
    assert near_miss(a, b) == kind
    assert near_miss(b, a) == kind


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is the capital of France?", "what's the capital city of france"),
        ("Give me two examples of a haiku", "Give me 2 examples of a haiku"),
        ("Summarise this text. Thanks!", "Please summarise this text"),
        ("Why do so many people dislike Hilary Clinton?", "Why do so many people dislike Hillary Clinton?"),
        ("Flights to Paris from London", "Flights from London to Paris"),
        ("Explain photosynthesis to a ten-year-old", "Explain photosynthesis to a 10 year old"),
    ],
)
def test_paraphrases_are_not_vetoed(a: str, b: str) -> None:
    assert near_miss(a, b) is None


def test_held_out_near_misses_are_rejected_at_the_shipped_precision() -> None:
    pairs = _pairs("cache_near_miss_test.jsonl")
    different = [p for p in pairs if not p["same"]]
    by_verifier, served = _served(different)
    # Measured on this set (AVX-512 VNNI): the verifier alone served 19.1 % of them, with the
    # vetoes 2.9 % (10 of 345). The bar is 95 % rejected.
    # 5 % of 345 pairs is 17 served; measured 10
    assert int(served.sum()) <= 0.05 * len(different), f"{int(served.sum())} of {len(different)} served"
    assert served.sum() < by_verifier.sum() / 3
    for kind in ("number", "negation", "entity", "date", "plan", "direction"):
        assert sum(1 for p in different if p["kind"] == kind) >= 50


def test_the_vetoes_cost_few_held_out_paraphrase_hits() -> None:
    paraphrases = [p for p in _pairs("cache_near_miss_test.jsonl") if p["same"]]
    by_verifier, served = _served(paraphrases)
    # Measured: the verifier accepts 63 of 166 paraphrases; the vetoes take back 5 (8 %).
    assert by_verifier.sum() >= 50
    assert served.sum() >= 0.85 * by_verifier.sum()


def test_the_tuning_set_is_rejected_almost_entirely() -> None:
    pairs = _pairs("cache_near_miss_tuning.jsonl")
    different = [p for p in pairs if not p["same"]]
    _by_verifier, served = _served(different)
    # 2 % of 333 pairs is 6 served; measured 2
    assert int(served.sum()) <= 0.02 * len(different), f"{int(served.sum())} of {len(different)} served"
