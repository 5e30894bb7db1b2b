"""The student as a GGUF file for the llama.cpp engine (`distill.export`): the packaged model read
by transformers, saved as a checkpoint the way a merged student is saved, exported, and served by
llama.cpp — it must answer as the packaged model does (a wrong rotary layout or tensor name
answers garbage). A checkpoint of another shape is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_gateway.distill.export import export_gguf
from llm_gateway.distill.train import load_base, save_checkpoint

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, tokenizer = load_base()
    folder = tmp_path_factory.mktemp("base")
    save_checkpoint(model, tokenizer, folder)
    return folder


def test_the_exported_checkpoint_answers_in_llama_cpp_as_the_packaged_model(
    base_checkpoint: Path, tmp_path: Path
) -> None:
    import llama_cpp

    written = export_gguf(base_checkpoint, tmp_path / "student.gguf", "q8_0", "base-again")
    assert written["tensors"] == 272 and written["quantization"] == "q8_0"
    served = llama_cpp.Llama(str(tmp_path / "student.gguf"), n_ctx=256, n_threads=2, verbose=False)
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    answer = served.create_chat_completion(messages=messages, temperature=0, max_tokens=8)  # type: ignore[arg-type]
    assert "paris" in str(answer["choices"][0]["message"]["content"]).lower()  # type: ignore[index]
    assert served.metadata["general.name"] == "base-again"


def test_a_checkpoint_of_another_shape_is_refused(base_checkpoint: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((base_checkpoint / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 2}))
    with pytest.raises(ValueError, match="not a student of the packaged model: num_hidden_layers is 2"):
        export_gguf(other, tmp_path / "x.gguf")
    with pytest.raises(ValueError, match="quantization 'q2_k'"):
        export_gguf(base_checkpoint, tmp_path / "x.gguf", "q2_k")
