"""Anthropic Messages API through the official `anthropic` SDK.

Mapping: system/developer messages become `system` (with prompt-cache breakpoints on long stable
prefixes, `caching`); `stop` becomes `stop_sequences`;
`temperature`/`top_p` are sent in the body as given;
`response_format: json_object` becomes an instruction in `system`; JSON schemas, images and
temperature above 1 are refused as bad requests rather than silently altered.

Tools: a function definition becomes a tool (`parameters` → `input_schema`); `tool_choice` auto /
required / a named function / none becomes `auto` / `any` / `tool` / `none`, and
`parallel_tool_calls: false` becomes `disable_parallel_tool_use`; an assistant message's
`tool_calls` become `tool_use` blocks (their JSON arguments → `input`), and `tool` messages
`tool_result` blocks of a user turn (consecutive results in one turn). The answer's `tool_use`
blocks come back as `tool_calls` (`input` → JSON `arguments`), streamed as tool-call deltas.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import anthropic

from ..config import ModelConfig
from ..contracts import (
    ChatCompletionRequest,
    ChatMessage,
    FinishReason,
    FunctionCall,
    FunctionCallDelta,
    NamedToolChoice,
    TextPart,
    ToolCall,
    ToolCallDelta,
)
from ..errors import (
    ProviderBadRequest,
    ProviderError,
    ProviderUnavailable,
)
from .base import (
    EVENT_STREAM,
    MALFORMED,
    ProviderReply,
    SdkClients,
    StreamDelta,
    map_sdk_error,
    output_limit,
    require_media_type,
    unexpected_format,
    unfinished,
)
from .batches import BatchItem, BatchResults, BatchState, error_for_status
from .caching import anthropic_history_breakpoint, anthropic_system

_FINISH: dict[str | None, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}
_JSON_INSTRUCTION = "Respond with a single valid JSON object and nothing else."


def map_error(exc: Exception, model_id: str) -> ProviderError:
    """Translate an `anthropic` SDK exception into the gateway's provider errors."""
    return map_sdk_error(anthropic, exc, model_id)


def _reply(message: Any, model_id: str) -> ProviderReply:
    """The answer of a Message. Anything else (a body that was not JSON, no content, no usage, no
    stop reason) is the upstream's failure, not an empty answer."""
    try:
        if not isinstance(message, anthropic.types.Message) or message.stop_reason is None:
            raise unexpected_format(model_id)
        usage = message.usage
        cached = usage.cache_read_input_tokens or 0
        written = usage.cache_creation_input_tokens or 0
        return ProviderReply(
            text="".join(block.text for block in message.content if block.type == "text"),
            tool_calls=[
                ToolCall(id=block.id, function=FunctionCall(name=block.name, arguments=json.dumps(block.input)))
                for block in message.content
                if block.type == "tool_use"
            ],
            finish_reason=_FINISH.get(message.stop_reason, "stop"),
            prompt_tokens=usage.input_tokens + cached + written,
            completion_tokens=usage.output_tokens,
            cached_tokens=cached,
            cache_write_tokens=written,
        )
    except MALFORMED as exc:
        raise unexpected_format(model_id) from exc


def build_params(request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> dict[str, Any]:
    """Map an OpenAI-style request onto Messages API parameters."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        if isinstance(message.content, list) and not all(isinstance(p, TextPart) for p in message.content):
            raise ProviderBadRequest(f"model '{model_id}' accepts text content only", param="messages")
        if message.role in ("system", "developer"):
            system.append(message.text())
        elif message.role == "tool":
            result = {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.text()}
            previous = messages[-1] if messages else None
            if previous is not None and previous["role"] == "user" and isinstance(previous["content"], list):
                previous["content"].append(result)  # the results of one turn's calls travel together
            else:
                messages.append({"role": "user", "content": [result]})
        elif message.role == "assistant" and message.tool_calls:
            messages.append({"role": "assistant", "content": _tool_use_blocks(message, model_id)})
        else:
            messages.append({"role": message.role, "content": message.text()})
    if not messages:
        raise ProviderBadRequest(f"model '{model_id}' needs at least one user message", param="messages")
    if request.response_format is not None and request.response_format.type == "json_schema":
        raise ProviderBadRequest(f"model '{model_id}' does not support json_schema", param="response_format")
    if request.response_format is not None and request.response_format.type == "json_object":
        system.append(_JSON_INSTRUCTION)
    if request.temperature is not None and request.temperature > 1:
        raise ProviderBadRequest(f"model '{model_id}' accepts temperature up to 1", param="temperature")
    params: dict[str, Any] = {
        "model": model.provider_model or model_id,
        "max_tokens": output_limit(request, model),
        "messages": messages,
        "timeout": model.timeout_s,
    }
    if model.prompt_cache:
        if system:
            params["system"] = anthropic_system(system)
        used = sum("cache_control" in b for b in params.get("system", []) if isinstance(b, dict))
        anthropic_history_breakpoint(messages, sum(len(s) for s in system), used)
    elif system:
        params["system"] = "\n\n".join(system)
    # The SDK no longer exposes sampling parameters; they travel in the body for the API to judge.
    sampling = {"temperature": request.temperature, "top_p": request.top_p}
    sampling = {name: value for name, value in sampling.items() if value is not None}
    if sampling:
        params["extra_body"] = sampling
    if request.stop_list():
        params["stop_sequences"] = request.stop_list()
    params.update(_tool_params(request))
    return params


def _tool_use_blocks(message: ChatMessage, model_id: str) -> list[dict[str, Any]]:
    """An assistant turn that called tools: its text, then a `tool_use` block per call."""
    blocks: list[dict[str, Any]] = [{"type": "text", "text": message.text()}] if message.text() else []
    for call in message.tool_calls or []:
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            raise ProviderBadRequest(
                f"model '{model_id}' takes a tool call's arguments as a JSON object (call '{call.id}')",
                param="messages",
            )
        blocks.append({"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments})
    return blocks


def _tool_params(request: ChatCompletionRequest) -> dict[str, Any]:
    """`tools` and `tool_choice` of the Messages API for the request's function definitions."""
    if not request.tools:
        return {}
    tools = []
    for tool in request.tools:
        function = tool.function
        spec: dict[str, Any] = {
            "name": function.name,
            "input_schema": function.parameters or {"type": "object", "properties": {}},
        }
        if function.description:
            spec["description"] = function.description
        tools.append(spec)
    choice = request.tool_choice
    mapped: dict[str, Any]
    if isinstance(choice, NamedToolChoice):
        mapped = {"type": "tool", "name": choice.function.name}
    else:
        mapped = {"type": {"auto": "auto", "required": "any", "none": "none", None: "auto"}[choice]}
    if request.parallel_tool_calls is False and mapped["type"] != "none":
        mapped["disable_parallel_tool_use"] = True
    return {"tools": tools, "tool_choice": mapped}


class AnthropicProvider:
    name = "anthropic"

    def __init__(self) -> None:
        self._clients = SdkClients(
            "ANTHROPIC_API_KEY",
            lambda key, base_url: anthropic.Anthropic(api_key=key, base_url=base_url, max_retries=0),
        )

    def complete(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> ProviderReply:
        params = build_params(request, model_id, model)
        client = self._clients.get(model_id, model)
        try:
            message = client.messages.create(**params)
        except anthropic.AnthropicError as exc:
            raise map_error(exc, model_id) from exc
        except MALFORMED as exc:  # a body that is not JSON
            raise unexpected_format(model_id) from exc
        return _reply(message, model_id)

    # ------------------------------------------------------------------ Message Batches (batches.BatchAPI)

    def submit_batch(self, items: Sequence[BatchItem], model_id: str, model: ModelConfig, label: str) -> str:
        requests = []
        for custom_id, request in items:
            params = build_params(request, model_id, model)
            params.pop("timeout", None)
            params.update(params.pop("extra_body", {}))
            requests.append({"custom_id": custom_id, "params": params})
        try:
            return self._clients.get(model_id, model).messages.batches.create(requests=requests).id  # type: ignore[arg-type]
        except anthropic.AnthropicError as exc:
            raise map_error(exc, model_id) from exc

    def find_batch(self, label: str, model_id: str, model: ModelConfig) -> str | None:
        return None  # Message Batches carry no metadata to find one by

    def batch_state(self, batch_id: str, model_id: str, model: ModelConfig) -> BatchState:
        try:
            batch = self._clients.get(model_id, model).messages.batches.retrieve(batch_id)
        except anthropic.AnthropicError as exc:
            raise map_error(exc, model_id) from exc
        return "ended" if batch.processing_status == "ended" else "running"

    def batch_results(self, batch_id: str, model_id: str, model: ModelConfig) -> BatchResults:
        results = BatchResults({}, {})
        try:
            for item in self._clients.get(model_id, model).messages.batches.results(batch_id):
                outcome = item.result
                if outcome.type == "succeeded":
                    try:
                        results.replies[item.custom_id] = _reply(outcome.message, model_id)
                    except ProviderError as error:
                        results.errors[item.custom_id] = error
                elif outcome.type == "errored":
                    detail = outcome.error.error
                    status = 500 if detail.type in ("api_error", "overloaded_error") else 400
                    results.errors[item.custom_id] = error_for_status(status, detail.message, model_id)
                else:  # canceled or expired before it ran
                    results.errors[item.custom_id] = ProviderUnavailable(
                        f"model '{model_id}': the provider batch {outcome.type} this request"
                    )
        except anthropic.AnthropicError as exc:
            raise map_error(exc, model_id) from exc
        return results

    def stream(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> Iterator[StreamDelta]:
        params = build_params(request, model_id, model)
        client = self._clients.get(model_id, model)
        try:
            events = client.messages.create(stream=True, **params)
        except anthropic.AnthropicError as exc:
            raise map_error(exc, model_id) from exc
        try:
            require_media_type(events.response.headers.get("content-type"), (EVENT_STREAM,), model_id)
        except ProviderError:
            events.close()
            raise
        return self._deltas(events, model_id)

    def _deltas(self, events: anthropic.Stream[Any], model_id: str) -> Iterator[StreamDelta]:
        finish: FinishReason | None = None  # neither a stop reason nor message_stop came (yet)
        prompt = completion = cached = written = 0
        calls: dict[int, int] = {}  # content block index -> tool call index
        try:
            with events:
                for event in events:
                    if event.type == "message_start":
                        usage = event.message.usage
                        cached = usage.cache_read_input_tokens or 0
                        written = usage.cache_creation_input_tokens or 0
                        prompt = usage.input_tokens + cached + written
                    elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                        yield StreamDelta(text=event.delta.text)
                    elif event.type == "content_block_start" and event.content_block.type == "tool_use":
                        block = event.content_block
                        calls[event.index] = len(calls)
                        start = FunctionCallDelta(name=block.name, arguments="")
                        yield StreamDelta(
                            tool_calls=[
                                ToolCallDelta(index=calls[event.index], id=block.id, type="function", function=start)
                            ]
                        )
                    elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                        more = FunctionCallDelta(arguments=event.delta.partial_json)
                        yield StreamDelta(tool_calls=[ToolCallDelta(index=calls[event.index], function=more)])
                    elif event.type == "message_delta":
                        if event.delta.stop_reason is not None:
                            finish = _FINISH.get(event.delta.stop_reason, "stop")
                        completion = event.usage.output_tokens
                    elif event.type == "message_stop":
                        finish = finish or "stop"
        except anthropic.AnthropicError as exc:
            raise map_error(exc, model_id) from exc
        except MALFORMED as exc:  # an event that is not JSON, or not the event its type names
            raise unexpected_format(model_id, streamed=True) from exc
        if finish is None:
            raise unfinished(model_id)
        yield StreamDelta(
            finish_reason=finish,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            cache_write_tokens=written,
        )
