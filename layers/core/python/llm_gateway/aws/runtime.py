"""Lambda settings (read once from the environment) and the dependencies built from them.

Store adapters are chosen by `GATEWAY_STORE`. `sqlite` (a file under /tmp) serves single-function
use and the handler tests; the DynamoDB/Momento adapters plug in here behind the same ports.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..config import load_config
from ..deps import Deps
from ..providers.base import default_registry


class LambdaSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    config_path: str = Field(alias="GATEWAY_CONFIG_PATH")
    store: Literal["sqlite"] = Field(default="sqlite", alias="GATEWAY_STORE")
    sqlite_path: str = Field(default="/tmp/llm-gateway.db", alias="GATEWAY_SQLITE_PATH")  # noqa: S108 - Lambda scratch


@cache
def settings() -> LambdaSettings:
    import os

    return LambdaSettings.model_validate(dict(os.environ))


@cache
def deps() -> Deps:
    """Dependencies for this container, built on first use and reused across invocations."""
    from ..adapters.local.memory import MemoryRateLimiter
    from ..adapters.local.sqlite import SqliteStore

    current = settings()
    store = SqliteStore(current.sqlite_path)
    return Deps(
        config=load_config(current.config_path),
        cache=store,
        limiter=MemoryRateLimiter(),
        usage=store,
        audit=store,
        providers=default_registry(),
    )
