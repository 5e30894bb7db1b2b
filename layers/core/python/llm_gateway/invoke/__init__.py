"""Provider call with the retry/fallback policy of `pipeline.INVOKE_POLICY`, usage and cost."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from ..contracts import (
    AssistantMessage,
    Attempt,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    GatewayState,
    InvokeResult,
    Usage,
)
from ..errors import (
    AllModelsFailed,
    OutputFormatInvalid,
    ProviderBadRequest,
    ProviderError,
    ProviderThrottled,
    ProviderTimeout,
)
from ..output_format import format_problem, repair_request
from ..pipeline import INVOKE_POLICY, RetryPolicy
from ..providers.base import Provider, ProviderReply, StreamDelta

if TYPE_CHECKING:
    from ..config import Price
    from ..deps import Deps

T = TypeVar("T")


def _outcome(error: ProviderError) -> str:
    if isinstance(error, ProviderThrottled):
        return "throttled"
    if isinstance(error, ProviderTimeout):
        return "timeout"
    if isinstance(error, ProviderBadRequest):
        return "bad_request"
    return "unavailable"


def backoff_delay(policy: RetryPolicy, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
    """Full-jitter exponential backoff, at least the provider's Retry-After, capped at max_delay_s."""
    ceiling = min(policy.max_delay_s, policy.base_delay_s * (2**attempt))
    delay = rng.uniform(0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(delay, policy.max_delay_s)


_rng = random.Random()  # noqa: S311 - jitter, not security


def call_with_fallback(
    state: GatewayState,
    deps: Deps,
    call: Callable[[Provider, str], T],
    policy: RetryPolicy = INVOKE_POLICY,
) -> tuple[str, Provider, T, list[Attempt]]:
    """Try each candidate model in order, retrying retryable errors with backoff.

    A bad request is raised at once (another model would reject it too). When every candidate
    fails, `AllModelsFailed` names what happened to each.
    """
    if state.router is None:
        raise RuntimeError("invoke runs after router")
    attempts: list[Attempt] = []
    started = time.monotonic()
    last_error: ProviderError | None = None
    for model_id in state.router.candidates:
        provider = deps.providers.get(deps.config.models[model_id].provider)
        for attempt in range(policy.max_attempts):
            t0 = time.monotonic()
            try:
                result = call(provider, model_id)
            except ProviderError as error:
                attempts.append(Attempt(model=model_id, outcome=_outcome(error), latency_ms=_ms_since(t0)))
                if isinstance(error, ProviderBadRequest) or _named_in(error, policy.never_retry):
                    raise
                last_error = error
                if attempt + 1 >= policy.max_attempts or not _named_in(error, policy.retry_on):
                    break
                delay = backoff_delay(policy, attempt, error.retry_after_s, _rng)
                if time.monotonic() - started + delay > policy.deadline_s:
                    break
                deps.sleep(delay)
                continue
            attempts.append(Attempt(model=model_id, outcome="ok", latency_ms=_ms_since(t0)))
            return model_id, provider, result, attempts
    tried = ", ".join(f"{a.model}: {a.outcome}" for a in attempts)
    retry_after = last_error.retry_after_s if isinstance(last_error, ProviderThrottled) else None
    raise AllModelsFailed(f"No model could answer ({tried}).", retry_after_s=retry_after)


def _named_in(error: ProviderError, names: tuple[str, ...]) -> bool:
    """True when the error's class, or one of its bases, is named in `names`."""
    return any(cls.__name__ in names for cls in type(error).__mro__)


def _ms_since(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000, 3)


def build_completion(
    state: GatewayState, deps: Deps, model_id: str, reply: ProviderReply, price: Price | None = None
) -> ChatCompletion:
    """The OpenAI-shaped answer with usage and cost from the model's price table (or `price`:
    a provider batch's)."""
    usage = Usage.of(reply.prompt_tokens, reply.completion_tokens, reply.cached_tokens)
    price = price or deps.config.models[model_id].price
    usage.cost_usd = price.cost(
        reply.prompt_tokens, reply.completion_tokens, reply.cached_tokens, reply.cache_write_tokens
    )
    return ChatCompletion(
        id=f"chatcmpl-{state.request_id}",
        created=int(state.received_at),
        model=model_id,
        choices=[Choice(message=AssistantMessage(content=reply.text), finish_reason=reply.finish_reason)],
        usage=usage,
    )


def invoke_step(state: GatewayState, deps: Deps) -> InvokeResult:
    """Call the chosen model (with retries and fallbacks) and price the answer. An answer that
    does not satisfy the request's response_format gets one repair call to the same model."""
    t0 = time.monotonic()
    request = state.model_request()
    model_id, provider, reply, attempts = call_with_fallback(
        state, deps, lambda p, m: p.complete(request, m, deps.config.models[m])
    )
    problem = format_problem(request, reply.text)
    if problem is not None:
        reply = _repaired(deps, provider, model_id, request, reply, problem, attempts)
    return InvokeResult(
        model=model_id,
        provider=provider.name,
        response=build_completion(state, deps, model_id, reply),
        attempts=attempts,
        latency_ms=_ms_since(t0),
    )


def _repaired(
    deps: Deps,
    provider: Provider,
    model_id: str,
    request: ChatCompletionRequest,
    reply: ProviderReply,
    problem: str,
    attempts: list[Attempt],
) -> ProviderReply:
    """Ask the model once more, stating the problem; both calls are paid for and recorded."""
    deps.metrics.count("output_format_repairs", model=model_id)
    t0 = time.monotonic()
    second = provider.complete(repair_request(request, reply.text, problem), model_id, deps.config.models[model_id])
    attempts.append(Attempt(model=model_id, outcome="ok", latency_ms=_ms_since(t0)))
    still = format_problem(request, second.text, quote_answer=False)
    if still is not None:
        deps.metrics.count("output_format_failures", model=model_id)
        raise OutputFormatInvalid(
            f"The model's answer did not satisfy the requested response_format after one repair: {still}"
        )
    return ProviderReply(
        text=second.text,
        finish_reason=second.finish_reason,
        prompt_tokens=reply.prompt_tokens + second.prompt_tokens,
        completion_tokens=reply.completion_tokens + second.completion_tokens,
        cached_tokens=reply.cached_tokens + second.cached_tokens,
        cache_write_tokens=reply.cache_write_tokens + second.cache_write_tokens,
    )


def open_stream(state: GatewayState, deps: Deps) -> tuple[str, Provider, Iterator[StreamDelta], list[Attempt]]:
    """Start a streamed answer; retries and fallbacks apply until the first delta is in hand."""

    def start(provider: Provider, model_id: str) -> Iterator[StreamDelta]:
        deltas = provider.stream(state.model_request(), model_id, deps.config.models[model_id])
        first = next(deltas, None)
        return iter(() if first is None else _chain(first, deltas))

    return call_with_fallback(state, deps, start)


def _chain(first: StreamDelta, rest: Iterator[StreamDelta]) -> Iterator[StreamDelta]:
    yield first
    yield from rest
