"""The merged student as a GGUF file for the endpoint's llama.cpp engine (`distill train --gguf
q8_0`): the packaged SmolLM2-135M's GGUF metadata (architecture, shape, tokenizer, chat template)
with the student's weights in place of its own, so llama.cpp serves the student as it serves the
packaged model, about twice as fast on a CPU as the torch engine serves the checkpoint.

The student is the packaged model fine-tuned, so its shape must be the packaged model's (checked).
Weights are read from the checkpoint's safetensors as transformers saved them; the query and key
projections go back to the interleaved rotary layout llama.cpp expects (transformers undid it when
it read the GGUF); matrices are quantized (`q8_0` by default, `q4_1` as the packaged model, or
`f16`/`f32`), norms stay float32. The tied output projection is the token embedding, as in the
packaged file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

QUANTIZATIONS = ("q8_0", "q4_1", "f16", "f32")
_SKIPPED_FIELDS = ("general.architecture", "general.file_type", "general.name")


def _permute(weights: Any, heads: int) -> Any:
    """HF's rotary layout (halves) to GGML's (interleaved pairs), per head."""
    rows = weights.shape[0]
    return weights.reshape(heads, 2, rows // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _copy_metadata(reader: Any, writer: Any) -> None:
    import gguf

    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in _SKIPPED_FIELDS:
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)


def _shape_problem(config: dict[str, Any], reader: Any) -> str | None:
    wanted = {
        "num_hidden_layers": "llama.block_count",
        "hidden_size": "llama.embedding_length",
        "intermediate_size": "llama.feed_forward_length",
        "num_attention_heads": "llama.attention.head_count",
        "num_key_value_heads": "llama.attention.head_count_kv",
        "vocab_size": "llama.vocab_size",  # the packaged tokenizer's, which the file carries
    }
    for key, field in wanted.items():
        packaged = int(reader.fields[field].contents())
        if config.get(key) != packaged:
            return f"{key} is {config.get(key)}, the packaged model's {packaged}"
    return None


def export_gguf(checkpoint: Path, out: Path, quantization: str = "q8_0", name: str = "student") -> dict[str, Any]:
    """Write `checkpoint` (a merged student's folder) as the GGUF file `out`; what was written.
    ValueError when the checkpoint is not of the packaged model's shape (its layers, widths, heads,
    vocabulary, tied output projection), cannot be read, or a tensor has no GGUF name; `out` is
    written whole or not at all."""
    import gguf

    from model_server.engines.packaged import packaged_model_path

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization {quantization!r}: one of {', '.join(QUANTIZATIONS)}")
    config = _checkpoint_config(checkpoint)
    reader = gguf.GGUFReader(str(packaged_model_path()))
    problem = _shape_problem(config, reader)
    if problem is not None:
        raise ValueError(f"{checkpoint} is not a student of the packaged model: {problem}")
    state = _weights(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")  # a GGUF file only once it is whole
    try:
        writer = gguf.GGUFWriter(str(partial), "llama")
        _copy_metadata(reader, writer)
        writer.add_name(name)
        file_type = getattr(gguf.LlamaFileType, f"MOSTLY_{quantization.upper()}", gguf.LlamaFileType.ALL_F32)
        writer.add_file_type(int(file_type))
        written = _add_tensors(writer, state, config, gguf.GGMLQuantizationType[quantization.upper()], checkpoint)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return {"gguf": str(out), "quantization": quantization, "tensors": written, "bytes": out.stat().st_size}


def _weights(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's tensors by name, the token embedding among them (the output projection is it)."""
    import numpy as np
    from safetensors.numpy import load_file

    try:
        state = load_file(str(checkpoint / "model.safetensors"))
    except (OSError, ValueError) as exc:  # absent, sharded, or not safetensors
        raise ValueError(f"{checkpoint}: no readable model.safetensors ({exc})") from None
    # tied: safetensors keeps one name of a shared tensor, which may be the output projection's
    if "model.embed_tokens.weight" not in state and "lm_head.weight" in state:
        state["model.embed_tokens.weight"] = state["lm_head.weight"]
    head, embedding = state.get("lm_head.weight"), state.get("model.embed_tokens.weight")
    if head is not None and (embedding is None or not np.array_equal(head, embedding)):
        raise ValueError(f"{checkpoint}: its output projection is not its token embedding (the packaged model's is)")
    return state


def _add_tensors(writer: Any, state: dict[str, Any], config: dict[str, Any], qtype: Any, checkpoint: Path) -> int:
    """Each tensor under its GGUF name, the rotary projections permuted, matrices in `qtype`; how many."""
    import gguf
    import numpy as np

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    written = 0
    for key in sorted(state):
        if key == "lm_head.weight":  # tied to the token embedding, as in the packaged file
            continue
        target = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ValueError(f"{checkpoint}: tensor {key} has no GGUF name")
        data = state[key].astype(np.float32)
        if key.endswith("self_attn.q_proj.weight"):
            data = _permute(data, config["num_attention_heads"])
        elif key.endswith("self_attn.k_proj.weight"):
            data = _permute(data, config["num_key_value_heads"])
        if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(target, data)
        else:
            writer.add_tensor(target, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        written += 1
    return written


def _checkpoint_config(checkpoint: Path) -> dict[str, Any]:
    try:
        config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{checkpoint}: no readable config.json ({exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{checkpoint}: config.json is not a model configuration")
    return config
