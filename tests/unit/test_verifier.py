"""The pair verifier rejects the classic false hits that plain cosine accepts, and keeps paraphrases."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from llm_gateway.semantic.embeddings import default_embedder
from llm_gateway.semantic.features import LEXICAL_FEATURES, lexical_features
from llm_gateway.semantic.verifier import Verifier, load_verifier

FALSE_HITS = [
    ("How do I get from Paris to London?", "How do I get from London to Paris?"),
    ("What is the population of India in 2010?", "What is the population of India in 2020?"),
    ("Is it safe to eat eggs?", "Is it not safe to eat eggs?"),
    ("How do I learn Python?", "How do I learn Java?"),
]
PARAPHRASES = [
    ("How can I lose weight fast?", "What is the fastest way to lose weight?"),
    ("How do I learn Python?", "What is the best way to learn Python?"),
    ("What is the capital of France?", "what is the capital of france"),  # chat users type in lowercase
]


@pytest.fixture(scope="module")
def verifier() -> Verifier:
    return load_verifier()


def _probability(verifier: Verifier, a: str, b: str) -> tuple[float, float]:
    u, v = default_embedder().embed([a, b])
    return verifier.probability(a, b, query_vec=u, candidate_vec=v), float(u @ v)


@pytest.mark.parametrize(("query", "candidate"), FALSE_HITS)
def test_rejects_false_hits_at_target_precision(verifier: Verifier, query: str, candidate: str) -> None:
    threshold = verifier.threshold_for(0.95)

    probability, _cosine = _probability(verifier, query, candidate)

    assert probability < threshold, f"{query!r} ~ {candidate!r}: P={probability:.3f} ≥ {threshold:.3f}"


@pytest.mark.parametrize(("query", "candidate"), PARAPHRASES)
def test_accepts_paraphrases(verifier: Verifier, query: str, candidate: str) -> None:
    probability, _cosine = _probability(verifier, query, candidate)

    assert probability >= verifier.threshold_for(0.90)


def test_verifier_is_symmetric_and_embeds_when_no_vectors_given(verifier: Verifier) -> None:
    a, b = PARAPHRASES[0]

    given, _ = _probability(verifier, a, b)

    assert verifier.probability(a, b) == pytest.approx(given, abs=1e-5)
    assert verifier.probability(b, a) == pytest.approx(given, abs=1e-5)


def test_probabilities_lie_in_unit_interval(verifier: Verifier) -> None:
    texts = [t for pair in FALSE_HITS + PARAPHRASES for t in pair]
    vecs = default_embedder().embed(texts)

    probs = verifier.probabilities(texts[::2], texts[1::2], vecs[::2], vecs[1::2])

    assert probs.shape == (len(texts) // 2,)
    assert ((probs >= 0.0) & (probs <= 1.0)).all()
    assert verifier.probabilities([], [], np.zeros((0, 384), np.float32), np.zeros((0, 384), np.float32)).shape == (0,)


def test_threshold_rises_with_target_precision(verifier: Verifier) -> None:
    targets = np.linspace(0.5, 0.999, 60)

    thresholds = [verifier.threshold_for(float(t)) for t in targets]

    assert all(lo <= hi for lo, hi in itertools.pairwise(thresholds))
    assert 0.0 <= thresholds[0] <= thresholds[-1] <= 1.0


def test_artefact_loads_and_scores_without_scikit_learn() -> None:
    code = (
        "import sys, numpy as np\n"
        "from llm_gateway.semantic.verifier import load_verifier\n"
        "v = load_verifier()\n"
        "u = np.ones((1, 384), np.float32) / np.sqrt(384)\n"
        "p = v.probabilities(['a b'], ['a c'], u, u)\n"
        "assert 0 <= p[0] <= 1\n"
        "assert not any(m == 'sklearn' or m.startswith('sklearn.') for m in sys.modules), 'sklearn imported'\n"
    )

    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("a", "b", "feature"),
    [
        ("How do I get from Paris to London?", "How do I get from London to Paris?", "direction_swap"),
        ("What is the population of India in 2010?", "What is the population of India in 2020?", "date_mismatch"),
        ("Is it safe to eat eggs?", "Is it not safe to eat eggs?", "negation_asymmetry"),
        ("How much is 5 dollars in euros?", "How much is 50 dollars in euros?", "number_mismatch"),
        ("What will the weather be today?", "What will the weather be tomorrow?", "time_frame_mismatch"),
        ("Why do cats purr?", "How do cats purr?", "question_word_mismatch"),
    ],
)
def test_mismatch_detectors_fire_on_their_case(a: str, b: str, feature: str) -> None:
    values = dict(zip(LEXICAL_FEATURES, lexical_features(a, b, 0.9), strict=True))
    same = dict(zip(LEXICAL_FEATURES, lexical_features(a, a, 1.0), strict=True))

    assert values[feature] > 0
    assert same[feature] == 0
