"""Provider call with the retry/fallback policy of `deps.invoke_policy`, usage and cost.

This is the provider-error boundary: whatever a provider call raises becomes a `ProviderError`
(an exception that is not one is a provider bug or an answer no check caught: it is logged with
the request id and treated as `ProviderUnavailable`), so it is retried, falls back, or ends as
`AllModelsFailed`; never an internal error.
"""

from __future__ import annotations

import contextvars
import logging
import math
import random
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from ..backoff import jittered_delay
from ..contracts import (
    AssistantMessage,
    Attempt,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    GatewayState,
    InvokeResult,
    ToolCall,
    Usage,
)
from ..errors import (
    AllModelsFailed,
    GatewayError,
    OutputFormatInvalid,
    ProviderBadRequest,
    ProviderError,
    ProviderThrottled,
    ProviderTimeout,
    ProviderUnavailable,
)
from ..output_format import format_problem, repair_request
from ..pipeline import RetryPolicy
from ..providers.base import Provider, ProviderReply, ReplyChoice, StreamDelta

if TYPE_CHECKING:
    from ..config import ModelConfig, Price
    from ..deps import Deps

T = TypeVar("T")
log = logging.getLogger("llm_gateway.invoke")


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
    delay = jittered_delay(policy.base_delay_s, policy.max_delay_s, attempt, rng)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(delay, policy.max_delay_s)


_rng = random.Random()  # noqa: S311 - jitter, not security

# No attempt starts with less than this left of the deadline; attempt timeouts are cut in steps of
# this size (the HTTP client keeps one timeout object per distinct value).
MIN_ATTEMPT_S = 0.1


def attempt_model(model: ModelConfig, left_s: float) -> ModelConfig:
    """`model` with its timeout cut to `left_s` (rounded down to MIN_ATTEMPT_S) when that is shorter:
    no attempt outlives the invoke deadline."""
    if model.timeout_s <= left_s:
        return model
    cut = max(MIN_ATTEMPT_S, math.floor(left_s / MIN_ATTEMPT_S) * MIN_ATTEMPT_S)
    return model.model_copy(update={"timeout_s": round(cut, 3)})


def invoke_deadline(deps: Deps) -> float:
    """The `time.monotonic()` instant by which the invoke step ends, from `deps.invoke_policy`."""
    return time.monotonic() + deps.invoke_policy.deadline_s


def call_with_fallback(
    state: GatewayState,
    deps: Deps,
    call: Callable[[Provider, str, ModelConfig], T],
    deadline: float | None = None,
) -> tuple[str, Provider, T, list[Attempt]]:
    """Try each candidate model in order, retrying retryable errors with backoff, until the
    deadline (a `time.monotonic()` instant; by default `deps.invoke_policy.deadline_s` from now).

    `call` gets the model's configuration with its timeout cut to what is left of the deadline.
    A bad request is raised at once (another model would reject it too). When every candidate
    fails, or the deadline leaves no time for another attempt, `AllModelsFailed` names what
    happened to each model tried.
    """
    if state.router is None:
        raise RuntimeError("invoke runs after router")
    policy = deps.invoke_policy
    if deadline is None:
        deadline = invoke_deadline(deps)
    attempts: list[Attempt] = []
    last_error: ProviderError | None = None
    out_of_time = False  # no time left for another attempt: stop
    cut_short = False  # the deadline took attempts the policy would have made
    for model_id in state.router.candidates:
        model = deps.config.models[model_id]
        provider = deps.providers.get(model.provider)
        for attempt in range(policy.max_attempts):
            t0 = time.monotonic()
            if deadline - t0 < MIN_ATTEMPT_S:
                out_of_time = cut_short = True
                break
            try:
                result = call(provider, model_id, attempt_model(model, deadline - t0))
            except GatewayError as raised:
                if not isinstance(raised, ProviderError):
                    raise
                error: ProviderError = raised
            except Exception as raised:
                error = unexpected_provider_failure(raised, state.request_id, model_id)
            else:
                attempts.append(Attempt(model=model_id, outcome="ok", latency_ms=_ms_since(t0)))
                return model_id, provider, result, attempts
            attempts.append(Attempt(model=model_id, outcome=_outcome(error), latency_ms=_ms_since(t0)))
            if _on_trial(state, model_id) and isinstance(error, ProviderBadRequest):
                last_error = error  # a rollout's candidate refused it: the baseline answers, the gates count it
                break
            if isinstance(error, ProviderBadRequest) or _named_in(error, policy.never_retry):
                raise error
            last_error = error
            if attempt + 1 >= policy.max_attempts or not _named_in(error, policy.retry_on):
                break
            delay = backoff_delay(policy, attempt, error.retry_after_s, _rng)
            if time.monotonic() + delay > deadline:
                cut_short = True
                break  # no time to wait for this model: the next candidate gets what is left
            deps.sleep(delay)
        if out_of_time:
            break
    tried = ", ".join(f"{a.model}: {a.outcome}" for a in attempts)
    within = f" within the {policy.deadline_s:g} s deadline" if cut_short else ""
    retry_after = last_error.retry_after_s if isinstance(last_error, ProviderThrottled) else None
    raise AllModelsFailed(f"No model could answer{within}{f' ({tried})' if tried else ''}.", retry_after_s=retry_after)


def _on_trial(state: GatewayState, model_id: str) -> bool:
    """Whether `model_id` is a rollout's candidate tried first on its arm: a request it refuses
    as bad goes on to the baseline (which may take it), and counts against the candidate."""
    router = state.router
    return (
        router is not None
        and router.variant is not None
        and router.variant.endswith(":candidate")
        and model_id == router.candidates[0]
        and len(router.candidates) > 1
    )


def unexpected_provider_failure(exc: Exception, request_id: str, model_id: str) -> ProviderUnavailable:
    """A provider call raised something other than a `ProviderError`: logged (its type and where,
    never its message, which may quote the answer) and treated as the model being unavailable."""
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ is not None else None
    log.error(
        "model %s failed with an unexpected %s%s",
        model_id,
        type(exc).__name__,
        f" at {where.filename}:{where.lineno}" if where is not None else "",
        extra={"request_id": request_id},
    )
    error = ProviderUnavailable(f"model '{model_id}' answered in an unexpected way")
    error.__cause__ = exc
    return error


def _named_in(error: ProviderError, names: tuple[str, ...]) -> bool:
    """True when the error's class, or one of its bases, is named in `names`."""
    return any(cls.__name__ in names for cls in type(error).__mro__)


def _ms_since(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000, 3)


def build_completion(
    state: GatewayState,
    deps: Deps,
    model_id: str,
    reply: ProviderReply,
    price: Price | None = None,
    choices: list[ReplyChoice] | None = None,
) -> ChatCompletion:
    """The OpenAI-shaped answer with usage and cost from the model's price table (or `price`:
    a provider batch's); `choices`: the answer's choices when not `reply.choices()`."""
    usage = Usage.of(reply.prompt_tokens, reply.completion_tokens, reply.cached_tokens)
    price = price or deps.config.models[model_id].price
    usage.cost_usd = price.cost(
        reply.prompt_tokens, reply.completion_tokens, reply.cached_tokens, reply.cache_write_tokens
    )
    return ChatCompletion(
        id=f"chatcmpl-{state.request_id}",
        created=int(state.received_at),
        model=model_id,
        choices=[Choice(message=assistant_message(reply.text, reply.tool_calls), finish_reason=reply.finish_reason)]
        if choices is None and not reply.more
        else [
            Choice(index=i, message=assistant_message(c.text, c.tool_calls), finish_reason=c.finish_reason)
            for i, c in enumerate(reply.choices() if choices is None else choices)
        ],
        usage=usage,
    )


def assistant_message(text: str, tool_calls: list[ToolCall]) -> AssistantMessage:
    """The answer's message: a turn that only calls tools has no content (null, as OpenAI sends it)."""
    if tool_calls:
        return AssistantMessage(content=text or None, tool_calls=tool_calls)
    return AssistantMessage(content=text)


def invoke_step(state: GatewayState, deps: Deps) -> InvokeResult:
    """Call the chosen model (with retries and fallbacks) and price the answer. A request for `n`
    choices that the provider answers one per call gets the rest from that model, in parallel. A
    choice that does not satisfy the request's response_format gets one repair call to the same
    model. Every call is paid for and recorded."""
    t0 = time.monotonic()
    deadline = invoke_deadline(deps)  # shared with the calls for more choices and the repairs
    request = state.model_request()
    model_id, provider, reply, attempts = call_with_fallback(
        state, deps, lambda p, m, config: p.complete(request, m, config), deadline
    )
    wanted = request.choices_wanted()

    def charged(failed: _ChoicesFailed) -> GatewayError:
        """The request fails; what its answered calls cost goes with the error, to be charged."""
        paid = build_completion(state, deps, model_id, failed.reply)
        spent = InvokeResult(
            model=model_id, provider=provider.name, response=paid, attempts=attempts, latency_ms=_ms_since(t0)
        )
        failed.error.spent = spent.model_dump(mode="json")
        return failed.error

    if 1 + len(reply.more) < wanted:
        try:
            reply = _with_more_choices(state, deps, model_id, request, reply, attempts, deadline)
        except _ChoicesFailed as failed:
            raise charged(failed) from None
    choices: list[ReplyChoice] | None = None  # None: the reply's own (one choice, as it came)
    if wanted > 1 or request.response_format is not None:
        choices = reply.choices()[:wanted]
        single = request if wanted == 1 else request.model_copy(update={"n": None})
        for index, choice in enumerate(choices):
            problem = None if choice.tool_calls else format_problem(request, choice.text)  # a call is no answer yet
            if problem is not None:
                try:
                    fixed = _repaired(state, deps, model_id, single, choice.text, problem, attempts, deadline)
                except _ChoicesFailed as failed:  # the first answer and the repair were paid for
                    raise charged(_ChoicesFailed(failed.error, reply.plus_usage(failed.reply))) from None
                reply = reply.plus_usage(fixed)
                choices[index] = ReplyChoice(text=fixed.text, finish_reason=fixed.finish_reason)
    return InvokeResult(
        model=model_id,
        provider=provider.name,
        response=build_completion(state, deps, model_id, reply, choices=choices),
        attempts=attempts,
        latency_ms=_ms_since(t0),
    )


def _only(state: GatewayState, model_id: str) -> GatewayState:
    """The state with `model_id` as the router's only candidate (more calls to the model that answered)."""
    if state.router is None:
        raise RuntimeError("invoke runs after router")
    return state.model_copy(update={"router": state.router.model_copy(update={"candidates": [model_id]})})


class _ChoicesFailed(Exception):
    """A call for one of a request's choices failed after its retries: the error, and the reply
    with the choices and usage of the calls that answered."""

    def __init__(self, error: GatewayError, reply: ProviderReply) -> None:
        super().__init__(error.message)
        self.error, self.reply = error, reply


def _with_more_choices(
    state: GatewayState,
    deps: Deps,
    model_id: str,
    request: ChatCompletionRequest,
    reply: ProviderReply,
    attempts: list[Attempt],
    deadline: float,
) -> ProviderReply:
    """`reply` with the choices it lacks of the request's `n`, each from a call of its own to the
    same model (retried like any call to it), made side by side; their usage added."""
    missing = request.choices_wanted() - 1 - len(reply.more)
    single = request.model_copy(update={"n": None})
    only = _only(state, model_id)

    def one(_: int) -> tuple[ProviderReply, list[Attempt]]:
        answered = call_with_fallback(only, deps, lambda p, m, config: p.complete(single, m, config), deadline)
        return answered[2], answered[3]

    with ThreadPoolExecutor(max_workers=missing, thread_name_prefix="choices") as pool:
        # each call in a copy of the caller's context; every call is waited for, failed or not
        futures = [pool.submit(contextvars.copy_context().run, one, n) for n in range(missing)]
    more = list(reply.more)
    failure: GatewayError | None = None
    for future in futures:
        error = future.exception()
        if error is not None:
            if not isinstance(error, GatewayError):
                raise error
            failure = failure or error
            continue
        extra, tried = future.result()
        attempts.extend(tried)
        more += extra.choices()
        reply = reply.plus_usage(extra)
    reply = reply.model_copy(update={"more": more})
    if failure is not None:
        raise _ChoicesFailed(failure, reply)
    return reply


def _repaired(
    state: GatewayState,
    deps: Deps,
    model_id: str,
    request: ChatCompletionRequest,
    answer: str,
    problem: str,
    attempts: list[Attempt],
    deadline: float,
) -> ProviderReply:
    """Ask the model once more, stating the problem of `answer` (retried like any call to that
    model): the repair call's reply. A repair call that fails after its retries ends like a
    repair that does not satisfy the format: `OutputFormatInvalid`, raised in a `_ChoicesFailed`
    with what the repair was paid (the caller adds the first answer's and charges both)."""
    deps.metrics.count("output_format_repairs", model=model_id)
    repair = repair_request(request, answer, problem)
    try:
        _, _, second, tried = call_with_fallback(
            _only(state, model_id), deps, lambda p, m, config: p.complete(repair, m, config), deadline
        )
    except ProviderError as error:
        deps.metrics.count("output_format_failures", model=model_id)
        failed = OutputFormatInvalid(
            "The model's answer did not satisfy the requested response_format, and the call to repair it"
            f" failed: {error.message}"
        )
        unpaid = ProviderReply(text="", finish_reason="stop", prompt_tokens=0, completion_tokens=0)
        raise _ChoicesFailed(failed, unpaid) from error  # a failed call is not paid
    attempts.extend(tried)
    still = format_problem(request, second.text, quote_answer=False)
    if still is not None:
        deps.metrics.count("output_format_failures", model=model_id)
        failed = OutputFormatInvalid(
            f"The model's answer did not satisfy the requested response_format after one repair: {still}"
        )
        raise _ChoicesFailed(failed, second)  # the repair was paid for too
    return second


def open_stream(state: GatewayState, deps: Deps) -> tuple[str, Provider, Iterator[StreamDelta], list[Attempt]]:
    """Start a streamed answer; retries and fallbacks apply until the first delta is in hand (a
    stream that ends before any delta falls back like any failed call).

    The deltas after the first raise only `ProviderError`s, and a stream that ends without its
    final delta (the finish reason) raises `ProviderUnavailable`: a broken stream is never
    mistaken for a finished answer."""

    def start(provider: Provider, model_id: str, model: ModelConfig) -> Iterator[StreamDelta]:
        deltas = provider.stream(state.model_request(), model_id, model)
        first = next(deltas, None)
        if first is None:
            raise ProviderUnavailable(f"model '{model_id}' closed the stream without an answer")
        return _checked(first, deltas, state.request_id, model_id)

    return call_with_fallback(state, deps, start)


def _checked(first: StreamDelta, rest: Iterator[StreamDelta], request_id: str, model_id: str) -> Iterator[StreamDelta]:
    """`first`, then `rest` up to the delta carrying the finish reason, every failure a `ProviderError`."""
    try:
        delta: StreamDelta | None = first
        while delta is not None:
            yield delta
            if delta.finish_reason is not None:
                return
            try:
                delta = next(rest, None)
            except ProviderError:
                raise
            except Exception as exc:
                raise unexpected_provider_failure(exc, request_id, model_id) from exc
        raise ProviderUnavailable(f"model '{model_id}' closed the stream before finishing")
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            close()
