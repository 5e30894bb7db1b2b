"""OpenAI's Responses API (`POST /v1/responses`, `GET`/`DELETE /v1/responses/{id}`,
`GET /v1/responses/{id}/input_items`) over the same chain as chat completions, with a conversation
store partitioned by tenant.

A request becomes a chat completion request (`to_chat`): `instructions` as a system message, then
the conversation `previous_response_id` names (from the tenant's store: another tenant's id is not
found), then the input items. It runs through guard, cache, router, invoke and moderate with the
tenant's routes and accounting; the answer comes back as a Response (`Turn.response`) or as the
Responses streaming events (`Turn.events`), and, unless the request says `store: false` or the
tenant keeps no conversations, is stored (`Turn.store`): the response object, this turn's input
items and the whole conversation so far, PII masked per the tenant's policy.

| Responses API | chat completion |
|---|---|
| `instructions` | a system message first (not carried to the next turn) |
| `input` string, or message items (`input_text`, `output_text`, `input_image`) | messages of the same role |
| `function_call` items | an assistant message's `tool_calls` |
| `function_call_output` items | `tool` messages |
| `tools` `{type: function, name, description, parameters, strict}` | function tools |
| `tool_choice`, `parallel_tool_calls`, `temperature`, `top_p`, `user`, `metadata` | the same |
| `max_output_tokens` | `max_tokens` |
| `text.format` text / json_object / json_schema | `response_format` |
| answer: status `completed`, `incomplete` (`max_output_tokens`, `content_filter`) | `finish_reason` |
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from .config import TenantConfig
from .contracts import (
    MAX_TOOL_CALL_ID,
    TOOL_NAME_PATTERN,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ErrorBody,
    FinishReason,
    GatewayState,
    ToolCall,
)
from .errors import InvalidRequest, NotFound
from .ports import ConversationStore, ConversationTooLarge, StoredResponse

if TYPE_CHECKING:  # the guard package: only where responses are stored
    from .guard.step import ConversationMasker

log = logging.getLogger("llm_gateway.responses")
_DAY_S = 86_400
INCOMPLETE: dict[FinishReason, str] = {"length": "max_output_tokens", "content_filter": "content_filter"}


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class InputText(_Part):
    type: Literal["input_text"]
    text: str


class OutputText(_Part):
    type: Literal["output_text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class InputImage(_Part):
    type: Literal["input_image"]
    image_url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] | None = None


class RefusalPart(_Part):
    type: Literal["refusal"]
    refusal: str


Content = Annotated[InputText | OutputText | InputImage | RefusalPart, Field(discriminator="type")]


class MessageItem(_Part):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Content]
    id: str | None = None
    status: str | None = None


class FunctionCallItem(_Part):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=MAX_TOOL_CALL_ID)
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(_Part):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=MAX_TOOL_CALL_ID)
    output: str | list[InputText]
    id: str | None = None
    status: str | None = None

    def text(self) -> str:
        return self.output if isinstance(self.output, str) else "".join(p.text for p in self.output)


def _item_type(value: Any) -> str:
    """An item's `type` (a message may leave it out); an unknown one is refused by name."""
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "message")
    return kind if isinstance(kind, str) else "message"


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")],
    Discriminator(
        _item_type,
        custom_error_type="invalid_item_type",
        custom_error_message="An input item's type is message, function_call or function_call_output",
    ),
]


def _as_items(value: Any) -> Any:
    return [{"type": "message", "role": "user", "content": value}] if isinstance(value, str) else value


class FunctionTool(_Part):
    type: Literal["function"]
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = Field(default=None, max_length=4096)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionChoice(_Part):
    type: Literal["function"]
    name: str = Field(pattern=TOOL_NAME_PATTERN)


class TextFormat(_Part):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, max_length=64)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextConfig(_Part):
    format: TextFormat | None = None


class ResponsesRequest(_Part):
    """The body of `POST /v1/responses` (the parts the gateway honours; anything else is a 400)."""

    model: str = Field(min_length=1, max_length=256)
    # A string is one user message: made one here, so an invalid list is refused naming its item
    # (`input.0.role`), not as "not a string".
    input: Annotated[
        list[InputItem], Field(min_length=1), BeforeValidator(_as_items, json_schema_input_type=str | list[InputItem])
    ]
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, min_length=1, max_length=256)
    store: bool = True
    stream: bool = False
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    user: str | None = Field(default=None, max_length=256)
    metadata: (
        Annotated[
            dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]], Field(max_length=16)
        ]
        | None
    ) = None
    text: TextConfig | None = None

    def input_items(self) -> list[MessageItem | FunctionCallItem | FunctionCallOutputItem]:
        return list(self.input)


def to_chat(request: ResponsesRequest, prior: list[dict[str, Any]]) -> ChatCompletionRequest:
    """The chat completion request the chain runs: instructions, the stored conversation `prior`,
    then this turn's input (`InvalidRequest` when a part has no counterpart)."""
    messages: list[dict[str, Any]] = (
        [{"role": "system", "content": request.instructions}] if request.instructions else []
    )
    messages += prior
    messages += items_to_messages(request.input_items())
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    optional = {
        "max_tokens": request.max_output_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "user": request.user,
        "parallel_tool_calls": request.parallel_tool_calls,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if request.stream:
        body.update(stream=True, stream_options={"include_usage": True})
    if request.tools:
        body["tools"] = [
            {"type": "function", "function": t.model_dump(exclude={"type"}, exclude_none=True)} for t in request.tools
        ]
    choice = request.tool_choice
    if choice is not None:
        body["tool_choice"] = (
            choice if isinstance(choice, str) else {"type": "function", "function": {"name": choice.name}}
        )
    text_format = request.text.format if request.text else None
    if text_format is not None and text_format.type != "text":
        body["response_format"] = _response_format(text_format)
    return ChatCompletionRequest.model_validate(body)


def _response_format(text_format: TextFormat) -> dict[str, Any]:
    if text_format.type == "json_object":
        return {"type": "json_object"}
    if not text_format.name or text_format.schema_ is None:
        raise InvalidRequest("text.format of type json_schema needs a name and a schema.", param="text.format")
    schema: dict[str, Any] = {"name": text_format.name, "schema": text_format.schema_}
    if text_format.strict is not None:
        schema["strict"] = text_format.strict
    if text_format.description is not None:
        schema["description"] = text_format.description
    return {"type": "json_schema", "json_schema": schema}


def items_to_messages(items: list[MessageItem | FunctionCallItem | FunctionCallOutputItem]) -> list[dict[str, Any]]:
    """Input items as chat messages; consecutive function calls become one assistant message."""
    messages: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, FunctionCallOutputItem):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text()})
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            elif last is not None and last["role"] == "assistant":
                last["tool_calls"] = [call]
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            messages.append({"role": item.role, "content": _content(item)})
    return messages


def _content(item: MessageItem) -> str | list[dict[str, Any]]:
    if isinstance(item.content, str):
        return item.content
    if not any(isinstance(p, InputImage) for p in item.content):
        return "".join(_part_text(p) for p in item.content if not isinstance(p, InputImage))
    if item.role != "user":
        raise InvalidRequest("Only a user message can hold images.", param="input")
    return [
        {"type": "image_url", "image_url": {"url": p.image_url, **({"detail": p.detail} if p.detail else {})}}
        if isinstance(p, InputImage)
        else {"type": "text", "text": _part_text(p)}
        for p in item.content
    ]


def _part_text(part: InputText | OutputText | RefusalPart) -> str:
    return part.refusal if isinstance(part, RefusalPart) else part.text


def messages_to_items(messages: list[ChatMessage], prefix: str) -> list[dict[str, Any]]:
    """Chat messages as Responses items (the stored input items); `prefix` makes their ids."""
    items: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            items.append({"type": "function_call_output", "call_id": message.tool_call_id, "output": message.text()})
        elif message.content is not None or not message.tool_calls:
            kind = "output_text" if message.role == "assistant" else "input_text"
            content = [{"type": kind, "text": message.text()}]
            items.append({"type": "message", "role": message.role, "content": content})
        for call in message.tool_calls or []:
            items.append(_call_item(call, "completed"))
    for n, item in enumerate(items):
        item["id"] = f"{prefix}_{n}"
    return items


def _call_item(call: ToolCall, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{call.id}",
        "call_id": call.id,
        "name": call.function.name,
        "arguments": call.function.arguments,
        "status": status,
    }


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _usage(completion: ChatCompletion) -> dict[str, Any]:
    usage = completion.usage
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.prompt_tokens_details.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


@dataclass
class Turn:
    """One Responses request on its way through the chain: what it continues, and, once the
    chain has answered, the Response it gives (built and stored by `finish`)."""

    request: ResponsesRequest
    tenant: str | None
    prior: list[dict[str, Any]] = field(default_factory=list)
    response: dict[str, Any] | None = None

    def response_id(self, state: GatewayState) -> str:
        return f"resp_{state.request_id}"

    def skeleton(self, state: GatewayState, model: str, store: bool) -> dict[str, Any]:
        """The Response object before its output (`status: in_progress`)."""
        request = self.request
        tool_choice = request.tool_choice if request.tool_choice is not None else "auto"
        text_format = request.text.format if request.text and request.text.format else TextFormat(type="text")
        return {
            "id": self.response_id(state),
            "object": "response",
            "created_at": int(state.received_at),
            "status": "in_progress",
            "error": None,
            "incomplete_details": None,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "model": model,
            "output": [],
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "previous_response_id": request.previous_response_id,
            "store": store,
            "temperature": request.temperature,
            "text": {"format": text_format.model_dump(exclude_none=True, by_alias=True)},
            "tool_choice": tool_choice if isinstance(tool_choice, str) else tool_choice.model_dump(),
            "tools": [t.model_dump(exclude_none=True) for t in request.tools or []],
            "top_p": request.top_p,
            "truncation": "disabled",
            "usage": None,
            "user": request.user,
            "metadata": request.metadata or {},
        }

    def complete(self, state: GatewayState, completion: ChatCompletion, store: bool) -> dict[str, Any]:
        """The finished Response for the chain's answer."""
        choice = completion.choices[0]
        output: list[dict[str, Any]] = []
        if choice.message.content or not choice.message.tool_calls:
            output.append(_message_item(f"msg_{state.request_id}", choice.message.content or "", "completed"))
        output += [_call_item(call, "completed") for call in choice.message.tool_calls or []]
        response = self.skeleton(state, completion.model, store)
        reason = INCOMPLETE.get(choice.finish_reason)
        response.update(
            status="completed" if reason is None else "incomplete",
            incomplete_details=None if reason is None else {"reason": reason},
            output=output,
            usage=_usage(completion),
        )
        return response

    def finish(
        self,
        state: GatewayState,
        completion: ChatCompletion,
        store: ConversationStore | None,
        policy: TenantConfig | None,
    ) -> dict[str, Any]:
        """The Response for the chain's answer, stored when the request and the tenant (`policy`)
        keep it."""
        keep = bool(self.request.store and store and self.tenant and policy and policy.conversations.store)
        response = self.complete(state, completion, keep)
        if keep and store is not None and policy is not None:
            try:
                kept = store.put(self._stored(state, completion, response, policy))
            except ConversationTooLarge as exc:
                log.warning("response not stored: %s", exc, extra={"request_id": state.request_id})
                kept = False
            response["store"] = kept  # False too when the conversation it continues was deleted meanwhile
        self.response = response
        return response

    def _stored(
        self, state: GatewayState, completion: ChatCompletion, response: dict[str, Any], policy: TenantConfig
    ) -> StoredResponse:
        from .guard.step import ConversationMasker  # the guard package: only where responses are stored

        sent = state.request.messages  # instructions, prior turns, this turn's input
        masker = ConversationMasker(sent, policy.guards.pii)
        masked = [masker.message(m) for m in sent]
        answer = masker.message(_kept_answer(completion))
        skipped = 1 if self.request.instructions else 0
        created = state.received_at
        kept = _masked_response(response, answer, masker) | {"instructions": masked[0].text() if skipped else None}
        return StoredResponse(
            id=response["id"],
            tenant=self.tenant or "",
            created_at=created,
            expires_at=created + policy.conversations.retention_days * _DAY_S,
            previous_response_id=self.request.previous_response_id,
            response=kept,
            input_items=messages_to_items(masked[skipped + len(self.prior) :], f"in_{state.request_id}"),
            conversation=[m.model_dump(exclude_none=True) for m in [*masked[skipped:], answer]],
        )

    def events(
        self,
        items: Iterator[ChatCompletionChunk | ErrorBody],
        state: GatewayState,
        model: str,
        finish: Callable[[ChatCompletion], dict[str, Any]],
    ) -> Iterator[bytes]:
        """The chain's chunks as the Responses streaming events; `finish(completion)` builds (and
        stores) the final Response from the text and calls the stream carried."""
        sequence = iter(range(1 << 62))

        def event(name: str, data: dict[str, Any]) -> bytes:
            body = {"type": name, "sequence_number": next(sequence), **data}
            return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"

        skeleton = self.skeleton(state, model, False)
        yield event("response.created", {"response": skeleton})
        yield event("response.in_progress", {"response": skeleton})
        message_id = f"msg_{state.request_id}"
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        open_message = False
        finish_reason: FinishReason = "stop"
        usage: dict[str, Any] | None = None
        for item in items:
            if isinstance(item, ErrorBody):
                error = {"code": item.error.code or item.error.type, "message": item.error.message}
                failed = skeleton | {"status": "failed", "error": error}
                yield event("response.failed", {"response": failed})
                return
            if item.usage is not None:
                usage = item.usage.model_dump(exclude={"cost_usd"})
            for choice in item.choices:
                if choice.delta.content:
                    if not open_message:
                        open_message = True
                        yield event(
                            "response.output_item.added",
                            {"output_index": 0, "item": _message_item(message_id, "", "in_progress")},
                        )
                        part = {"type": "output_text", "text": "", "annotations": []}
                        yield event(
                            "response.content_part.added",
                            {"item_id": message_id, "output_index": 0, "content_index": 0, "part": part},
                        )
                    text.append(choice.delta.content)
                    where = {"item_id": message_id, "output_index": 0, "content_index": 0}
                    yield event("response.output_text.delta", where | {"delta": choice.delta.content, "logprobs": []})
                for delta in choice.delta.tool_calls or []:
                    call = calls.setdefault(delta.index, {"id": delta.id or "", "name": "", "arguments": ""})
                    if delta.function is not None:
                        call["name"] += delta.function.name or ""
                        call["arguments"] += delta.function.arguments or ""
                finish_reason = choice.finish_reason or finish_reason
        full = "".join(text)
        if open_message:
            where = {"item_id": message_id, "output_index": 0, "content_index": 0}
            yield event("response.output_text.done", where | {"text": full, "logprobs": []})
            part = {"type": "output_text", "text": full, "annotations": []}
            yield event("response.content_part.done", where | {"part": part})
            yield event(
                "response.output_item.done", {"output_index": 0, "item": _message_item(message_id, full, "completed")}
            )
        tool_calls = [
            ToolCall.model_validate(
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            )
            for _, c in sorted(calls.items())
        ]
        yield from _call_events(event, tool_calls, 1 if open_message else 0)
        message = {
            "content": full if open_message else None,
            "tool_calls": [c.model_dump() for c in tool_calls] or None,
        }
        completion = ChatCompletion.model_validate(
            {
                "id": state.request_id,
                "created": int(state.received_at),
                "model": model,
                "choices": [{"message": message, "finish_reason": finish_reason}],
                "usage": usage or {},
            }
        )
        response = finish(completion)
        name = "response.completed" if response["status"] == "completed" else "response.incomplete"
        yield event(name, {"response": response})


def _call_events(event: Callable[[str, dict[str, Any]], bytes], calls: list[ToolCall], first: int) -> Iterator[bytes]:
    """A streamed answer's tool calls, each an output item whose arguments come in one delta
    (the output checks read a call whole before it is sent: docs/tools.md)."""
    for index, call in enumerate(calls, start=first):
        added = _call_item(call, "in_progress") | {"arguments": ""}
        yield event("response.output_item.added", {"output_index": index, "item": added})
        where = {"item_id": added["id"], "output_index": index}
        yield event("response.function_call_arguments.delta", where | {"delta": call.function.arguments})
        done = where | {"name": call.function.name, "arguments": call.function.arguments}
        yield event("response.function_call_arguments.done", done)
        yield event("response.output_item.done", {"output_index": index, "item": _call_item(call, "completed")})


WITHHELD = "[The gateway's output checks withheld this answer.]"
NO_ANSWER = "[No answer.]"


def _kept_answer(completion: ChatCompletion) -> ChatMessage:
    """The answer as the conversation keeps it for the next turn: a withheld or empty answer as a
    marker the model can read (an assistant turn with no content is refused by the providers)."""
    choice = completion.choices[0]
    message = choice.message.model_dump(exclude={"refusal"}, exclude_none=True)
    if not (choice.message.content or choice.message.tool_calls):
        message["content"] = WITHHELD if choice.finish_reason == "content_filter" else NO_ANSWER
    return ChatMessage.model_validate(message | {"role": "assistant"})


def _masked_response(response: dict[str, Any], answer: ChatMessage, masker: ConversationMasker) -> dict[str, Any]:
    """The Response as the store keeps it: its output as `answer` (PII masked) reads, and the
    caller's other free text (user, metadata, tools) masked with the same placeholders."""
    output = []
    calls = {c.id: c for c in answer.tool_calls or []}
    for item in response["output"]:
        if item["type"] == "message":
            text = "" if answer.text() in (WITHHELD, NO_ANSWER) else answer.text()
            output.append(item | {"content": [{"type": "output_text", "text": text, "annotations": []}]})
        else:
            call = calls.get(item["call_id"])
            output.append(item | ({"arguments": call.function.arguments} if call else {}))
    return response | {
        "output": output,
        "user": masker.json(response["user"]),
        "metadata": masker.json(response["metadata"]),
        "tools": masker.json(response["tools"]),
    }


def prior_conversation(
    store: ConversationStore | None, tenant: str, response_id: str, now: float
) -> list[dict[str, Any]]:
    """The conversation a `previous_response_id` continues; 404 when the tenant has no such response."""
    found = store.get(tenant, response_id, now) if store is not None else None
    if found is None:
        raise NotFound(f"Previous response with id '{response_id}' not found.", param="previous_response_id")
    return found.conversation


def input_items_page(stored: StoredResponse) -> dict[str, Any]:
    items = stored.input_items
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": False,
    }
