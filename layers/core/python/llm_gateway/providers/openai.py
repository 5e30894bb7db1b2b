"""OpenAI (and OpenAI-compatible servers).

Chat completions go through a lean shared HTTP pool (`upstream_http`: the SDK's request building
and response construction cost ~0.3 ms of CPU per call, its httpx transport ~0.2 ms more); the Batch
API and streaming use the official `openai` SDK.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any, Final

import openai
import pydantic_core
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel

from ..config import ModelConfig
from ..contracts import ChatCompletionRequest, FinishReason, FunctionCall, FunctionCallDelta, ToolCall, ToolCallDelta
from ..errors import ProviderError
from .base import (
    EVENT_STREAM,
    MALFORMED,
    ProviderReply,
    ReplyChoice,
    SdkClients,
    StreamDelta,
    error_body,
    http_status_error,
    map_sdk_error,
    output_limit,
    require_media_type,
    unexpected_format,
    unfinished,
)
from .batches import BatchItem, BatchResults, BatchState, error_for_status
from .caching import openai_prompt_cache_key
from .upstream_http import UpstreamHttp

_FINISH: dict[str | None, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


CHAT_PATH: Final = "/v1/chat/completions"
DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"  # the SDK's, as is `OPENAI_BASE_URL`
BATCH_LABEL = "llm_gateway_batch"  # the metadata key naming a batch's job and model


def map_error(exc: Exception, model_id: str) -> ProviderError:
    """Translate an `openai` SDK exception into the gateway's provider errors."""
    return map_sdk_error(openai, exc, model_id)


# The fields of a chat completion the gateway reads; any other field is ignored, as the SDK does.
class _CachedTokens(BaseModel):
    cached_tokens: int | None = None


class _Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    prompt_tokens_details: _CachedTokens | None = None


class _Function(BaseModel):
    name: str
    arguments: str


class _ToolCall(BaseModel):
    id: str
    function: _Function


class _Message(BaseModel):
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(BaseModel):
    index: int = 0
    message: _Message
    finish_reason: str | None = None


class _Completion(BaseModel):
    choices: list[_Choice]
    usage: _Usage | None = None


class _EmbeddingRow(BaseModel):
    index: int
    embedding: list[float]


class _EmbeddingUsage(BaseModel):
    prompt_tokens: int


class _Embeddings(BaseModel):
    data: list[_EmbeddingRow]
    usage: _EmbeddingUsage


class _Upstream:
    """Where and how to call one (base URL, API key): the URL and headers the SDK would send."""

    def __init__(self, api_key: str, base_url: str | None) -> None:
        base = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self.url = base + ("" if base.endswith("/") else "/") + "chat/completions"
        self.headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        for header, env in (("OpenAI-Organization", "OPENAI_ORG_ID"), ("OpenAI-Project", "OPENAI_PROJECT_ID")):
            if os.environ.get(env):
                self.headers[header] = os.environ[env]


def _reply(result: object, model_id: str) -> ProviderReply:
    """The answer of a chat completion (every choice: several when `n` > 1). Anything else (a
    body that was not JSON, no choices, no message, no finish reason) is the upstream's failure,
    not an empty answer."""
    try:
        if not isinstance(result, ChatCompletion | _Completion) or not result.choices:
            raise unexpected_format(model_id)
        ordered: list[Any] = sorted(result.choices, key=lambda c: c.index)
        first, *more = [_choice(c, model_id) for c in ordered]
        usage = result.usage
        cached = 0
        if usage is not None and usage.prompt_tokens_details is not None:
            cached = usage.prompt_tokens_details.cached_tokens or 0
        return ProviderReply(
            text=first.text,
            tool_calls=first.tool_calls,
            finish_reason=first.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            cached_tokens=cached,
            more=more,
        )
    except MALFORMED as exc:
        raise unexpected_format(model_id) from exc


def _choice(choice: Any, model_id: str) -> ReplyChoice:
    if choice.finish_reason is None or choice.message is None:
        raise unexpected_format(model_id)
    return ReplyChoice(
        text=choice.message.content or "",
        tool_calls=[_tool_call(c, model_id) for c in choice.message.tool_calls or []],
        finish_reason=_FINISH.get(choice.finish_reason, "stop"),
    )


class OpenAIProvider:
    name = "openai"

    def __init__(self) -> None:
        self._clients = SdkClients(
            "OPENAI_API_KEY", lambda key, base_url: openai.OpenAI(api_key=key, base_url=base_url, max_retries=0)
        )
        self._upstreams = SdkClients("OPENAI_API_KEY", _Upstream)
        self._http = UpstreamHttp()  # no retries: the gateway's invoke step retries

    def _params(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> dict[str, Any]:
        params = request.generation_params()
        params.pop("max_tokens", None)
        params.pop("max_completion_tokens", None)
        limit_field = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        params[limit_field] = output_limit(request, model)
        params["model"] = model.provider_model or model_id
        params["messages"] = [m.model_dump(exclude_none=True) for m in request.messages]
        params.pop("context", None)  # the gateway's own field: it reaches the model as a system message
        if model.prompt_cache:
            key = openai_prompt_cache_key(request, model_id)
            if key is not None:
                params["prompt_cache_key"] = key
        return params

    def complete(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> ProviderReply:
        upstream = self._upstreams.get(model_id, model)
        payload = pydantic_core.to_json(self._params(request, model_id, model))
        response = self._http.post(upstream.url, payload, upstream.headers, model.timeout_s, model_id)
        if not 200 <= response.status < 300:
            retry_after = response.headers.get("retry-after")
            text = response.body.decode("utf-8", "replace")
            raise http_status_error(response.status, model_id, retry_after, error_body(text))
        try:
            result = _Completion.model_validate_json(response.body)
        except MALFORMED as exc:  # not JSON, or not a chat completion
            raise unexpected_format(model_id) from exc
        return _reply(result, model_id)

    def embed(
        self, texts: list[str], model_id: str, model: ModelConfig, dimensions: int | None
    ) -> tuple[list[list[float]], int]:
        """The embedding of each text by an OpenAI embedding model, and the input tokens it counted."""
        upstream = self._upstreams.get(model_id, model)
        body: dict[str, Any] = {"model": model.provider_model or model_id, "input": texts, "encoding_format": "float"}
        if dimensions is not None:
            body["dimensions"] = dimensions
        url = upstream.url.removesuffix("chat/completions") + "embeddings"
        response = self._http.post(url, pydantic_core.to_json(body), upstream.headers, model.timeout_s, model_id)
        if not 200 <= response.status < 300:
            text = response.body.decode("utf-8", "replace")
            raise http_status_error(response.status, model_id, response.headers.get("retry-after"), error_body(text))
        try:
            result = _Embeddings.model_validate_json(response.body)
            rows = sorted(result.data, key=lambda row: row.index)
            if [row.index for row in rows] != list(range(len(texts))):
                raise unexpected_format(model_id, detail=" (not one embedding per input)")
        except MALFORMED as exc:
            raise unexpected_format(model_id) from exc
        return [row.embedding for row in rows], result.usage.prompt_tokens

    # ------------------------------------------------------------------ Batch API (batches.BatchAPI)

    def submit_batch(self, items: Sequence[BatchItem], model_id: str, model: ModelConfig, label: str) -> str:
        client = self._clients.get(model_id, model)
        lines = [
            json.dumps({"custom_id": cid, "method": "POST", "url": CHAT_PATH, "body": self._params(r, model_id, model)})
            for cid, r in items
        ]
        try:
            upload = client.files.create(file=("batch.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch")
            batch = client.batches.create(
                input_file_id=upload.id, endpoint=CHAT_PATH, completion_window="24h", metadata={BATCH_LABEL: label}
            )
        except openai.OpenAIError as exc:
            raise map_error(exc, model_id) from exc
        return batch.id

    def find_batch(self, label: str, model_id: str, model: ModelConfig) -> str | None:
        client = self._clients.get(model_id, model)
        try:
            recent = client.batches.list(limit=100).data
        except openai.OpenAIError as exc:
            raise map_error(exc, model_id) from exc
        for batch in recent:
            if (batch.metadata or {}).get(BATCH_LABEL) == label and batch.status not in ("failed", "cancelled"):
                return batch.id
        return None

    def batch_state(self, batch_id: str, model_id: str, model: ModelConfig) -> BatchState:
        try:
            status = self._clients.get(model_id, model).batches.retrieve(batch_id).status
        except openai.OpenAIError as exc:
            raise map_error(exc, model_id) from exc
        if status in ("completed", "expired", "cancelled"):  # expired and cancelled keep what was answered
            return "ended"
        return "failed" if status == "failed" else "running"

    def batch_results(self, batch_id: str, model_id: str, model: ModelConfig) -> BatchResults:
        client = self._clients.get(model_id, model)
        results = BatchResults({}, {})
        try:
            batch = client.batches.retrieve(batch_id)
            files = [f for f in (batch.output_file_id, batch.error_file_id) if f]
            contents = [client.files.content(f).text for f in files]
        except openai.OpenAIError as exc:
            raise map_error(exc, model_id) from exc
        for text in contents:
            for raw in text.splitlines():
                if not raw.strip():
                    continue
                record = json.loads(raw)
                response = record.get("response") or {}
                status = int(response.get("status_code") or 500)
                body = response.get("body") or {}
                if status == 200:
                    try:
                        results.replies[record["custom_id"]] = _reply(ChatCompletion.model_validate(body), model_id)
                    except (ProviderError, *MALFORMED):
                        results.errors[record["custom_id"]] = unexpected_format(model_id)
                else:
                    message = ((body.get("error") or record.get("error") or {}).get("message")) or f"HTTP {status}"
                    results.errors[record["custom_id"]] = error_for_status(status, str(message), model_id)
        return results

    def stream(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> Iterator[StreamDelta]:
        client = self._clients.get(model_id, model)
        params = self._params(request, model_id, model)
        params["stream"] = True
        params["stream_options"] = {"include_usage": True}
        try:
            chunks = client.post(
                "/chat/completions",
                body=params,
                cast_to=ChatCompletionChunk,
                options={"timeout": model.timeout_s},
                stream=True,
                stream_cls=openai.Stream[ChatCompletionChunk],
            )
        except openai.OpenAIError as exc:
            raise map_error(exc, model_id) from exc
        try:
            require_media_type(chunks.response.headers.get("content-type"), (EVENT_STREAM,), model_id)
        except ProviderError:
            chunks.close()
            raise
        return self._deltas(chunks, model_id)

    def _deltas(self, chunks: openai.Stream[ChatCompletionChunk], model_id: str) -> Iterator[StreamDelta]:
        finish: FinishReason | None = None  # no choice carried a finish reason (yet)
        prompt: int | None = None  # None: no usage chunk (a server that ignores stream_options),
        completion: int | None = None  # and the gateway estimates rather than bills nothing
        cached = 0
        try:
            with chunks:
                for chunk in chunks:
                    for choice in chunk.choices:
                        if choice.delta.content:
                            yield StreamDelta(text=choice.delta.content)
                        if choice.delta.tool_calls:
                            yield StreamDelta(tool_calls=[_call_delta(c) for c in choice.delta.tool_calls])
                        if choice.finish_reason:
                            finish = _FINISH.get(choice.finish_reason, "stop")
                    if chunk.usage is not None:
                        prompt, completion = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                        details = chunk.usage.prompt_tokens_details
                        cached = (details.cached_tokens or 0) if details else 0
        except openai.OpenAIError as exc:
            raise map_error(exc, model_id) from exc
        except MALFORMED as exc:  # an event that is not JSON, or not a chunk
            raise unexpected_format(model_id, streamed=True) from exc
        if finish is None:
            raise unfinished(model_id)
        yield StreamDelta(
            finish_reason=finish, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached
        )


def _tool_call(call: Any, model_id: str) -> ToolCall:
    """A function call of the answer; another kind of call (a custom tool) was never offered."""
    function = getattr(call, "function", None)
    if function is None:
        raise unexpected_format(model_id, detail=" (a tool call that is not a function call)")
    return ToolCall(id=call.id, function=FunctionCall(name=function.name, arguments=function.arguments))


def _call_delta(piece: Any) -> ToolCallDelta:
    """A streamed tool-call piece of the SDK's chunk, as the gateway's chunk carries it."""
    function = piece.function
    return ToolCallDelta(
        index=piece.index,
        id=piece.id,
        type="function" if piece.id else None,
        function=None if function is None else FunctionCallDelta(name=function.name, arguments=function.arguments),
    )
