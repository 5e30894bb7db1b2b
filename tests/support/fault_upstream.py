"""Upstream answers broken the way real providers and the proxies in front of them break them.

The fake providers (`fake_providers.py`) play a `Fault` like any other behaviour; this module
renders it on each wire (OpenAI, Anthropic, the SageMaker endpoint's JSON/NDJSON), streamed or not:

| kind | not streamed | streamed |
|---|---|---|
| `hang` | half the JSON body, then silence | some text, then silence |
| `cut` | half the JSON body, then the connection closes | some text, then the connection closes |
| `malformed` | a JSON body that breaks off (but the response ends normally) | a first event that is not JSON |
| `empty` | JSON of the wrong shape (OpenAI `choices: []`; no answer fields) | no text, no finish, a normal end |
| `wrong_type` | a `text/html` page (HTTP 200), as a proxy sends | the same page instead of the event stream |
| `no_finish` | the answer without a finish/stop reason | the text, then a normal end with no finish |

Streams that fail after text (`hang`, `cut`, `no_finish`) send `fault.text` in `pieces(text)` first.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import anyio
from starlette.responses import Response, StreamingResponse

FaultKind = Literal["hang", "cut", "malformed", "empty", "wrong_type", "no_finish"]
FAULT_KINDS: tuple[FaultKind, ...] = ("hang", "cut", "malformed", "empty", "wrong_type", "no_finish")
MID_STREAM: frozenset[FaultKind] = frozenset({"hang", "cut", "no_finish"})  # text first, then the fault
Wire = Literal["openai", "anthropic", "sagemaker"]
NDJSON = "application/x-ndjson"
HTML_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>\n"


@dataclass(frozen=True)
class Fault:
    """A broken answer of `kind` (see the module's table); streams send `text` before a mid-stream fault."""

    kind: FaultKind
    text: str = "Partial answer from a failing model."
    hang_s: float = 30.0


def fault(kind: FaultKind, text: str = "Partial answer from a failing model.", hang_s: float = 30.0) -> Fault:
    """A broken answer; `hang_s` bounds a hang (the client's timeout should end it first)."""
    return Fault(kind, text, hang_s)


def pieces(text: str) -> list[str]:
    """Split text into word-sized stream chunks that concatenate back to it."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


class ConnectionCut(Exception):
    """Raised inside a response body: the server drops the connection without ending the body."""


def _sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


async def _then_fail(fault: Fault) -> AsyncIterator[bytes]:
    """The end of a hanging or cut body (an async generator that yields nothing)."""
    if fault.kind == "hang":
        await anyio.sleep(fault.hang_s)  # cancelled when the client hangs up
    else:
        await anyio.sleep(0.05)  # let what was sent leave before the connection drops
        raise ConnectionCut("fault: connection cut mid-body")
    return
    yield b""  # pragma: no cover - makes this an async generator


async def _body(prefix: list[bytes], fault: Fault, tail: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in prefix:
        yield chunk
    if fault.kind in ("hang", "cut"):
        async for chunk in _then_fail(fault):
            yield chunk
        return
    for chunk in tail:
        yield chunk


# --------------------------------------------------------------------------- OpenAI


def _openai_head(model: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-fault-{time.monotonic_ns()}", "created": int(time.time()), "model": model}


def _openai_usage(fault: Fault) -> dict[str, int]:
    return {"prompt_tokens": 12, "completion_tokens": len(pieces(fault.text)), "total_tokens": 12}


def _openai_json(fault: Fault, model: str) -> bytes:
    head = {**_openai_head(model), "object": "chat.completion"}
    message = {"role": "assistant", "content": fault.text}
    choices: list[dict[str, Any]] = [{"index": 0, "message": message, "finish_reason": "stop"}]
    if fault.kind == "empty":
        choices = []
    if fault.kind == "no_finish":
        choices[0]["finish_reason"] = None
    return json.dumps({**head, "choices": choices, "usage": _openai_usage(fault)}).encode()


def _openai_events(fault: Fault, model: str) -> tuple[list[bytes], list[bytes]]:
    head = {**_openai_head(model), "object": "chat.completion.chunk"}

    def chunk(delta: dict[str, Any]) -> bytes:
        return _sse({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})

    if fault.kind == "malformed":
        return [b'data: {"id": "chatcmpl-broken", "choices": [{"delta": {"content": "Hel\n\n'], [b"data: [DONE]\n\n"]
    if fault.kind == "empty":
        return [_sse({**head, "choices": [], "usage": None}), b"data: [DONE]\n\n"], []
    text = [chunk({"role": "assistant", "content": ""}), *(chunk({"content": p}) for p in pieces(fault.text))]
    return text, [_sse({**head, "choices": [], "usage": _openai_usage(fault)}), b"data: [DONE]\n\n"]


# --------------------------------------------------------------------------- Anthropic


def _anthropic_message(fault: Fault, model: str, content: list[dict[str, Any]], stop: str | None) -> dict[str, Any]:
    return {
        "id": f"msg_fault_{time.monotonic_ns()}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": len(pieces(fault.text))},
    }


def _anthropic_json(fault: Fault, model: str) -> bytes:
    if fault.kind == "empty":
        return json.dumps({"id": "msg_fault", "type": "message", "role": "assistant", "model": model}).encode()
    stop = None if fault.kind == "no_finish" else "end_turn"
    return json.dumps(_anthropic_message(fault, model, [{"type": "text", "text": fault.text}], stop)).encode()


def _anthropic_events(fault: Fault, model: str) -> tuple[list[bytes], list[bytes]]:
    if fault.kind == "malformed":
        return [b'event: message_start\ndata: {"type": "message_start", "message": {"id": \n\n'], []
    start = _sse({"type": "message_start", "message": _anthropic_message(fault, model, [], None)}, "message_start")
    if fault.kind == "empty":
        return [start], []
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    text = [start, _sse(block, "content_block_start")]
    for piece in pieces(fault.text):
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        text.append(_sse(delta, "content_block_delta"))
    return text, [_sse({"type": "content_block_stop", "index": 0}, "content_block_stop")]


# --------------------------------------------------------------------------- SageMaker endpoint contract


def _endpoint_json(fault: Fault, model: str) -> bytes:
    if fault.kind == "empty":
        return b"{}"
    answer: dict[str, Any] = {"text": fault.text, "finish_reason": "stop", "model": model}
    answer["usage"] = {"prompt_tokens": 12, "completion_tokens": len(pieces(fault.text))}
    if fault.kind == "no_finish":
        del answer["finish_reason"]
    return json.dumps(answer).encode()


def _endpoint_lines(fault: Fault) -> tuple[list[bytes], list[bytes]]:
    if fault.kind == "malformed":
        return [b'{"delta": "Hel\n'], []
    if fault.kind == "empty":
        return [], []
    return [json.dumps({"delta": p}).encode() + b"\n" for p in pieces(fault.text)], []


# --------------------------------------------------------------------------- rendering


def fault_response(wire: Wire, fault: Fault, model: str, stream: bool) -> Response:
    """The HTTP response that plays `fault` on `wire` (HTTP 200: the status line looks healthy)."""
    if fault.kind == "wrong_type":
        return Response(HTML_PAGE, media_type="text/html")
    if not stream:
        whole = {"openai": _openai_json, "anthropic": _anthropic_json, "sagemaker": _endpoint_json}[wire](fault, model)
        half = whole[: len(whole) // 2]
        if fault.kind in ("hang", "cut"):
            return StreamingResponse(_body([half], fault, []), media_type="application/json")
        return Response(half if fault.kind == "malformed" else whole, media_type="application/json")
    if wire == "openai":
        prefix, tail = _openai_events(fault, model)
        media_type = "text/event-stream"
    elif wire == "anthropic":
        prefix, tail = _anthropic_events(fault, model)
        media_type = "text/event-stream"
    else:
        prefix, tail = _endpoint_lines(fault)
        media_type = NDJSON
    return StreamingResponse(_body(prefix, fault, tail), media_type=media_type)
