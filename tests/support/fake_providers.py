"""Wire-compatible fake model providers, scripted by the test.

Three Starlette apps speak the real wire formats, so the official SDKs (and httpx) talk to them
exactly as they would to the real services:

* `fake_openai_app`: `POST /v1/chat/completions` (JSON, and SSE when `stream` is true, with the
  usage chunk when `stream_options.include_usage` is set) and `GET /v1/models`;
* `fake_anthropic_app`: `POST /v1/messages` (JSON, and the Messages SSE event stream);
* `fake_endpoint_app`: `POST /invocations` of `llm_gateway.endpoint_contract` (JSON, and NDJSON
  when `stream` is true) and `GET /ping`.

A `Script` shared with the test holds the behaviours to play, one per completion request
(`ok(...)`, `status(...)`, `delay(...)`, and the broken answers of `fault_upstream.fault(...)`; an
empty queue plays `ok()`), and records every request received (method, path, lower-cased headers,
parsed JSON body).

Token counts in `ok()` are the gateway's view: `prompt_tokens` includes `cached_tokens`. The
Anthropic fake reports them as Anthropic does (`input_tokens` excludes cache reads).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import anyio
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llm_gateway.endpoint_contract import NDJSON, InvocationRequest

from .fault_upstream import Fault, fault, fault_response
from .servers import ServerThread

# --------------------------------------------------------------------------- behaviours


@dataclass(frozen=True)
class Ok:
    """Answer successfully. `finish_reason` is the provider's own word (None: its normal stop)."""

    text: str = "Hello from the fake model."
    prompt_tokens: int = 12
    completion_tokens: int = 6
    cached_tokens: int = 0
    finish_reason: str | None = None
    cache_write_tokens: int = 0  # Anthropic: input tokens written to the prompt cache
    stream_usage: bool = True  # False: an OpenAI-compatible server that ignores `stream_options`
    tool_calls: tuple[Call, ...] = ()  # calls the model asks for (its turn ends with them)

    def finish(self, provider: str) -> str:
        """The provider's own finish reason for this answer."""
        if self.finish_reason is not None:
            return self.finish_reason
        if self.tool_calls:
            return "tool_calls" if provider == "openai" else "tool_use"
        return "stop" if provider == "openai" else "end_turn"


@dataclass(frozen=True)
class Call:
    """A tool call in an answer: its id, the function's name and its arguments."""

    id: str
    name: str
    arguments: dict[str, Any]


def calls(*specs: tuple[str, dict[str, Any]], text: str = "") -> Ok:
    """An answer that calls these tools (`(name, arguments)` each; ids call_1, call_2, ...)."""
    return Ok(text, tool_calls=tuple(Call(f"call_{i}", name, args) for i, (name, args) in enumerate(specs, 1)))


@dataclass(frozen=True)
class Status:
    """Answer with an HTTP error in the provider's error format."""

    code: int
    retry_after: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Delay:
    """Wait `seconds` (returning early if the client hangs up), then play `then`."""

    seconds: float
    then: Behaviour = field(default_factory=Ok)


Behaviour = Ok | Status | Delay | Fault


def ok(
    text: str = "Hello from the fake model.",
    prompt_tokens: int = 12,
    completion_tokens: int = 6,
    cached_tokens: int = 0,
    finish_reason: str | None = None,
) -> Ok:
    """A successful answer with these token counts (`prompt_tokens` includes `cached_tokens`)."""
    return Ok(text, prompt_tokens, completion_tokens, cached_tokens, finish_reason)


def status(code: int, retry_after: float | str | None = None, message: str | None = None) -> Status:
    """An error answer; `retry_after` becomes the `Retry-After` header."""
    if isinstance(retry_after, float) and retry_after.is_integer():
        retry_after = int(retry_after)
    return Status(code, None if retry_after is None else str(retry_after), message)


def delay(seconds: float, then: Behaviour | None = None) -> Delay:
    """Stall before answering (to trigger client timeouts), then play `then` (default `ok()`)."""
    return Delay(seconds, then if then is not None else Ok())


def upstream_faults(timeout_s: float, retry_after: float = 1) -> dict[str, Behaviour]:
    """The failures of the reliability suite, by name, for a model whose `timeout_s` is `timeout_s`:
    throttling, a server error, a slow start, and every broken answer of `fault_upstream`."""
    return {
        "429": status(429, retry_after=retry_after),
        "500": status(500),
        "timeout": delay(timeout_s * 4),
        "hang": fault("hang", hang_s=timeout_s * 8),
        **{kind: fault(kind) for kind in ("cut", "malformed", "empty", "wrong_type", "no_finish")},
    }


# --------------------------------------------------------------------------- script


@dataclass
class FakeBatch:
    """A provider batch the fake holds: its requests (with custom_id), and their answers."""

    id: str
    requests: list[dict[str, Any]]
    metadata: dict[str, str]
    looks: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BatchBook:
    """The provider batches a fake server holds (tests/support/fake_batches.py): a batch reports
    itself in progress for its first `polls_until_done` looks, then ended."""

    polls_until_done: int = 1
    batches: dict[str, FakeBatch] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def look(self, batch_id: str) -> FakeBatch | None:
        with self.lock:
            batch = self.batches.get(batch_id)
            if batch is not None:
                batch.looks += 1
            return batch

    def ended(self, batch: FakeBatch) -> bool:
        return batch.looks > self.polls_until_done

    def reset(self) -> None:
        with self.lock:
            self.batches.clear()
            self.files.clear()
        self.polls_until_done = 1


@dataclass(frozen=True)
class Received:
    """One request as the fake saw it."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, or None when the body was empty or not JSON


class Script:
    """Behaviours to play, one per completion request, and the record of requests received.

    Thread-safe: the test thread pushes and reads while the server thread consumes and records.
    """

    def __init__(self, *behaviours: Behaviour, responder: Callable[[Any], Behaviour] | None = None) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Behaviour] = deque(behaviours)
        self._requests: list[Received] = []
        self._responder = responder  # plays when the queue is empty: the request body -> behaviour
        self.batches = BatchBook()

    def push(self, *behaviours: Behaviour) -> Script:
        """Append behaviours to the queue; returns the script for chaining."""
        with self._lock:
            self._queue.extend(behaviours)
        return self

    def next(self, body: Any = None) -> Behaviour:
        """The next behaviour; once the queue is empty, the responder's answer to `body`, else `ok()`."""
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            return self._responder(body) if self._responder is not None else Ok()

    def record(self, received: Received) -> None:
        with self._lock:
            self._requests.append(received)

    def reset(self) -> None:
        """Forget queued behaviours and recorded requests (to reuse one server across tests)."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
        self.batches.reset()

    @property
    def pending(self) -> int:
        """How many behaviours are still queued."""
        with self._lock:
            return len(self._queue)

    @property
    def requests(self) -> list[Received]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def calls(self, path: str) -> list[Received]:
        """The requests received on `path`."""
        return [r for r in self.requests if r.path == path]

    @property
    def last(self) -> Received:
        """The most recent request."""
        with self._lock:
            if not self._requests:
                raise AssertionError("the fake server received no request")
            return self._requests[-1]


# --------------------------------------------------------------------------- shared plumbing

_ids = itertools.count(1)


async def _receive(script: Script, request: Request) -> Any:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    script.record(Received(request.method, request.url.path, dict(request.headers), body))
    return body


async def _play(request: Request, behaviour: Behaviour) -> Ok | Status | Fault | None:
    """Serve the delays; return the final behaviour, or None if the client hung up meanwhile."""
    while isinstance(behaviour, Delay):
        deadline = time.monotonic() + behaviour.seconds
        while (left := deadline - time.monotonic()) > 0:
            if await request.is_disconnected():
                return None
            await anyio.sleep(min(0.02, left))
        behaviour = behaviour.then
    return behaviour


def _pieces(text: str) -> list[str]:
    """Split text into word-sized stream chunks that concatenate back to it."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def _retry_headers(behaviour: Status) -> dict[str, str]:
    return {} if behaviour.retry_after is None else {"retry-after": behaviour.retry_after}


def _halves(text: str) -> list[str]:
    """A tool call's arguments in two streamed pieces (a split inside the JSON)."""
    middle = len(text) // 2
    return [text[:middle], text[middle:]]


def _sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def _hung_up() -> Response:
    """Nobody reads this: the client is gone."""
    return Response(status_code=499)


# --------------------------------------------------------------------------- OpenAI

_OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout", None),
    409: ("invalid_request_error", "conflict"),
    429: ("requests", "rate_limit_exceeded"),
}


def openai_error(code: int, message: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """`{"error": {"message", "type", "param", "code"}}` as the OpenAI API sends it."""
    kind, error_code = _OPENAI_ERRORS.get(code, ("server_error", None))
    error = {"message": message or f"fake OpenAI error (HTTP {code})", "type": kind, "param": None, "code": error_code}
    return JSONResponse({"error": error}, status_code=code, headers=headers)


def _openai_usage(answer: Ok) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": answer.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }


async def _openai_stream(answer: Ok, head: dict[str, Any], include_usage: bool) -> AsyncIterator[bytes]:
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return _sse({**head, "choices": [choice], **extra})

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    for piece in _pieces(answer.text):
        yield chunk({"content": piece})
    for index, call in enumerate(answer.tool_calls):
        start = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        yield chunk({"tool_calls": [start]})
        for piece in _halves(json.dumps(call.arguments)):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, answer.finish("openai"))
    if include_usage and answer.stream_usage:
        yield _sse({**head, "choices": [], "usage": _openai_usage(answer)})
    yield b"data: [DONE]\n\n"


def fake_vector(text: str, size: int) -> list[float]:
    """A unit vector that depends only on the text: what the fake embedding model answers."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [digest[i % len(digest)] - 127.5 for i in range(size)]
    norm = sum(v * v for v in raw) ** 0.5
    return [v / norm for v in raw]


def openai_completion(answer: Ok, body: dict[str, Any], head: dict[str, Any] | None = None) -> dict[str, Any]:
    """A chat completion object answering `body`."""
    if head is None:
        head = {"id": f"chatcmpl-fake-{next(_ids)}", "created": int(time.time()), "model": body.get("model")}
        head["system_fingerprint"] = "fp_fake"
    message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None}
    if answer.tool_calls:
        message["content"] = answer.text or None
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c in answer.tool_calls
        ]
    choice = {"index": 0, "message": message, "finish_reason": answer.finish("openai"), "logprobs": None}
    n = body.get("n") or 1  # as OpenAI: n choices (here the text, then "<text> (choice i)"), the prompt paid once
    choices = [choice] + [
        {**choice, "index": i, "message": {**message, "content": f"{answer.text} (choice {i + 1})"}}
        for i in range(1, n)
    ]
    usage = _openai_usage(replace(answer, completion_tokens=answer.completion_tokens * n))
    return {**head, "object": "chat.completion", "choices": choices, "usage": usage}


async def _openai_play(request: Request, script: Script, body: dict[str, Any], stream: bool) -> Ok | Response:
    """The script's next behaviour for `body`: an answer to give, or the error response it plays."""
    behaviour = await _play(request, script.next(body))
    if behaviour is None:
        return _hung_up()
    if isinstance(behaviour, Status):
        return openai_error(behaviour.code, behaviour.message, _retry_headers(behaviour))
    if isinstance(behaviour, Fault):
        return fault_response("openai", behaviour, body["model"], stream)
    return behaviour


def fake_openai_app(script: Script, models: Sequence[str] = ("gpt-fake",)) -> Starlette:
    """The OpenAI Chat Completions API, playing `script`."""

    async def chat_completions(request: Request) -> Response:
        body = await _receive(script, request)
        if not isinstance(body, dict) or not body.get("model") or not body.get("messages"):
            return openai_error(400, "'model' and 'messages' are required")
        behaviour = await _openai_play(request, script, body, bool(body.get("stream")))
        if isinstance(behaviour, Response):
            return behaviour
        head = {
            "id": f"chatcmpl-fake-{next(_ids)}",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
        }
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            head["object"] = "chat.completion.chunk"
            return StreamingResponse(_openai_stream(behaviour, head, include_usage), media_type="text/event-stream")
        return JSONResponse(openai_completion(behaviour, body, head))

    async def embeddings(request: Request) -> Response:
        body = await _receive(script, request)
        inputs = body.get("input") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) and t for t in inputs):
            return openai_error(400, "'input' must be a non-empty list of non-empty strings")
        played = await _openai_play(request, script, body, False)
        if isinstance(played, Response):
            return played
        size = int(body.get("dimensions") or 8)
        data = [{"object": "embedding", "index": i, "embedding": fake_vector(t, size)} for i, t in enumerate(inputs)]
        tokens = sum(len(t.split()) for t in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"object": "list", "data": data, "model": body["model"], "usage": usage})

    async def list_models(request: Request) -> Response:
        await _receive(script, request)
        data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"} for m in models]
        return JSONResponse({"object": "list", "data": data})

    from .fake_batches import openai_batch_routes

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            *openai_batch_routes(script),
        ]
    )


# --------------------------------------------------------------------------- Anthropic

_ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def anthropic_error(code: int, message: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """`{"type": "error", "error": {"type", "message"}}` as the Anthropic API sends it."""
    kind = _ANTHROPIC_ERRORS.get(code, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": message or f"fake Anthropic error (HTTP {code})"}}
    return JSONResponse(body, status_code=code, headers={"request-id": "req_fake", **(headers or {})})


def _anthropic_problem(body: Any) -> str | None:
    """What the real API would reject in this body (the subset that catches mapping mistakes)."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    problems = [f"{name}: Field required" for name in ("model", "max_tokens", "messages") if name not in body]
    max_tokens, temperature = body.get("max_tokens", 1), body.get("temperature")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        problems.append("max_tokens: must be a positive integer")
    if not body.get("messages") or any(m.get("role") not in ("user", "assistant") for m in body["messages"]):
        problems.append("messages: at least one, with roles 'user' or 'assistant' only")
    if temperature is not None and not 0 <= temperature <= 1:
        problems.append("temperature: must be between 0 and 1")
    problems += [f"{name}: Extra inputs are not permitted" for name in ("stop", "response_format") if name in body]
    problems += _anthropic_tool_problems(body)
    return problems[0] if problems else None


def _anthropic_tool_problems(body: dict[str, Any]) -> list[str]:
    """Tools as the API checks them: a name and an object `input_schema` each; a `tool_result`
    answers a `tool_use` of the assistant turn just before it; `tool_choice` names a known tool."""
    problems = []
    tools = body.get("tools") or []
    names = {t.get("name") for t in tools}
    for tool in tools:
        if not tool.get("name") or (tool.get("input_schema") or {}).get("type") != "object":
            problems.append("tools: each needs a name and an input_schema of type object")
    choice = body.get("tool_choice")
    if choice is not None and (choice.get("type") not in ("auto", "any", "tool", "none") or not tools):
        problems.append("tool_choice: auto, any, tool or none, with tools")
    if choice is not None and choice.get("type") == "tool" and choice.get("name") not in names:
        problems.append("tool_choice.name: not one of the tools")
    asked: set[str] = set()
    for message in body.get("messages") or []:
        blocks = message.get("content") if isinstance(message.get("content"), list) else []
        for block in blocks:
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in asked:
                problems.append("messages: tool_result blocks must answer a tool_use of the previous assistant turn")
            if block.get("type") == "tool_use" and not isinstance(block.get("input"), dict):
                problems.append("messages: tool_use.input must be an object")
        if message.get("role") == "assistant":
            asked = {b.get("id") for b in blocks if b.get("type") == "tool_use"}
    return problems


def _anthropic_usage(answer: Ok) -> dict[str, int]:
    return {
        "input_tokens": max(0, answer.prompt_tokens - answer.cached_tokens - answer.cache_write_tokens),
        "cache_creation_input_tokens": answer.cache_write_tokens,
        "cache_read_input_tokens": answer.cached_tokens,
        "output_tokens": answer.completion_tokens,
    }


def _anthropic_message(answer: Ok, model: str, content: list[dict[str, Any]], done: bool) -> dict[str, Any]:
    usage = _anthropic_usage(answer)
    if not done:
        usage["output_tokens"] = 1
    return {
        "id": f"msg_fake_{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": answer.finish("anthropic") if done else None,
        "stop_sequence": None,
        "usage": usage,
    }


def anthropic_message(answer: Ok, model: str) -> dict[str, Any]:
    """A complete Messages API answer."""
    content = [{"type": "text", "text": answer.text}] if answer.text or not answer.tool_calls else []
    content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in answer.tool_calls]
    return _anthropic_message(answer, model, content, done=True)


async def _anthropic_stream(answer: Ok, model: str) -> AsyncIterator[bytes]:
    start = _anthropic_message(answer, model, [], done=False)
    yield _sse({"type": "message_start", "message": start}, "message_start")
    yield _sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        "content_block_start",
    )
    yield _sse({"type": "ping"}, "ping")
    for piece in _pieces(answer.text):
        delta = {"type": "text_delta", "text": piece}
        yield _sse({"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta")
    yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    for index, call in enumerate(answer.tool_calls, start=1):
        block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
        yield _sse({"type": "content_block_start", "index": index, "content_block": block}, "content_block_start")
        for piece in _halves(json.dumps(call.arguments)):
            delta = {"type": "input_json_delta", "partial_json": piece}
            yield _sse({"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta")
        yield _sse({"type": "content_block_stop", "index": index}, "content_block_stop")
    yield _sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": answer.finish("anthropic"), "stop_sequence": None},
            "usage": {"output_tokens": answer.completion_tokens},
        },
        "message_delta",
    )
    yield _sse({"type": "message_stop"}, "message_stop")


def fake_anthropic_app(script: Script) -> Starlette:
    """The Anthropic Messages API, playing `script`."""

    async def messages(request: Request) -> Response:
        body = await _receive(script, request)
        problem = _anthropic_problem(body)
        if problem is not None:
            return anthropic_error(400, problem)
        behaviour = await _play(request, script.next(body))
        if behaviour is None:
            return _hung_up()
        if isinstance(behaviour, Status):
            return anthropic_error(behaviour.code, behaviour.message, _retry_headers(behaviour))
        if isinstance(behaviour, Fault):
            return fault_response("anthropic", behaviour, body["model"], bool(body.get("stream")))
        if body.get("stream"):
            return StreamingResponse(_anthropic_stream(behaviour, body["model"]), media_type="text/event-stream")
        return JSONResponse(anthropic_message(behaviour, body["model"]))

    from .fake_batches import anthropic_batch_routes

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"]), *anthropic_batch_routes(script)])


# --------------------------------------------------------------------------- SageMaker endpoint contract


def endpoint_error(code: int, message: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """The model endpoint's error body (as `model_server` sends it)."""
    kind = "invalid_request_error" if code < 500 else "api_error"
    error = {"message": message or f"fake endpoint error (HTTP {code})", "type": kind, "param": None, "code": None}
    return JSONResponse({"error": error}, status_code=code, headers=headers)


async def _ndjson(answer: Ok) -> AsyncIterator[bytes]:
    for piece in _pieces(answer.text):
        yield json.dumps({"delta": piece}).encode() + b"\n"
    usage = {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens}
    yield json.dumps({"delta": "", "finish_reason": answer.finish_reason or "stop", "usage": usage}).encode() + b"\n"


def fake_endpoint_app(script: Script, model: str = "fake-endpoint-model") -> Starlette:
    """A model container speaking `llm_gateway.endpoint_contract`, playing `script`."""

    async def invocations(request: Request) -> Response:
        body = await _receive(script, request)
        try:
            invocation = InvocationRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return endpoint_error(400, str(exc.errors(include_url=False)[0]["msg"]))
        behaviour = await _play(request, script.next(body))
        if behaviour is None:
            return _hung_up()
        if isinstance(behaviour, Status):
            return endpoint_error(behaviour.code, behaviour.message, _retry_headers(behaviour))
        if isinstance(behaviour, Fault):
            return fault_response("sagemaker", behaviour, model, invocation.stream)
        if invocation.stream:
            return StreamingResponse(_ndjson(behaviour), media_type=NDJSON)
        usage = {"prompt_tokens": behaviour.prompt_tokens, "completion_tokens": behaviour.completion_tokens}
        return JSONResponse(
            {"text": behaviour.text, "finish_reason": behaviour.finish_reason or "stop", "usage": usage, "model": model}
        )

    async def ping(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": model})

    return Starlette(
        routes=[Route("/invocations", invocations, methods=["POST"]), Route("/ping", ping, methods=["GET"])]
    )


# --------------------------------------------------------------------------- running a fake

FakeKind = Literal["openai", "anthropic", "sagemaker"]
_APPS = {"openai": fake_openai_app, "anthropic": fake_anthropic_app, "sagemaker": fake_endpoint_app}


@dataclass(frozen=True)
class FakeServer:
    """A running fake: its server URL, the URL to configure a model with, and its script."""

    kind: FakeKind
    url: str
    script: Script

    @property
    def base_url(self) -> str:
        """What `ModelConfig.base_url` (or `endpoint`, for sagemaker) should say."""
        return f"{self.url}/v1" if self.kind == "openai" else self.url


@contextmanager
def fake_server(kind: FakeKind, script: Script | None = None) -> Iterator[FakeServer]:
    """Run the fake `kind` provider on a free loopback port for the duration of the block."""
    script = script if script is not None else Script()
    with ServerThread(_APPS[kind](script)) as server:
        yield FakeServer(kind, server.url, script)
