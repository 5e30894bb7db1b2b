"""HTTP server of the model endpoint: SageMaker's container contract on one engine.

`GET /ping` answers 200 once the engine is loaded (the engine loads before the socket listens),
with the model id and its context window (`{"status": "ok", "model": ..., "context_tokens": 2048}`).
`POST /invocations` takes an `InvocationRequest` and answers an `InvocationResponse`, or NDJSON
`StreamEvent`s when `stream` is true; `POST /invocations-response-stream` always streams. Bad
input gets a 400/413 JSON error, never a stack trace; a prompt longer than the context window gets
400 `context_length_exceeded` in OpenAI's words.

Run: `python -m model_server --host 127.0.0.1 --port 8080 [--engine llamacpp] [--model-path FILE]`.
Once it listens it prints `ready http://HOST:PORT` (the bound port when `--port 0`) on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import anyio.to_thread
import uvicorn
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llm_gateway.context_window import CODE as CONTEXT_LENGTH_EXCEEDED
from llm_gateway.context_window import context_message, parse_overflow
from llm_gateway.endpoint_contract import NDJSON, InvocationRequest, StreamEvent
from llm_gateway.http.serving import AnnouncingServer, read_limited_body, ready_line

from .engines import Engine, EngineInputError, EngineUnavailable, load_engine
from .settings import DEFAULT_MAX_BODY_BYTES, EndpointSettings

# Always a stream, whatever the body says (SageMaker's response-streaming path).
STREAM_PATH = "/invocations-response-stream"
WORKER_THREADS = 256
# Streams in flight get this long to finish after SIGTERM; SageMaker kills the container at 30 s.
GRACEFUL_SHUTDOWN_S = 20


class RequestError(Exception):
    """A request the endpoint refuses; becomes an OpenAI-style JSON error response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type

    def response(self) -> JSONResponse:
        """The error as `{"error": {"message", "type", "param", "code"}}`."""
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, status_code=self.status)


def field_path(loc: Sequence[int | str]) -> str | None:
    """Render a pydantic error location as `messages[0].role`; None for the whole body."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or None


def parse_invocation(body: bytes) -> InvocationRequest:
    """Parse and validate a request body; raises `RequestError` (400) naming the first bad field."""
    try:
        return InvocationRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors[0]["type"] == "json_invalid":
            raise RequestError(400, "request body is not valid JSON", code="invalid_json") from None
        first = errors[0]
        param = field_path(first["loc"])
        where = f"'{param}'" if param else "request body"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        message = f"invalid {where}: {first['msg']}{more}"
        raise RequestError(400, message, param=param, code="invalid_value") from None


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing (413) more than `limit` bytes without buffering the excess."""
    return await read_limited_body(
        request, limit, lambda: RequestError(413, f"request body exceeds {limit} bytes", code="request_too_large")
    )


def _ndjson_line(event: StreamEvent) -> bytes:
    return event.model_dump_json(exclude_none=True).encode() + b"\n"


def _next_event(events: Iterator[StreamEvent]) -> StreamEvent | None:
    return next(events, None)


async def _ndjson(first: StreamEvent, events: Iterator[StreamEvent]) -> AsyncIterator[bytes]:
    try:
        event: StreamEvent | None = first
        while event is not None:
            yield _ndjson_line(event)
            event = await run_in_threadpool(_next_event, events)
    finally:
        # Closing releases the engine (its lock) at once when the client goes away mid-stream.
        close = getattr(events, "close", None)
        if close is not None:
            close()


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    # Each request in flight holds a worker thread while its engine generates; the default of 40
    # would queue requests that a batching engine could decode at once.
    anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
    yield


def input_error(exc: EngineInputError, context_tokens: int | None = None) -> RequestError:
    """The 400 for input the engine refused; a prompt over the context window says so as OpenAI
    does (code `context_length_exceeded`), with the engine's own token count."""
    overflow = parse_overflow(exc.message)
    if overflow is None:
        return RequestError(400, exc.message, param=exc.param, code="invalid_value")
    prompt_tokens, limit = overflow
    message = context_message(context_tokens or limit, prompt_tokens)
    return RequestError(400, message, param="messages", code=CONTEXT_LENGTH_EXCEEDED)


def create_app(
    engine: Engine, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, context_tokens: int | None = None
) -> Starlette:
    """The ASGI app serving `engine`, which must already be loaded; `context_tokens` is the
    context window it was loaded with (reported on /ping)."""
    about: dict[str, Any] = {"status": "ok", "model": engine.model_id}
    if context_tokens is not None:
        about["context_tokens"] = context_tokens

    async def ping(request: Request) -> Response:
        return JSONResponse(about)

    async def invocations(request: Request) -> Response:
        try:
            req = parse_invocation(await read_body(request, max_body_bytes))
            if request.url.path == STREAM_PATH:
                req = req.model_copy(update={"stream": True})
            if not req.stream:
                answer = await run_in_threadpool(engine.generate, req)
                return Response(answer.model_dump_json(), media_type="application/json")
            events = await run_in_threadpool(engine.stream, req)
            # Pull the first event before answering so that input errors still get a 400.
            first = await run_in_threadpool(_next_event, events)
        except RequestError as exc:
            return exc.response()
        except EngineInputError as exc:
            return input_error(exc, context_tokens).response()
        if first is None:
            raise RuntimeError(f"engine '{engine.name}' ended a stream without a final event")
        return StreamingResponse(_ndjson(first, events), media_type=NDJSON)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return RequestError(exc.status_code, exc.detail).response()

    async def internal_error(request: Request, exc: Exception) -> Response:
        # The traceback goes to the server log (uvicorn logs the re-raised exception), not the client.
        return RequestError(500, "internal error", type="api_error").response()

    return Starlette(
        routes=[
            Route("/ping", ping, methods=["GET"]),
            Route("/invocations", invocations, methods=["POST"]),
            Route(STREAM_PATH, invocations, methods=["POST"]),
        ],
        lifespan=_lifespan,
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    # uvicorn handles SIGTERM/SIGINT while serving, then re-raises the signal after its graceful
    # shutdown; exiting here makes both that and a signal during model loading a clean exit 0.
    raise SystemExit(0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model_server",
        description="Serve a model over the SageMaker container contract (GET /ping, POST /invocations).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to bind; 0 picks a free one")
    parser.add_argument("--engine", help="engine name (default $MODEL_SERVER_ENGINE or llamacpp)")
    parser.add_argument("--model-path", type=Path, help="model file (default $MODEL_SERVER_MODEL_PATH)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Load the engine, then serve until SIGTERM/SIGINT; returns the process exit status."""
    args = _parser().parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_on_signal)
    try:
        settings = EndpointSettings.from_env()
        overrides: dict[str, Any] = {"engine": args.engine, "model_path": args.model_path}
        settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
        engine = load_engine(settings.engine, **settings.engine_settings())
    except (ValueError, EngineUnavailable) as exc:
        print(f"model_server: {exc}", file=sys.stderr)
        return 2
    app = create_app(engine, max_body_bytes=settings.max_body_bytes, context_tokens=settings.n_ctx)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        loop="auto",
        log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    server = AnnouncingServer(config, lambda host, port: [ready_line(host, port)])
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
