"""Model engines behind the endpoint: the `Engine` interface and `load_engine` by name."""

from .base import (
    Engine,
    EngineFactory,
    EngineInputError,
    EngineUnavailable,
    available_engines,
    load_engine,
    register_engine,
)

__all__ = [
    "Engine",
    "EngineFactory",
    "EngineInputError",
    "EngineUnavailable",
    "available_engines",
    "load_engine",
    "register_engine",
]
