"""Weight-only quantization of the model's linear layers: int8 per channel, int4 per group.

Activations stay in the model's dtype; only the weights shrink, which is what speeds up decoding
(a one-token step reads every weight once, so its time is the bytes of the weights).

- `Int8Linear`: symmetric int8 per output channel. Its forward converts the weight to the
  activation dtype inside the matrix product's expression; under `torch.compile` the conversion
  fuses into the product, so the int8 bytes are what is read.
- `Int4Linear`: asymmetric 4-bit per group of `group_size` input channels (scale and zero point
  per group), two weights per byte. It runs on PyTorch's packed int4 kernel where the device has
  one (`_weight_int4pack_mm` on CUDA, `_weight_int4pack_mm_for_cpu` on the CPU), after checking
  it against the plain dequantizing product on a probe input; otherwise on the plain product.

`quantize(model, "int8" | "int4")` replaces every linear layer of the blocks and the output
head (the embedding table stays: a lookup reads a few rows).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Quantization = Literal["none", "int8", "int4"]
QUANTIZATIONS: tuple[str, ...] = ("none", "int8", "int4")
INT4_GROUP = 32
INT4_INNER_K_TILES = 8


class Int8Linear(nn.Module):
    weight: Tensor
    scale: Tensor

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        self.register_buffer("weight", torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(linear.weight.dtype))
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype)) * self.scale

    def dequantized(self) -> Tensor:
        return self.weight.float() * self.scale.float()[:, None]


def _int4_parameters(weight: Tensor, group: int) -> tuple[Tensor, Tensor, Tensor]:
    """(codes 0..15 as int32 [N, K], scales [K/group, N], zeros [K/group, N]) with
    w ≈ (code - 8) * scale + zero, the layout of PyTorch's packed int4 kernels."""
    out_features, in_features = weight.shape
    grouped = weight.float().reshape(out_features, in_features // group, group)
    low, high = grouped.amin(dim=-1), grouped.amax(dim=-1)
    scale = (high - low).clamp(min=1e-8) / 15.0
    zero = low + scale * 8.0
    codes = torch.round((grouped - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
    return codes.reshape(out_features, in_features), scale.t().contiguous(), zero.t().contiguous()


class Int4Linear(nn.Module):
    packed: Tensor
    scales_and_zeros: Tensor

    def __init__(self, linear: nn.Linear, group: int = INT4_GROUP) -> None:
        super().__init__()
        out_features, in_features = linear.weight.shape
        group = min(group, in_features)
        while in_features % group:
            group //= 2
        self.group = group
        self.in_features, self.out_features = in_features, out_features
        dtype = linear.weight.dtype
        codes, scale, zero = _int4_parameters(linear.weight.detach(), group)
        self.register_buffer("packed", (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8))
        self.register_buffer("scales_and_zeros", torch.stack([scale, zero], dim=-1).to(dtype))
        self.kernel = "dequantize"
        self._kernel_weight: Tensor | None = None
        self._select_kernel(codes, dtype, linear.weight.device)

    def codes(self) -> Tensor:
        return torch.stack([self.packed >> 4, self.packed & 15], dim=-1).reshape(self.out_features, -1).to(torch.int32)

    def dequantized(self) -> Tensor:
        scale = self.scales_and_zeros[..., 0].float().t().repeat_interleave(self.group, dim=1)
        zero = self.scales_and_zeros[..., 1].float().t().repeat_interleave(self.group, dim=1)
        return (self.codes().float() - 8.0) * scale + zero

    def _plain(self, x: Tensor) -> Tensor:
        return F.linear(x, self.dequantized().to(x.dtype))

    def _select_kernel(self, codes: Tensor, dtype: torch.dtype, device: torch.device) -> None:
        """Use the device's packed int4 kernel if it exists and agrees with the plain product."""
        aten = torch.ops.aten
        try:
            if device.type == "cuda" and dtype == torch.bfloat16 and self.in_features % (INT4_INNER_K_TILES * 16) == 0:
                weight = aten._convert_weight_to_int4pack(self.packed, INT4_INNER_K_TILES)
                kernel = "cuda_int4pack"
            elif device.type == "cpu" and hasattr(aten, "_weight_int4pack_mm_for_cpu"):
                weight = aten._convert_weight_to_int4pack_for_cpu(codes, INT4_INNER_K_TILES)
                kernel = "cpu_int4pack"
            else:
                return
            self._kernel_weight = weight
            self.kernel = kernel
            probe = torch.randn(3, self.in_features, device=device, dtype=dtype)
            fast, plain = self.forward(probe).float(), self._plain(probe).float()
            if not torch.allclose(fast, plain, rtol=2e-2, atol=2e-2 * float(plain.abs().max()) + 1e-4):
                raise ValueError("packed int4 kernel disagrees with the plain product")
        except (RuntimeError, ValueError, AttributeError, NotImplementedError):
            self._kernel_weight, self.kernel = None, "dequantize"

    def forward(self, x: Tensor) -> Tensor:
        weight = self._kernel_weight
        if weight is None:
            return self._plain(x)
        shape = x.shape
        flat = x.reshape(-1, self.in_features)
        out: Tensor
        if self.kernel == "cuda_int4pack":
            out = torch.ops.aten._weight_int4pack_mm(flat, weight, self.group, self.scales_and_zeros)
        else:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, weight, self.group, self.scales_and_zeros)
        return out.reshape(*shape[:-1], self.out_features)


def quantize(model: nn.Module, quantization: str, group: int = INT4_GROUP) -> dict[str, int]:
    """Replace the linear layers of `model` in place; returns how many layers each kernel serves."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantization!r} (one of {', '.join(QUANTIZATIONS)})")
    if quantization == "none":
        return {}
    kernels: dict[str, int] = {}

    def replacement(linear: nn.Linear) -> nn.Module:
        layer: Int8Linear | Int4Linear = Int8Linear(linear) if quantization == "int8" else Int4Linear(linear, group)
        name = "int8" if isinstance(layer, Int8Linear) else layer.kernel
        kernels[name] = kernels.get(name, 0) + 1
        return layer

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, replacement(child))
    return kernels


def weight_bytes(model: nn.Module) -> int:
    """Bytes a one-token step reads for weights: every parameter and buffer except the KV cache,
    the rotary tables and the embedding table (a lookup reads a few rows of it)."""
    skip = {"kv_cache", "cos", "sin", "key_positions"}
    seen: set[int] = set()
    total = 0
    embed = getattr(model, "embed", None)
    tied = embed is not None and getattr(getattr(model, "lm_head", None), "weight", None) is embed.weight
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if name.split(".")[-1] in skip or id(tensor) in seen:
            continue
        if name == "embed.weight" and not tied:
            continue
        seen.add(id(tensor))
        total += tensor.numel() * tensor.element_size()
    return total
