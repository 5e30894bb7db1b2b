"""Endpoint settings, read from `MODEL_SERVER_*` environment variables.

| variable                     | field          | default                    |
|------------------------------|----------------|----------------------------|
| MODEL_SERVER_ENGINE          | engine         | llamacpp                   |
| MODEL_SERVER_MODEL_PATH      | model_path     | the packaged GGUF          |
| MODEL_SERVER_MODEL_ID        | model_id       | chosen by the engine       |
| MODEL_SERVER_N_CTX           | n_ctx          | 2048                       |
| MODEL_SERVER_N_THREADS       | n_threads      | all CPUs                   |
| MODEL_SERVER_MAX_BODY_BYTES  | max_body_bytes | 6 MiB                      |

The `torch` engine also reads:

| variable                          | field               | default                        |
|-----------------------------------|---------------------|--------------------------------|
| MODEL_SERVER_DEVICE               | device              | auto (cuda if present)         |
| MODEL_SERVER_DTYPE                | dtype               | auto (bfloat16 on cuda)        |
| MODEL_SERVER_SLOTS                | slots               | 8 (requests decoded at once)   |
| MODEL_SERVER_QUANTIZATION         | quantization        | none (int8, int4)              |
| MODEL_SERVER_SPECULATIVE          | speculative         | none (prompt_lookup, draft)    |
| MODEL_SERVER_DRAFT_MODEL_PATH     | draft_model_path    | unset                          |
| MODEL_SERVER_DRAFT_TOKENS         | draft_tokens        | 8                              |
| MODEL_SERVER_PREFIX_CACHE_BLOCKS  | prefix_cache_blocks | 0 (off; blocks of 16 tokens)   |
| MODEL_SERVER_COMPILE              | compile             | false (torch.compile the step) |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# SageMaker's real-time InvokeEndpoint accepts at most 6 MB, so nothing larger can be legitimate.
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024

ENV_PREFIX = "MODEL_SERVER_"
FORMER_PREFIX = "GPU_ENDPOINT_"  # the variables' earlier name: refused with the new one named

ENV_VARS: dict[str, str] = {
    "engine": "MODEL_SERVER_ENGINE",
    "model_path": "MODEL_SERVER_MODEL_PATH",
    "model_id": "MODEL_SERVER_MODEL_ID",
    "n_ctx": "MODEL_SERVER_N_CTX",
    "n_threads": "MODEL_SERVER_N_THREADS",
    "max_body_bytes": "MODEL_SERVER_MAX_BODY_BYTES",
    "device": "MODEL_SERVER_DEVICE",
    "dtype": "MODEL_SERVER_DTYPE",
    "slots": "MODEL_SERVER_SLOTS",
    "quantization": "MODEL_SERVER_QUANTIZATION",
    "speculative": "MODEL_SERVER_SPECULATIVE",
    "draft_model_path": "MODEL_SERVER_DRAFT_MODEL_PATH",
    "draft_tokens": "MODEL_SERVER_DRAFT_TOKENS",
    "prefix_cache_blocks": "MODEL_SERVER_PREFIX_CACHE_BLOCKS",
    "compile": "MODEL_SERVER_COMPILE",
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

        Raises `pydantic.ValidationError` (a `ValueError`) naming the field of a bad value, and a
        `ValueError` naming any variable still set under the earlier `GPU_ENDPOINT_` prefix.
        """
        env = os.environ if environ is None else environ
        renamed = sorted(name for name in env if name.startswith(FORMER_PREFIX))
        if renamed:
            raise ValueError(
                f"{', '.join(renamed)}: the model server's variables are now named {ENV_PREFIX}* "
                f"(for example {renamed[0].replace(FORMER_PREFIX, ENV_PREFIX, 1)})"
            )
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
