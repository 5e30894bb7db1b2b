"""What every provider implements, and the registry that finds one by name."""

from __future__ import annotations

import email.utils
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from ..config import ModelConfig
from ..context_window import upstream_context_error
from ..contracts import ChatCompletionRequest, FinishReason, ToolCall, ToolCallDelta
from ..errors import ProviderBadRequest, ProviderError, ProviderThrottled, ProviderTimeout, ProviderUnavailable


class ReplyChoice(BaseModel):
    """One choice of an answer: its text, why it ended, the calls it asks for."""

    model_config = ConfigDict(extra="forbid")

    text: str
    finish_reason: FinishReason
    tool_calls: list[ToolCall] = []


class ProviderReply(BaseModel):
    """A provider's answer, normalised; cost is added by the invoke step. The first choice's
    fields are the reply's own; `more` holds the others (a request's `n` > 1 that the provider
    answered in one call); the usage covers them all."""

    model_config = ConfigDict(extra="forbid")

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0  # input tokens written to the provider's prompt cache (in prompt_tokens)
    tool_calls: list[ToolCall] = []  # the calls the model asks for (finish_reason "tool_calls")
    more: list[ReplyChoice] = []

    def choices(self) -> list[ReplyChoice]:
        first = ReplyChoice(text=self.text, finish_reason=self.finish_reason, tool_calls=self.tool_calls)
        return [first, *self.more]

    def plus_usage(self, other: ProviderReply) -> ProviderReply:
        """This reply, its usage grown by `other`'s (another call made for the same answer)."""
        return self.model_copy(
            update={
                "prompt_tokens": self.prompt_tokens + other.prompt_tokens,
                "completion_tokens": self.completion_tokens + other.completion_tokens,
                "cached_tokens": self.cached_tokens + other.cached_tokens,
                "cache_write_tokens": self.cache_write_tokens + other.cache_write_tokens,
            }
        )


class StreamDelta(BaseModel):
    """One piece of a streamed answer; the last one carries the finish reason and usage."""

    model_config = ConfigDict(extra="forbid")

    text: str = ""
    tool_calls: list[ToolCallDelta] = []  # pieces of tool calls, by the call's index
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class Provider(Protocol):
    """A model provider. Raises `ProviderThrottled`, `ProviderUnavailable` (incl. `ProviderTimeout`)
    or `ProviderBadRequest`; never a provider SDK's own exception. An answer the provider's API
    does not promise (not JSON, the wrong shape, no choices, no finish reason; a stream of another
    content type, cut, or ended without its finish) is `ProviderUnavailable` too: another try or
    another model may answer properly."""

    name: str

    def complete(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> ProviderReply:
        """Answer a chat request with one completion."""
        ...

    def stream(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> Iterator[StreamDelta]:
        """Answer a chat request as a stream; errors before the first delta are raised eagerly.
        Text deltas come first; the last delta carries the finish reason and usage. A stream that
        ends without one raises `ProviderUnavailable` instead."""
        ...


# What reading an answer of the wrong shape raises: json.JSONDecodeError and pydantic's
# ValidationError are ValueErrors; SDK models built without validation raise AttributeError.
MALFORMED: Final = (ValueError, TypeError, AttributeError, KeyError, IndexError)
EVENT_STREAM: Final = "text/event-stream"


def unexpected_format(model_id: str, streamed: bool = False, detail: str = "") -> ProviderUnavailable:
    """The upstream answered (HTTP 200) with something its API does not promise."""
    verb = "streamed" if streamed else "answered in"
    return ProviderUnavailable(f"model '{model_id}' {verb} an unexpected format{detail}")


def unfinished(model_id: str) -> ProviderUnavailable:
    """The upstream ended its stream without the event that says the answer is complete."""
    return ProviderUnavailable(f"model '{model_id}' closed the stream before finishing")


def require_media_type(content_type: str | None, accepted: tuple[str, ...], model_id: str) -> None:
    """Refuse a streamed answer whose content type is not one of `accepted` (an HTML error page
    from a proxy, a JSON body where events were asked for)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in accepted:
        detail = f" ({media[:60] or 'no content type'} instead of {accepted[0]})"
        raise unexpected_format(model_id, streamed=True, detail=detail)


def output_limit(request: ChatCompletionRequest, model: ModelConfig) -> int:
    """The max tokens to ask the provider for: the caller's cap, else the model's default, within its maximum."""
    return min(request.output_limit() or model.default_max_tokens, model.max_output_tokens)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def map_sdk_error(sdk: Any, exc: Exception, model_id: str) -> ProviderError:
    """Translate an exception of the `openai` or `anthropic` SDK (both share these exception
    classes) into the gateway's provider errors: timeouts and 5xx/408/409/529 are worth another try,
    429 is throttling (with its Retry-After), any other 4xx is the request's fault."""
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderTimeout(f"model '{model_id}' timed out")
    if isinstance(exc, sdk.APIConnectionError):
        return transport_error(exc.__cause__ or exc, model_id)
    if isinstance(exc, sdk.APIStatusError):  # RateLimitError (429) included
        return http_status_error(exc.status_code, model_id, exc.response.headers.get("retry-after"), exc.body)
    return ProviderUnavailable(f"model '{model_id}' failed: {type(exc).__name__}")


def http_status_error(status: int, model_id: str, retry_after: str | None, body: object) -> ProviderError:
    """An OpenAI-style upstream's HTTP error status as the gateway's provider error (see
    `map_sdk_error`). `body` is what `error_body` makes of the response: the SDKs' `exc.body`."""
    if status == 429:
        return ProviderThrottled(
            f"model '{model_id}' is rate limited upstream", retry_after_s=parse_retry_after(retry_after)
        )
    if status >= 500 or status in (408, 409):
        return ProviderUnavailable(f"model '{model_id}' failed upstream (HTTP {status})")
    message = _upstream_message(body, status)
    return upstream_context_error(body) or ProviderBadRequest(f"model '{model_id}' rejected the request: {message}")


def error_body(text: str) -> object:
    """An error response's body as the `openai`/`anthropic` SDKs hand it on: its JSON's `error`
    member (else the whole JSON), or the stripped text when it is not JSON."""
    text = text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text
    return body.get("error", body) if isinstance(body, dict) else body


def transport_error(exc: BaseException, model_id: str) -> ProviderError:
    """A transport failure: a timeout, a connection dropped mid-answer, or no connection. Told by
    class name, which httpx and the SDKs' own copy of it (httpx2) share, as does urllib3 for its
    timeouts (`TimeoutError`) and cut or refused exchanges (`ProtocolError`)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "NewConnectionError" in names:  # urllib3's refused connection, a `TimeoutError` by descent
        return ProviderUnavailable(f"model '{model_id}' is unreachable")
    if names & {"TimeoutException", "TimeoutError"}:
        return ProviderTimeout(f"model '{model_id}' timed out")
    if names & {"RemoteProtocolError", "ReadError", "ProtocolError"}:
        return ProviderUnavailable(f"model '{model_id}' closed the connection before finishing")
    return ProviderUnavailable(f"model '{model_id}' is unreachable")


def _upstream_message(body: object, status: int) -> str:
    """The provider's own explanation from its error body (`{"error": {"message"}}` or `{"message"}`)."""
    if isinstance(body, dict):
        nested = body.get("error")
        message = nested.get("message") if isinstance(nested, dict) else body.get("message")
        if isinstance(message, str):
            return message[:500]
    return f"HTTP {status}"


C = TypeVar("C")


class SdkClients(Generic[C]):
    """SDK clients, one per (base URL, API key), built on first use and shared by threads.

    The key is read from the model's `api_key_env` (else `default_key_env`) at call time, so a
    rotated key takes effect without a restart; a missing key makes the model unavailable, which
    lets the route fall back.
    """

    def __init__(self, default_key_env: str, build: Callable[[str, str | None], C]) -> None:
        self._default_key_env = default_key_env
        self._build = build
        self._clients: dict[tuple[str | None, str], C] = {}
        self._lock = threading.Lock()

    def get(self, model_id: str, model: ModelConfig) -> C:
        key_env = model.api_key_env or self._default_key_env
        api_key = os.environ.get(key_env)
        if not api_key:
            raise ProviderUnavailable(f"model '{model_id}' has no API key (set {key_env})")
        with self._lock:
            client = self._clients.get((model.base_url, api_key))
            if client is None:
                client = self._clients[(model.base_url, api_key)] = self._build(api_key, model.base_url)
        return client


class ProviderRegistry:
    """Providers by name, built lazily so a Lambda imports only the SDK it uses."""

    def __init__(self, factories: dict[str, Callable[[], Provider]] | None = None) -> None:
        self._factories = dict(factories or {})
        self._instances: dict[str, Provider] = {}

    def register(self, name: str, factory: Callable[[], Provider]) -> None:
        self._factories[name] = factory
        self._instances.pop(name, None)

    def get(self, name: str) -> Provider:
        provider = self._instances.get(name)
        if provider is None:
            if name not in self._factories:
                raise KeyError(f"no provider named '{name}'")
            provider = self._instances[name] = self._factories[name]()
        return provider


def default_registry() -> ProviderRegistry:
    """The built-in providers, each imported on first use."""

    def openai() -> Provider:
        from .openai import OpenAIProvider

        return OpenAIProvider()

    def anthropic() -> Provider:
        from .anthropic import AnthropicProvider

        return AnthropicProvider()

    def sagemaker() -> Provider:
        from .sagemaker import SageMakerProvider

        return SageMakerProvider()

    def echo() -> Provider:
        from .echo import EchoProvider

        return EchoProvider()

    return ProviderRegistry({"openai": openai, "anthropic": anthropic, "sagemaker": sagemaker, "echo": echo})
