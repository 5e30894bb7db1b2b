"""Self-hosted models behind the SageMaker endpoint contract (`endpoint_contract`).

`endpoint` is either a SageMaker endpoint name, called with boto3's `sagemaker-runtime`
(`InvokeEndpoint` / `InvokeEndpointWithResponseStream`), or an `http(s)://` URL of a server speaking
the same container contract (`POST /invocations`), which is how the embedded default reaches its
local model. Both transports carry identical bytes.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import httpx
from pydantic import ValidationError

from ..config import ModelConfig
from ..context_window import upstream_context_error
from ..contracts import ChatCompletionRequest, TextPart
from ..endpoint_contract import NDJSON, EndpointMessage, InvocationRequest, InvocationResponse, StreamEvent
from ..errors import (
    ProviderBadRequest,
    ProviderError,
    ProviderThrottled,
    ProviderTimeout,
    ProviderUnavailable,
)
from .base import (
    ProviderReply,
    StreamDelta,
    output_limit,
    parse_retry_after,
    require_media_type,
    transport_error,
    unexpected_format,
    unfinished,
)

# Content types a streamed answer may come in (the contract says NDJSON; JSON Lines by other names).
STREAM_TYPES = (NDJSON, "application/jsonlines", "application/json")

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def build_invocation(request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> InvocationRequest:
    """Map an OpenAI-style request onto the endpoint's request."""
    messages = []
    for message in request.messages:
        role = _ROLES.get(message.role)
        if role is None:
            raise ProviderBadRequest(f"model '{model_id}' does not accept '{message.role}' messages")
        if isinstance(message.content, list) and not all(isinstance(p, TextPart) for p in message.content):
            raise ProviderBadRequest(f"model '{model_id}' accepts text content only", param="messages")
        messages.append(EndpointMessage(role=role, content=message.text()))
    if request.response_format is not None and request.response_format.type == "json_schema":
        raise ProviderBadRequest(f"model '{model_id}' does not support json_schema", param="response_format")
    return InvocationRequest(
        messages=messages,
        max_tokens=output_limit(request, model),
        # Unset sampling parameters take the endpoint's defaults (greedy decoding).
        **({"temperature": request.temperature} if request.temperature is not None else {}),
        **({"top_p": request.top_p} if request.top_p is not None else {}),
        stop=request.stop_list(),
        seed=request.seed,
        json_mode=request.response_format is not None and request.response_format.type == "json_object",
        stream=request.stream,
        cache_salt=request.cache_scope,
    )


def status_error(status: int, model_id: str, retry_after: str | None = None, body: bytes | str = b"") -> ProviderError:
    if status == 429:
        return ProviderThrottled(f"model '{model_id}' is busy", retry_after_s=parse_retry_after(retry_after))
    if status >= 500 or status == 408:
        return ProviderUnavailable(f"model '{model_id}' failed (HTTP {status})")
    return upstream_context_error(body) or ProviderBadRequest(
        f"model '{model_id}' rejected the request (HTTP {status})"
    )


def _reply(body: bytes, model_id: str) -> ProviderReply:
    try:
        answer = InvocationResponse.model_validate_json(body)
    except ValidationError as exc:
        raise unexpected_format(model_id) from exc
    return ProviderReply(
        text=answer.text,
        finish_reason=answer.finish_reason,
        prompt_tokens=answer.usage.prompt_tokens,
        completion_tokens=answer.usage.completion_tokens,
    )


def _delta(line: bytes, model_id: str) -> StreamDelta:
    try:
        event = StreamEvent.model_validate_json(line)
    except ValidationError as exc:
        raise unexpected_format(model_id, streamed=True) from exc
    usage = event.usage
    return StreamDelta(
        text=event.delta,
        finish_reason=event.finish_reason,
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
    )


class SageMakerProvider:
    name = "sagemaker"

    def __init__(self) -> None:
        self._http = httpx.Client(limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
        self._runtimes: dict[str | None, Any] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _is_url(endpoint: str) -> bool:
        return endpoint.startswith(("http://", "https://"))

    def complete(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> ProviderReply:
        body = build_invocation(request, model_id, model).model_copy(update={"stream": False})
        payload = body.model_dump_json().encode()
        endpoint = model.endpoint or ""
        if self._is_url(endpoint):
            return _reply(self._post(endpoint, payload, model_id, model.timeout_s), model_id)
        return _reply(self._invoke_boto3(endpoint, payload, model_id, model), model_id)

    def stream(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> Iterator[StreamDelta]:
        body = build_invocation(request, model_id, model).model_copy(update={"stream": True})
        payload = body.model_dump_json().encode()
        endpoint = model.endpoint or ""
        if self._is_url(endpoint):
            lines = self._post_stream(endpoint, payload, model_id, model.timeout_s)
        else:
            lines = self._invoke_stream_boto3(endpoint, payload, model_id, model)
        first = next(lines, None)  # surface connection/status errors before the caller commits
        if first is None:
            raise ProviderUnavailable(f"model '{model_id}' closed the stream without an answer")
        return self._deltas(first, lines, model_id)

    @staticmethod
    def _deltas(first: bytes, rest: Iterator[bytes], model_id: str) -> Iterator[StreamDelta]:
        """Events up to the one carrying the finish reason; a stream that ends before it failed."""
        try:
            for line in itertools.chain((first,), rest):
                delta = _delta(line, model_id)
                yield delta
                if delta.finish_reason is not None:
                    return
        finally:
            close = getattr(rest, "close", None)
            if close is not None:
                close()  # stop reading (and the endpoint generating) past the end or on a failure
        raise unfinished(model_id)

    # HTTP transport (container contract on a URL)
    def _post(self, url: str, payload: bytes, model_id: str, timeout_s: float) -> bytes:
        try:
            response = self._http.post(
                url.rstrip("/") + "/invocations",
                content=payload,
                headers={"content-type": "application/json"},
                timeout=timeout_s,
            )
        except httpx.TransportError as exc:
            raise transport_error(exc, model_id) from exc
        if response.status_code != 200:
            raise status_error(response.status_code, model_id, response.headers.get("retry-after"), response.content)
        return response.content

    def _post_stream(self, url: str, payload: bytes, model_id: str, timeout_s: float) -> Iterator[bytes]:
        try:
            with self._http.stream(
                "POST",
                url.rstrip("/") + "/invocations",
                content=payload,
                headers={"content-type": "application/json", "accept": NDJSON},
                timeout=timeout_s,
            ) as response:
                if response.status_code != 200:
                    raise status_error(
                        response.status_code, model_id, response.headers.get("retry-after"), response.read()
                    )
                require_media_type(response.headers.get("content-type"), STREAM_TYPES, model_id)
                for line in response.iter_lines():
                    if line.strip():
                        yield line.encode()
        except httpx.TransportError as exc:
            raise transport_error(exc, model_id) from exc

    # boto3 transport (a real SageMaker endpoint)
    def _runtime(self, model: ModelConfig) -> Any:
        with self._lock:
            runtime = self._runtimes.get(model.region)
            if runtime is None:
                import boto3
                from botocore.config import Config

                config = Config(read_timeout=model.timeout_s, retries={"max_attempts": 1, "mode": "standard"})
                runtime = boto3.client("sagemaker-runtime", region_name=model.region, config=config)
                self._runtimes[model.region] = runtime
        return runtime

    def _invoke_boto3(self, endpoint: str, payload: bytes, model_id: str, model: ModelConfig) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            result = self._runtime(model).invoke_endpoint(
                EndpointName=endpoint, ContentType="application/json", Accept="application/json", Body=payload
            )
            body: bytes = result["Body"].read()
        except ClientError as exc:
            raise _client_error(exc, model_id) from exc
        except BotoCoreError as exc:
            raise _botocore_error(exc, model_id) from exc
        return body

    def _invoke_stream_boto3(self, endpoint: str, payload: bytes, model_id: str, model: ModelConfig) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            result = self._runtime(model).invoke_endpoint_with_response_stream(
                EndpointName=endpoint, ContentType="application/json", Accept=NDJSON, Body=payload
            )
            if result.get("ContentType"):
                require_media_type(result["ContentType"], STREAM_TYPES, model_id)
            buffer = b""
            for event in result["Body"]:
                buffer += event.get("PayloadPart", {}).get("Bytes", b"")
                *lines, buffer = buffer.split(b"\n")
                yield from (line for line in lines if line.strip())
            if buffer.strip():
                yield buffer
        except ClientError as exc:
            raise _client_error(exc, model_id) from exc
        except BotoCoreError as exc:
            raise _botocore_error(exc, model_id) from exc


def _client_error(exc: Any, model_id: str) -> ProviderError:
    error = exc.response.get("Error", {})
    code = error.get("Code", "")
    if code == "ModelError":
        body = exc.response.get("OriginalMessage", "")
        return status_error(int(exc.response.get("OriginalStatusCode", 500)), model_id, None, body)
    if code in ("ThrottlingException", "ModelNotReadyException"):
        return ProviderThrottled(f"model '{model_id}' is busy")
    if code in ("ValidationError", "ValidationException"):
        return ProviderBadRequest(f"model '{model_id}' rejected the request")
    return ProviderUnavailable(f"model '{model_id}' failed ({code or 'unknown error'})")


def _botocore_error(exc: Exception, model_id: str) -> ProviderError:
    if "Timeout" in type(exc).__name__:
        return ProviderTimeout(f"model '{model_id}' timed out")
    return ProviderUnavailable(f"model '{model_id}' is unreachable")
