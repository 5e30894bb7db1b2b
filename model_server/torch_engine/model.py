"""A compact Llama for the torch engine: fused projections and a static, slot-addressed KV cache.

One module serves the Llama family as Hugging Face defines it (Llama 2/3.x, SmolLM2, TinyLlama):
RMSNorm, rotary embeddings (with Llama 3's frequency scaling), grouped-query attention and a
SwiGLU MLP. It is written for decoding, not training:

- q/k/v are one projection and gate/up are one projection (fewer, larger matrix products);
- the KV cache is pre-allocated for `slots` sequences of `max_len` positions and never resized,
  so the one-token step has static shapes and can be captured as a CUDA graph;
- every call names, per row, the cache slot it belongs to and the absolute position of each of
  its tokens. Tokens write their keys and values at (slot, position) and attend to every position
  at or before their own. A position past the sequence's end may hold stale values (a slot's
  previous sequence, rejected speculative tokens); it is masked until it is written again.

Weights load from a Hugging Face state dict (`load_hf_state_dict`), so anything
`transformers` can read (safetensors, GGUF) can be served; `random_weights` builds a model of a
named real shape for speed measurements without a checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class LlamaShape:
    """The dimensions of a Llama-family model."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10_000.0
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = False
    rope_scaling: Mapping[str, Any] | None = field(default=None, hash=False)
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> LlamaShape:
        """The shape of a Hugging Face `LlamaConfig` (as a dict, e.g. config.json)."""
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        eos = config.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
        scaling = config.get("rope_scaling")
        if scaling is None and isinstance(config.get("rope_parameters"), Mapping):
            parameters = config["rope_parameters"]
            scaling = parameters if parameters.get("rope_type", "default") != "default" else None
        theta = config.get("rope_theta")
        if theta is None and isinstance(config.get("rope_parameters"), Mapping):
            theta = config["rope_parameters"].get("rope_theta")
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(config["intermediate_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            rope_theta=float(theta or 10_000.0),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-5)),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            rope_scaling=dict(scaling) if scaling else None,
            bos_token_id=config.get("bos_token_id"),
            eos_token_ids=eos_ids,
        )

    def parameters_count(self) -> int:
        per_layer = (
            self.hidden_size * (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
            + self.num_heads * self.head_dim * self.hidden_size
            + 3 * self.hidden_size * self.intermediate_size
            + 2 * self.hidden_size
        )
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_embeddings else 2)
        return self.num_layers * per_layer + embeddings + self.hidden_size


LLAMA_3_SCALING = {
    "rope_type": "llama3",
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

# Real shapes, for measuring speed on random weights where no checkpoint can be fetched.
SHAPES: dict[str, LlamaShape] = {
    "llama-3.2-1b": LlamaShape(128_256, 2048, 8192, 16, 32, 8, 64, 500_000.0, 1e-5, True, LLAMA_3_SCALING),
    "llama-3.2-3b": LlamaShape(128_256, 3072, 8192, 28, 24, 8, 128, 500_000.0, 1e-5, True, LLAMA_3_SCALING),
    "llama-3.1-8b": LlamaShape(128_256, 4096, 14_336, 32, 32, 8, 128, 500_000.0, 1e-5, False, LLAMA_3_SCALING),
    "smollm2-135m": LlamaShape(49_152, 576, 1536, 30, 9, 3, 64, 100_000.0, 1e-5, True),
    "smollm2-360m": LlamaShape(49_152, 960, 2560, 32, 15, 5, 64, 100_000.0, 1e-5, True),
    "tiny": LlamaShape(512, 64, 128, 2, 4, 2, 16, 10_000.0, 1e-5, False),
}


def inverse_frequencies(shape: LlamaShape) -> Tensor:
    """Rotary inverse frequencies, with Llama 3's long-context scaling when the shape has it."""
    dims = torch.arange(0, shape.head_dim, 2, dtype=torch.float64) / shape.head_dim
    inv = 1.0 / (shape.rope_theta**dims)
    scaling = shape.rope_scaling
    if not scaling or scaling.get("rope_type", scaling.get("type")) != "llama3":
        if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
            raise ValueError(f"unsupported rope scaling {scaling.get('rope_type', scaling.get('type'))!r}")
        return inv.float()
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    original = float(scaling["original_max_position_embeddings"])
    wavelength = 2 * math.pi / inv
    scaled = torch.where(wavelength > original / low, inv / factor, inv)
    smooth = (original / wavelength - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelength >= original / high) & (wavelength <= original / low)
    return torch.where(medium, blended, scaled).float()


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding in Hugging Face's half-split layout; x is [B, T, heads, head_dim]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


def grouped_attention(q: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> Tensor:
    """Attention of few queries, each key/value head shared by its group of query heads without
    copying it: q [B, T, H, D], keys/values [B, KV, S, D], mask [B, 1, T, S] -> [B, T, H, D]."""
    batch, length, heads, dim = q.shape
    kv_heads = keys.shape[1]
    grouped = q.view(batch, length, kv_heads, heads // kv_heads, dim).permute(0, 2, 3, 1, 4)
    scores = torch.matmul(grouped, keys[:, :, None].transpose(-1, -2)).float() * dim**-0.5
    scores = scores.masked_fill(~mask[:, :, None], float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1).to(values.dtype), values[:, :, None])
    return out.permute(0, 3, 1, 2, 4).reshape(batch, length, heads, dim)


class Block(nn.Module):
    def __init__(self, shape: LlamaShape) -> None:
        super().__init__()
        self.shape = shape
        s = shape
        self.attention_norm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.wqkv = nn.Linear(s.hidden_size, (s.num_heads + 2 * s.num_kv_heads) * s.head_dim, bias=False)
        self.wo = nn.Linear(s.num_heads * s.head_dim, s.hidden_size, bias=False)
        self.mlp_norm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.w13 = nn.Linear(s.hidden_size, 2 * s.intermediate_size, bias=False)
        self.w2 = nn.Linear(s.intermediate_size, s.hidden_size, bias=False)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, positions: Tensor, kv: Tensor
    ) -> Tensor:
        """`kv` is this layer's cache of the batch's slots, [2, B, kv_heads, max_len, head_dim];
        no `mask`: the tokens are positions 0..T-1 and attend causally among themselves."""
        s = self.shape
        batch, length, _ = x.shape
        qkv = self.wqkv(self.attention_norm(x))
        q, k, v = qkv.split([s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim, s.num_kv_heads * s.head_dim], -1)
        q = rotate(q.view(batch, length, s.num_heads, s.head_dim), cos, sin)
        k = rotate(k.view(batch, length, s.num_kv_heads, s.head_dim), cos, sin)
        v = v.view(batch, length, s.num_kv_heads, s.head_dim)
        rows = torch.arange(batch, device=x.device)[:, None].expand(batch, length)
        kv[0, rows, :, positions] = k
        kv[1, rows, :, positions] = v
        span = length if mask is None else mask.shape[-1]  # attend to the first `span` positions only
        keys, values = kv[0, :, :, :span], kv[1, :, :, :span]
        if length == 1 and mask is not None:
            attended = grouped_attention(q, keys, values, mask)
        else:
            attended = F.scaled_dot_product_attention(
                q.transpose(1, 2),
                keys,
                values,
                attn_mask=mask,
                is_causal=mask is None,
                enable_gqa=s.num_heads != s.num_kv_heads,
            ).transpose(1, 2)
        x = x + self.wo(attended.reshape(batch, length, s.num_heads * s.head_dim))
        gate, up = self.w13(self.mlp_norm(x)).chunk(2, dim=-1)
        out: Tensor = x + self.w2(F.silu(gate) * up)
        return out


class Llama(nn.Module):
    """The model and its KV cache; call `allocate_cache` before the first forward."""

    def __init__(self, shape: LlamaShape) -> None:
        super().__init__()
        self.shape = shape
        self.embed = nn.Embedding(shape.vocab_size, shape.hidden_size)
        self.layers = nn.ModuleList(Block(shape) for _ in range(shape.num_layers))
        self.norm = RMSNorm(shape.hidden_size, shape.rms_norm_eps)
        self.lm_head = nn.Linear(shape.hidden_size, shape.vocab_size, bias=False)
        if shape.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.kv_cache: Tensor = torch.empty(0)
        self.cos: Tensor = torch.empty(0)
        self.sin: Tensor = torch.empty(0)
        self.key_positions: Tensor = torch.empty(0)
        self.max_len = 0
        self.slots = 0

    def allocate_cache(self, slots: int, max_len: int) -> None:
        """Pre-allocate the KV cache for `slots` sequences of up to `max_len` tokens."""
        s = self.shape
        ref = self.embed.weight
        self.kv_cache = torch.zeros(
            s.num_layers, 2, slots, s.num_kv_heads, max_len, s.head_dim, dtype=ref.dtype, device=ref.device
        )
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inverse_frequencies(s)).to(ref.device)
        self.cos = torch.cat((angles.cos(), angles.cos()), -1)
        self.sin = torch.cat((angles.sin(), angles.sin()), -1)
        self.key_positions = torch.arange(max_len, device=ref.device)
        self.max_len, self.slots = max_len, slots

    def forward(
        self,
        tokens: Tensor,
        positions: Tensor,
        first_slot: int = 0,
        span: int | None = None,
        last_only: bool = False,
        from_start: bool = False,
        pick: Tensor | None = None,
    ) -> Tensor:
        """Logits for `tokens` [B, T] at `positions` [B, T]; row b is cache slot `first_slot + b`.

        Attention reads the first `span` cached positions (default all): every position a row
        attends to must lie below it. `from_start`: the positions are 0..T-1, so attention is
        plain causal attention among the tokens themselves (a prompt's prefill; SDPA may then use
        its fused kernels). Returns [B, T, vocab] float logits, or [B, 1, vocab] for each row's last
        token when `last_only`, or for the token at index `pick[b]` [B] of each row.
        """
        span = self.max_len if span is None else span
        batch, length = tokens.shape
        x = self.embed(tokens)
        cos = self.cos[positions][:, :, None, :].to(x.dtype)
        sin = self.sin[positions][:, :, None, :].to(x.dtype)
        mask: Tensor | None = None
        if not (from_start and length > 1):
            mask = (self.key_positions[None, None, :span] <= positions[:, :, None])[:, None]
        for index, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, positions, self.kv_cache[index, :, first_slot : first_slot + batch])
        if pick is not None:
            x = x[torch.arange(batch, device=x.device), pick][:, None]
        elif last_only:
            x = x[:, -1:]
        logits: Tensor = self.lm_head(self.norm(x))
        return logits.float()


def load_hf_state_dict(shape: LlamaShape, state: Mapping[str, Tensor], dtype: torch.dtype) -> Llama:
    """A `Llama` holding the weights of a Hugging Face `LlamaForCausalLM` state dict."""
    model = Llama(shape)
    prefix = "model." if any(k.startswith("model.") for k in state) else ""

    def weight(name: str) -> Tensor:
        return state[prefix + name]

    with torch.no_grad():
        model.embed.weight.copy_(weight("embed_tokens.weight"))
        model.norm.weight.copy_(weight("norm.weight"))
        if not shape.tie_embeddings:
            model.lm_head.weight.copy_(state["lm_head.weight"])
        for index, block in enumerate(model.layers):
            assert isinstance(block, Block)
            p = f"layers.{index}."
            block.attention_norm.weight.copy_(weight(p + "input_layernorm.weight"))
            block.mlp_norm.weight.copy_(weight(p + "post_attention_layernorm.weight"))
            block.wqkv.weight.copy_(
                torch.cat([weight(p + f"self_attn.{n}_proj.weight") for n in ("q", "k", "v")], dim=0)
            )
            block.wo.weight.copy_(weight(p + "self_attn.o_proj.weight"))
            block.w13.weight.copy_(torch.cat([weight(p + f"mlp.{n}_proj.weight") for n in ("gate", "up")], dim=0))
            block.w2.weight.copy_(weight(p + "mlp.down_proj.weight"))
    return model.to(dtype)


def random_weights(shape: LlamaShape, dtype: torch.dtype, device: str | torch.device, seed: int = 0) -> Llama:
    """A model of `shape` with small random weights, built on `device` (no host copy)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.device(device):
            model = Llama(shape).to(dtype)
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.dim() > 1:
                    parameter.normal_(0.0, 0.02)
    finally:
        torch.random.set_rng_state(generator_state)
    return model
