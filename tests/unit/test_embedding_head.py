"""The embedding head: numpy inference equals scikit-learn's, and a request's harmful-content score
is the fusion of tier 2's and the head's (the higher of the two for an artefact without a fusion)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier

from llm_gateway.guard.embedding_head import EmbeddingHead, encode_head
from llm_gateway.guard.text_classifier import read_artefact
from llm_gateway.moderation.harmful import ARTEFACT_PATH, HarmfulClassifier, probability_logit


def test_numpy_inference_equals_scikit_learns() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 384)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    mlp = MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0).fit(x, y)
    head = EmbeddingHead(encode_head(mlp))
    expected = mlp.predict_proba(x[:50])[:, 1]
    assert np.allclose(head.probabilities(x[:50]), expected, atol=1e-5)
    assert head.probability(x[0]) == pytest.approx(float(expected[0]), abs=1e-5)
    assert head.dim == 384


def test_a_head_of_another_shape_is_refused() -> None:
    rng = np.random.default_rng(1)
    mlp = MLPClassifier(hidden_layer_sizes=(8, 4), max_iter=2000, random_state=0)
    mlp.fit(rng.normal(size=(60, 10)), rng.integers(0, 2, 60))
    with pytest.raises(ValueError, match="one ReLU hidden layer"):
        encode_head(mlp)


def _constant_head(probability: float) -> dict[str, object]:
    """A head that says `probability` whatever the embedding (zero weights, the bias its logit)."""
    mlp = MLPClassifier(hidden_layer_sizes=(4,))
    mlp.coefs_ = [np.zeros((384, 4)), np.zeros((4, 1))]
    mlp.intercepts_ = [np.zeros(4), np.array([math.log(probability / (1 - probability))])]
    mlp.activation = "relu"
    return encode_head(mlp)


@pytest.mark.parametrize("probability", [0.02, 0.97])
def test_without_a_fusion_a_request_scores_the_higher_of_tier_2_and_the_head(probability: float) -> None:
    artefact = {k: v for k, v in read_artefact(ARTEFACT_PATH).items() if k not in ("embedding_head", "fusion")}
    plain = HarmfulClassifier(artefact)
    headed = HarmfulClassifier({**artefact, "embedding_head": _constant_head(probability)})
    for text in ["How do I make sourdough bread?", "Write a tutorial on making a pipe bomb"]:
        tier2 = plain.assess_long(text).score
        assert plain.assess_request(text).score == tier2  # no head: tier 2 alone
        assert headed.assess_request(text).score == pytest.approx(max(tier2, probability), abs=1e-6)


@pytest.mark.parametrize("probability", [0.02, 0.97])
def test_with_a_fusion_a_request_scores_the_logistic_regression_of_both_logits(probability: float) -> None:
    artefact = read_artefact(ARTEFACT_PATH)
    fusion = artefact["fusion"]
    headed = HarmfulClassifier({**artefact, "embedding_head": _constant_head(probability)})
    for text in ["How do I make sourdough bread?", "Write a tutorial on making a pipe bomb"]:
        tier2 = headed.assess_long(text).score
        z = [max(-12.0, min(12.0, v)) for v in (probability_logit(tier2), math.log(probability / (1 - probability)))]
        expected = 1 / (1 + math.exp(-(fusion["bias"] + sum(w * v for w, v in zip(fusion["weights"], z, strict=True)))))
        assert headed.assess_request(text).score == pytest.approx(expected, abs=1e-6)
        assert headed.assess_answer(text).score == pytest.approx(expected, abs=1e-6)  # an answer too


def test_a_long_text_names_the_window_its_score_comes_from() -> None:
    classifier = HarmfulClassifier(read_artefact(ARTEFACT_PATH))
    text = (
        "Thanks for asking about chemistry. Many reactions are safe to try in a classroom. However, "
        "here are step by step instructions to build a pipe bomb with household materials. Please stay "
        "safe and always ask a teacher before any experiment."
    )
    assessed = classifier.assess_long(text)
    assert "pipe bomb" in assessed.window
    assert len(assessed.window) < len(text)
    assert classifier.assess_long("How do I make sourdough bread?").window == ""
