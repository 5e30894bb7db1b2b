"""Endpoint settings, read from `GPU_ENDPOINT_*` environment variables.

| variable                     | field          | default                    |
|------------------------------|----------------|----------------------------|
| GPU_ENDPOINT_ENGINE          | engine         | llamacpp                   |
| GPU_ENDPOINT_MODEL_PATH      | model_path     | the packaged GGUF          |
| GPU_ENDPOINT_MODEL_ID        | model_id       | chosen by the engine       |
| GPU_ENDPOINT_N_CTX           | n_ctx          | 2048                       |
| GPU_ENDPOINT_N_THREADS       | n_threads      | all CPUs                   |
| GPU_ENDPOINT_MAX_BODY_BYTES  | max_body_bytes | 6 MiB                      |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
}


class EndpointSettings(BaseModel):
    """What the endpoint process needs to load its engine and serve."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: str = Field(default="llamacpp", min_length=1)
    model_path: Path | None = None
    model_id: str | None = Field(default=None, min_length=1)
    n_ctx: int = Field(default=2048, ge=64)
    n_threads: int | None = Field(default=None, ge=1)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024)

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
        return settings
