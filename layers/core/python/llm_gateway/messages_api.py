"""Anthropic's Messages API (`POST /v1/messages`) over the same chain as chat completions, so the
`anthropic` SDK works against the gateway unchanged: the request becomes a chat completion request
(`to_chat`), runs through guard, cache, router, invoke and moderate with the tenant's routes and
accounting, and the answer comes back as a Message (`to_message`) or as Messages streaming events
(`stream_events`). Errors keep their status and take Anthropic's shape.

| Messages API | chat completion |
|---|---|
| `system` (a string or text blocks) | a system message first |
| `user` text blocks | a user message (text joined) |
| `user` `tool_result` blocks | `tool` messages (their text), in order, before the turn's text |
| `assistant` text and `tool_use` blocks | an assistant message with `tool_calls` (`input` as JSON) |
| `tools` `{name, description, input_schema}` | function tools `{name, description, parameters}` |
| `tool_choice` auto / any / tool / none | auto / required / the named function / none |
| `disable_parallel_tool_use` | `parallel_tool_calls: false` |
| `max_tokens`, `stop_sequences`, `temperature`, `top_p` | `max_tokens`, `stop`, `temperature`, `top_p` |
| `metadata.user_id` | `user` |
| answer: `end_turn`, `max_tokens`, `tool_use`, `refusal` | `stop`, `length`, `tool_calls`, `content_filter` |

Images and documents are refused (400), as `top_k` is (no chat completion parameter carries it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from .contracts import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ErrorBody,
    FinishReason,
    GatewayState,
)
from .errors import InvalidRequest

STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TextBlock(_Part):
    type: Literal["text"]
    text: str
    cache_control: dict[str, Any] | None = None  # a prompt-caching hint: the gateway places its own


class ToolUseBlock(_Part):
    type: Literal["tool_use"]
    id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=64)
    input: dict[str, Any]
    cache_control: dict[str, Any] | None = None


class ToolResultBlock(_Part):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1, max_length=256)
    content: str | list[TextBlock] = ""
    is_error: bool | None = None
    cache_control: dict[str, Any] | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(b.text for b in self.content)


Block = Annotated[TextBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class Message(_Part):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class Tool(_Part):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    input_schema: dict[str, Any]
    cache_control: dict[str, Any] | None = None


class ToolChoice(_Part):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(_Part):
    user_id: str | None = Field(default=None, max_length=256)


class MessagesRequest(_Part):
    """The body of `POST /v1/messages` (the parts the gateway honours; anything else is a 400)."""

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int = Field(ge=1)
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = Field(default=None, max_length=4)
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stream: bool = False
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None


def to_chat(request: MessagesRequest) -> ChatCompletionRequest:
    """The chat completion request the chain runs for a Messages request (`InvalidRequest` when a
    field of one has no counterpart in the other)."""
    messages: list[dict[str, Any]] = []
    if request.system:
        system = request.system if isinstance(request.system, str) else "".join(b.text for b in request.system)
        messages.append({"role": "system", "content": system})
    for message in request.messages:
        messages += _turn(message)
    body: dict[str, Any] = {"model": request.model, "messages": messages, "max_tokens": request.max_tokens}
    optional = {
        "stop": request.stop_sequences,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "user": request.metadata.user_id if request.metadata else None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if request.stream:
        body.update(stream=True, stream_options={"include_usage": True})
    body.update(_tools(request))
    return ChatCompletionRequest.model_validate(body)


def _turn(message: Message) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    text = "".join(b.text for b in message.content if isinstance(b, TextBlock))
    if message.role == "assistant":
        calls = [
            {"id": b.id, "type": "function", "function": {"name": b.name, "arguments": json.dumps(b.input)}}
            for b in message.content
            if isinstance(b, ToolUseBlock)
        ]
        return [{"role": "assistant", "content": text or None, **({"tool_calls": calls} if calls else {})}]
    if any(isinstance(b, ToolUseBlock) for b in message.content):
        raise InvalidRequest("A user turn cannot hold tool_use blocks.", param="messages")
    results = [
        {"role": "tool", "tool_call_id": b.tool_use_id, "content": b.text()}
        for b in message.content
        if isinstance(b, ToolResultBlock)
    ]
    return results + ([{"role": "user", "content": text}] if text or not results else [])


def _tools(request: MessagesRequest) -> dict[str, Any]:
    if not request.tools:
        if request.tool_choice is not None and request.tool_choice.type != "none":
            raise InvalidRequest("tool_choice needs tools.", param="tool_choice")
        return {}
    tools = [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "parameters": t.input_schema,
                **({"description": t.description} if t.description else {}),
            },
        }
        for t in request.tools
    ]
    out: dict[str, Any] = {"tools": tools}
    choice = request.tool_choice
    if choice is not None:
        if choice.type == "tool":
            if not choice.name:
                raise InvalidRequest("tool_choice of type tool needs a name.", param="tool_choice.name")
            out["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
        if choice.disable_parallel_tool_use:
            out["parallel_tool_calls"] = False
    return out


def to_message(completion: ChatCompletion, state: GatewayState) -> dict[str, Any]:
    """The Messages API answer for the chain's chat completion."""
    choice = completion.choices[0]
    content: list[dict[str, Any]] = []
    if choice.message.content:
        content.append({"type": "text", "text": choice.message.content})
    for call in choice.message.tool_calls or []:
        content.append(
            {"type": "tool_use", "id": call.id, "name": call.function.name, "input": _input(call.function.arguments)}
        )
    usage = completion.usage
    return {
        "id": f"msg_{state.request_id}",
        "type": "message",
        "role": "assistant",
        "model": completion.model,
        "content": content,
        "stop_reason": STOP_REASONS[choice.finish_reason],
        "stop_sequence": None,
        "usage": _usage(usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens),
    }


def _input(arguments: str) -> dict[str, Any]:
    """A tool call's arguments as Anthropic's `input` object ({} for arguments that are not one)."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _usage(prompt: int, completion: int, cached: int) -> dict[str, int]:
    return {"input_tokens": prompt - cached, "output_tokens": completion, "cache_read_input_tokens": cached}


def error_body(error: ErrorBody, status: int) -> bytes:
    """An error in Anthropic's shape, the gateway's code beside its message."""
    detail = error.error
    kind = ERROR_TYPES.get(status, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": detail.message, "code": detail.code}}
    return orjson.dumps(body)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"


def stream_events(items: Iterator[ChatCompletionChunk | ErrorBody], state: GatewayState, model: str) -> Iterator[bytes]:
    """The chain's chunks as Messages streaming events: message_start, a text block's deltas, a
    tool_use block per call (its input as one `input_json_delta`), message_delta with the stop
    reason and usage, message_stop; a failure mid-stream ends with an `error` event."""
    start = {"id": f"msg_{state.request_id}", "type": "message", "role": "assistant", "model": model}
    yield _event(
        "message_start",
        {"message": {**start, "content": [], "stop_reason": None, "stop_sequence": None, "usage": _usage(0, 0, 0)}},
    )
    block = -1  # the open content block's index
    text_open = False
    finish: FinishReason | None = None
    usage = _usage(0, 0, 0)
    for item in items:
        if isinstance(item, ErrorBody):
            yield _event(
                "error", {"error": {"type": "api_error", "message": item.error.message, "code": item.error.code}}
            )
            return
        if item.usage is not None:
            details = item.usage.prompt_tokens_details
            usage = _usage(item.usage.prompt_tokens, item.usage.completion_tokens, details.cached_tokens)
        for choice in item.choices:
            delta = choice.delta
            if delta.content:
                if not text_open:
                    block += 1
                    text_open = True
                    yield _event("content_block_start", {"index": block, "content_block": {"type": "text", "text": ""}})
                yield _event(
                    "content_block_delta", {"index": block, "delta": {"type": "text_delta", "text": delta.content}}
                )
            for call in delta.tool_calls or []:
                if text_open:
                    yield _event("content_block_stop", {"index": block})
                    text_open = False
                block += 1
                name = call.function.name if call.function else ""
                arguments = call.function.arguments if call.function else ""
                tool_use: dict[str, Any] = {"type": "tool_use", "id": call.id, "name": name, "input": {}}
                yield _event("content_block_start", {"index": block, "content_block": tool_use})
                partial = {"type": "input_json_delta", "partial_json": arguments or ""}
                yield _event("content_block_delta", {"index": block, "delta": partial})
                yield _event("content_block_stop", {"index": block})
            finish = choice.finish_reason or finish
    if text_open:
        yield _event("content_block_stop", {"index": block})
    stop = {"stop_reason": STOP_REASONS[finish or "stop"], "stop_sequence": None}
    yield _event("message_delta", {"delta": stop, "usage": usage})
    yield _event("message_stop", {})
