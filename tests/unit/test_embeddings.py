"""The CPU embedder: unit vectors of the right shape that put paraphrases close and unrelated text far."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llm_gateway.semantic import model_build
from llm_gateway.semantic.embeddings import (
    MODEL_DIR_ENV,
    Embedder,
    default_embedder,
    model_dir,
    model_path,
    normalize_text,
    prepare_model,
    prepared_model_path,
)


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


def test_the_prepared_model_is_built_once_then_reused_and_is_deterministic(tmp_path: Path) -> None:
    built = prepare_model(tmp_path)
    first_mtime = built.stat().st_mtime_ns

    again = prepare_model(tmp_path)

    assert again == built == prepared_model_path(tmp_path)
    assert again.stat().st_mtime_ns == first_mtime  # not rebuilt
    assert built.read_bytes() == prepare_model().read_bytes()  # same bytes as this machine's copy
    assert [p.name for p in tmp_path.iterdir()] == [built.name]  # no temporary files left behind


def test_quantised_vectors_stay_close_to_the_float_model(embedder: Embedder) -> None:
    texts = ["How do I reset my password?", "What is the boiling point of water at altitude?", "Tell me a joke"]
    float_model = Embedder(model=model_path())

    quantised, reference = embedder.embed(texts), float_model.embed(texts)

    cosines = np.einsum("ij,ij->i", quantised, reference)
    assert (cosines > 0.98).all(), cosines


def test_an_unprepared_model_without_onnx_is_a_clear_error(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['onnx'] = None\n"
        "from llm_gateway.semantic.embeddings import prepare_model\n"
        "try:\n    prepare_model()\nexcept RuntimeError as e:\n    print('ERR', e)\n"
    )
    env = {**os.environ, MODEL_DIR_ENV: str(tmp_path / "empty")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)

    assert done.stdout.startswith("ERR the embedding model is not prepared")
    assert "`onnx`" in done.stdout and MODEL_DIR_ENV in done.stdout
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").iterdir())


def test_model_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(MODEL_DIR_ENV, str(tmp_path))
    assert model_dir() == tmp_path
    monkeypatch.delenv(MODEL_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_dir() == tmp_path / "xdg" / "llm-gateway" / "models"


def test_the_fused_rebuild_computes_exactly_what_the_packaged_model_does(tmp_path: Path) -> None:
    # The float32 rebuild (before quantisation) must match the packaged network, or the fusion is wrong
    folded, fused = tmp_path / "folded.onnx", tmp_path / "fused.onnx"
    model_build.fold(model_path(), folded)
    model_build.rebuild(folded, fused)
    texts = ["How do I reset my password?", "a", "Why is the sky blue, and why are sunsets red? " * 6]

    original, rebuilt = Embedder(model=model_path()), Embedder(model=fused)

    np.testing.assert_allclose(rebuilt.embed(texts), original.embed(texts), atol=2e-5)
    hidden = [
        e._session.run(
            None, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        )[0]
        for e in (original, rebuilt)
        for ids in [np.array([[101, 7592, 2088, 999, 102]], dtype=np.int64)]
    ]
    np.testing.assert_allclose(hidden[1], hidden[0], atol=1e-4)


def test_case_spacing_and_trailing_punctuation_do_not_move_the_vector(embedder: Embedder) -> None:
    typed = embedder.embed(
        ["What is the capital of France?", "  what is the   capital of france", "What is the capital of France!!"]
    )
    np.testing.assert_allclose(typed[1], typed[0], atol=1e-6)
    np.testing.assert_allclose(typed[2], typed[0], atol=1e-6)
    assert normalize_text(" Is 3.5 > 3?  ") == "Is 3.5 > 3"
    assert normalize_text("Use Node.js.") == "Use Node.js"
    assert normalize_text("?!") == ""
