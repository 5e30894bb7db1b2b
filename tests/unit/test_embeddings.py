"""The CPU embedder: unit vectors of the right shape that put paraphrases close and unrelated text far."""

from __future__ import annotations

import numpy as np
import pytest

from llm_gateway.semantic.embeddings import Embedder, default_embedder


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return default_embedder()


def test_rows_are_unit_float32_of_model_dimension(embedder: Embedder) -> None:
    vecs = embedder.embed(["How do I learn Python?", "What is the capital of France?"])

    assert vecs.shape == (2, embedder.dim) == (2, 384)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_paraphrases_are_closer_than_unrelated_text(embedder: Embedder) -> None:
    a, b, c = embedder.embed(
        ["How can I lose weight fast?", "What is the fastest way to lose weight?", "The stock market crashed in 1929."]
    )

    assert float(a @ b) > 0.8
    assert float(a @ c) < 0.3


def test_batched_equals_one_at_a_time(embedder: Embedder) -> None:
    texts = ["short", "a noticeably longer sentence that needs more padding in a batch", "medium length text"]

    batched = embedder.embed(texts)
    single = np.vstack([embedder.embed([t]) for t in texts])

    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_empty_inputs(embedder: Embedder) -> None:
    assert embedder.embed([]).shape == (0, 384)
    empty = embedder.embed([""])
    assert empty.shape == (1, 384)
    assert np.isfinite(empty).all()


def test_embedding_is_deterministic_and_long_text_is_truncated(embedder: Embedder) -> None:
    long_text = "word " * 2000

    first = embedder.embed(["Is it safe to eat eggs?", long_text])
    second = embedder.embed(["Is it safe to eat eggs?", long_text])

    np.testing.assert_array_equal(first, second)


def test_default_embedder_is_one_per_process() -> None:
    assert default_embedder() is default_embedder()
