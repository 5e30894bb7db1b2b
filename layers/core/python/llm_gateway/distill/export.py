"""The merged student as a GGUF file for the endpoint's llama.cpp engine (`distill train --gguf
q8_0`): the packaged SmolLM2-135M's GGUF metadata (architecture, shape, tokenizer, chat template)
with the student's weights in place of its own, so llama.cpp serves the student as it serves the
packaged model, several times faster per token on a CPU than the torch engine.

The student is the packaged model fine-tuned, so its shape must be the packaged model's (checked).
Weights are read from the checkpoint's safetensors as transformers saved them; the query and key
projections go back to the interleaved rotary layout llama.cpp expects (transformers undid it when
it read the GGUF); matrices are quantized (`q8_0` by default, `q4_1` as the packaged model, or
`f16`/`f32`), norms stay float32. The tied output projection is the token embedding, as in the
packaged file.
"""

from __future__ import annotations

import json
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
    }
    for key, field in wanted.items():
        packaged = int(reader.fields[field].contents())
        if config.get(key) != packaged:
            return f"{key} is {config.get(key)}, the packaged model's {packaged}"
    return None


def export_gguf(checkpoint: Path, out: Path, quantization: str = "q8_0", name: str = "student") -> dict[str, Any]:
    """Write `checkpoint` (a merged student's folder) as the GGUF file `out`; what was written.
    ValueError when the checkpoint is not of the packaged model's shape or a tensor has no GGUF name."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    from model_server.engines.packaged import packaged_model_path

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization {quantization!r}: one of {', '.join(QUANTIZATIONS)}")
    qtype = gguf.GGMLQuantizationType[quantization.upper()]
    config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    reader = gguf.GGUFReader(str(packaged_model_path()))
    problem = _shape_problem(config, reader)
    if problem is not None:
        raise ValueError(f"{checkpoint} is not a student of the packaged model: {problem}")
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    state = load_file(str(checkpoint / "model.safetensors"))
    # tied: safetensors keeps one name of a shared tensor, which may be the output projection's
    if "model.embed_tokens.weight" not in state and "lm_head.weight" in state:
        state["model.embed_tokens.weight"] = state["lm_head.weight"]
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), "llama")
    _copy_metadata(reader, writer)
    writer.add_name(name)
    writer.add_file_type(int(getattr(gguf.LlamaFileType, f"MOSTLY_{quantization.upper()}", gguf.LlamaFileType.ALL_F32)))
    written = 0
    for key in sorted(state):
        if key == "lm_head.weight":  # tied to the token embedding, as in the packaged file
            continue
        target = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ValueError(f"{checkpoint}: tensor {key} has no GGUF name")
        data = state[key].astype(np.float32)
        if key.endswith("self_attn.q_proj.weight"):
            data = _permute(data, heads)
        elif key.endswith("self_attn.k_proj.weight"):
            data = _permute(data, kv_heads)
        if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(target, data)
        else:
            writer.add_tensor(target, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        written += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"gguf": str(out), "quantization": quantization, "tensors": written, "bytes": out.stat().st_size}
