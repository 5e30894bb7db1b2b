"""Endpoint settings, read from `GPU_ENDPOINT_*` environment variables.

| variable                     | field          | default                    |
|------------------------------|----------------|----------------------------|
| GPU_ENDPOINT_ENGINE          | engine         | llamacpp                   |
| GPU_ENDPOINT_MODEL_PATH      | model_path     | the packaged GGUF          |
| GPU_ENDPOINT_MODEL_ID        | model_id       | chosen by the engine       |
| GPU_ENDPOINT_N_CTX           | n_ctx          | 2048                       |
| GPU_ENDPOINT_N_THREADS       | n_threads      | all CPUs                   |
| GPU_ENDPOINT_MAX_BODY_BYTES  | max_body_bytes | 6 MiB                      |

The `torch` engine also reads:

| variable                          | field               | default                        |
|-----------------------------------|---------------------|--------------------------------|
| GPU_ENDPOINT_DEVICE               | device              | auto (cuda if present)         |
| GPU_ENDPOINT_DTYPE                | dtype               | auto (bfloat16 on cuda)        |
| GPU_ENDPOINT_SLOTS                | slots               | 8 (requests decoded at once)   |
| GPU_ENDPOINT_QUANTIZATION         | quantization        | none (int8, int4)              |
| GPU_ENDPOINT_SPECULATIVE          | speculative         | none (prompt_lookup, draft)    |
| GPU_ENDPOINT_DRAFT_MODEL_PATH     | draft_model_path    | unset                          |
| GPU_ENDPOINT_DRAFT_TOKENS         | draft_tokens        | 8                              |
| GPU_ENDPOINT_PREFIX_CACHE_BLOCKS  | prefix_cache_blocks | 0 (off; blocks of 16 tokens)   |
| GPU_ENDPOINT_COMPILE              | compile             | false (torch.compile the step) |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# SageMaker's real-time InvokeEndpoint accepts at most 6 MB, so nothing larger can be legitimate.
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024

ENV_VARS: dict[str, str] = {
    "engine": "GPU_ENDPOINT_ENGINE",
    "model_path": "GPU_ENDPOINT_MODEL_PATH",
    "model_id": "GPU_ENDPOINT_MODEL_ID",
    "n_ctx": "GPU_ENDPOINT_N_CTX",
    "n_threads": "GPU_ENDPOINT_N_THREADS",
    "max_body_bytes": "GPU_ENDPOINT_MAX_BODY_BYTES",
    "device": "GPU_ENDPOINT_DEVICE",
    "dtype": "GPU_ENDPOINT_DTYPE",
    "slots": "GPU_ENDPOINT_SLOTS",
    "quantization": "GPU_ENDPOINT_QUANTIZATION",
    "speculative": "GPU_ENDPOINT_SPECULATIVE",
    "draft_model_path": "GPU_ENDPOINT_DRAFT_MODEL_PATH",
    "draft_tokens": "GPU_ENDPOINT_DRAFT_TOKENS",
    "prefix_cache_blocks": "GPU_ENDPOINT_PREFIX_CACHE_BLOCKS",
    "compile": "GPU_ENDPOINT_COMPILE",
}
TORCH_ONLY = (
    "device",
    "dtype",
    "slots",
    "quantization",
    "speculative",
    "draft_model_path",
    "draft_tokens",
    "prefix_cache_blocks",
    "compile",
)


class EndpointSettings(BaseModel):
    """What the endpoint process needs to load its engine and serve."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: str = Field(default="llamacpp", min_length=1)
    model_path: Path | None = None
    model_id: str | None = Field(default=None, min_length=1)
    n_ctx: int = Field(default=2048, ge=64)
    n_threads: int | None = Field(default=None, ge=1)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024)
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    slots: int = Field(default=8, ge=1, le=512)
    quantization: Literal["none", "int8", "int4"] = "none"
    speculative: Literal["none", "prompt_lookup", "draft"] = "none"
    draft_model_path: Path | None = None
    draft_tokens: int = Field(default=8, ge=1, le=32)
    prefix_cache_blocks: int = Field(default=0, ge=0)
    compile: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EndpointSettings:
        """Read settings from `environ` (default `os.environ`); empty variables count as unset.

        Raises `pydantic.ValidationError` (a `ValueError`) naming the field of a bad value.
        """
        env = os.environ if environ is None else environ
        values = {field: env[var] for field, var in ENV_VARS.items() if env.get(var, "").strip()}
        return cls.model_validate(values)

    def engine_settings(self) -> dict[str, Any]:
        """Keyword arguments for `load_engine`; unset optional values are left to the engine."""
        settings: dict[str, Any] = {"n_ctx": self.n_ctx}
        for name in ("model_path", "model_id", "n_threads"):
            value = getattr(self, name)
            if value is not None:
                settings[name] = value
        if self.engine == "torch":
            settings.update({name: getattr(self, name) for name in TORCH_ONLY if getattr(self, name) is not None})
        return settings
