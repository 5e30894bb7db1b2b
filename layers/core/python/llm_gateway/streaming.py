"""The chain for `stream: true`: same steps, streamed invoke and incremental output moderation.

Step Functions cannot stream, so this runs in the ASGI app (locally and in the streaming Lambda).
guard, cache and router run as usual; errors up to the first model token (retries and fallbacks
included) become a normal HTTP error. The answer is then relayed with a hold-back window: text is
released only once the blocklist has seen `HOLDBACK_CHARS` characters past it, so a blocked phrase
split across deltas is caught before any of it leaves. Finish runs when the stream ends, whichever
way it ends: a provider that fails after the first token ends the stream with an error event
(never a finish reason), and what it generated until then is billed like a stream the client left.

Tool calls are gathered as they stream and sent whole, one delta per call, when the model's turn
ends and the output checks (blocklist, harmful content, PII) have read them: a call that has been
sent cannot be taken back, and a caller cannot act on half of one anyway.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

from .blocklist import CompiledBlocklist
from .config import HarmfulGuard
from .contracts import (
    Attempt,
    ChatCompletion,
    ChatCompletionChunk,
    ChunkChoice,
    ChunkDelta,
    ErrorBody,
    FinishReason,
    FunctionCall,
    FunctionCallDelta,
    GatewayState,
    GuardDecision,
    InvokeResult,
    ModerateResult,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from .errors import ClientClosedRequest, GatewayError, InternalError
from .finish import final_response, finish_step, record_abandoned
from .guard.pii import find_pii, pii_safe_cut, redact, restore, restore_in_json, safe_cut
from .invoke.step import build_completion, open_stream
from .moderation.harmful import load_harmful_classifier
from .moderation.step import calls_text, leak_watched
from .providers.base import ProviderReply, StreamDelta
from .runner import InProcessRunner

log = logging.getLogger("llm_gateway.streaming")
HOLDBACK_CHARS = 64
HARM_STEP_CHARS = 256  # streamed answers are scored by tier 2 each time they grow this much
StreamItem = ChatCompletionChunk | ErrorBody


def start_stream(runner: InProcessRunner, state: GatewayState) -> tuple[str | None, Iterator[StreamItem]]:
    """Run the chain up to the model; return the answering model and the chunk iterator.

    Raises `GatewayError` (already recorded) when the request fails before any token; a blocked
    request is finished and returned as is for the caller to refuse.
    """
    if state.request.choices_wanted() > 1:  # several choices: answered whole, each checked, then sent
        runner.run(state)
        if state.finish is None or state.finish.response is None:
            return None, iter(())  # refused or failed (recorded): the caller answers the error
        return state.finish.response.model, _replay(state, state.finish.response)
    runner.run(state, stop_before="invoke")
    if state.finish is not None:  # an exit was taken: blocked or cache hit
        if state.cache is not None and state.cache.response is not None:
            return state.cache.response.model, _replay(state)
        return None, iter(())
    try:
        model_id, provider, deltas, attempts = open_stream(state, runner.deps)
    except GatewayError as error:
        runner.fail(state, error)
        raise
    except Exception as exc:  # a gateway bug: recorded, then answered as an internal error
        log.exception("stream failed to start", extra={"request_id": state.request_id})
        internal = InternalError("The gateway failed to process the request.")
        runner.fail(state, internal)
        raise internal from exc
    return model_id, StartedRelay(_relay(runner, state, model_id, provider.name, deltas, attempts))


class StartedRelay(Iterator[StreamItem]):
    """The relay, started at once rather than by the first read, and closable from outside: a client
    that leaves before reading anything still leaves a started generator, whose close records the
    request as abandoned (with what it cost). The HTTP layer calls `close()` when the response ends."""

    def __init__(self, relay: Generator[StreamItem, None, None]) -> None:
        self._relay = relay
        self._first: StreamItem | None = next(relay)

    def __next__(self) -> StreamItem:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return next(self._relay)

    def close(self) -> None:
        with contextlib.suppress(ValueError):  # still running in another thread: its collection closes it
            self._relay.close()


def _chunk(
    state: GatewayState, model: str, delta: ChunkDelta, finish: FinishReason | None = None, index: int = 0
) -> ChatCompletionChunk:
    return ChatCompletionChunk(
        id=f"chatcmpl-{state.request_id}",
        created=int(state.received_at),
        model=model,
        choices=[ChunkChoice(index=index, delta=delta, finish_reason=finish)],
    )


def _usage_chunk(state: GatewayState, model: str, usage: Usage) -> ChatCompletionChunk:
    return ChatCompletionChunk(
        id=f"chatcmpl-{state.request_id}",
        created=int(state.received_at),
        model=model,
        choices=[],
        usage=usage,
    )


def _wants_usage(state: GatewayState) -> bool:
    options = state.request.stream_options
    return options is not None and options.include_usage


def _replay(state: GatewayState, answer: ChatCompletion | None = None) -> Iterator[StreamItem]:
    """A whole answer (a cache hit's, or one of several choices) as chunks, choice after choice."""
    answer = answer if answer is not None else final_response(state)
    for choice in answer.choices:
        index, text, calls = choice.index, choice.message.content, choice.message.tool_calls
        yield _chunk(state, answer.model, ChunkDelta(role="assistant", content=""), index=index)
        if text:
            yield _chunk(state, answer.model, ChunkDelta(content=text), index=index)
        if calls:
            yield _chunk(state, answer.model, ChunkDelta(tool_calls=_call_deltas(calls)), index=index)
        yield _chunk(state, answer.model, ChunkDelta(), choice.finish_reason, index=index)
    if _wants_usage(state):
        yield _usage_chunk(state, answer.model, answer.usage)


@dataclass
class _Progress:
    """How far a relayed stream has got."""

    text: str = ""
    released: int = 0  # characters already sent to the client
    pieces: int = 0
    last: StreamDelta | None = None  # the provider's final delta (finish reason, usage)
    rule: str | None = None  # the blocklist rule that stopped the stream
    leak: list[str] = field(default_factory=list)  # PII types the answer must not carry
    withhold: bool = False  # PII in the answer stops the stream (else it is redacted)
    leaked: set[str] = field(default_factory=set)  # PII types found in the answer
    harm_stop: float | None = None  # tier 2 score that stops the stream (None: harmful moderation off)
    harm_scored: int = 0  # length of the text last scored
    harm: str | None = None  # why tier 2 stopped the stream (or, a dry run, would have)
    harm_score: float | None = None
    harm_log: bool = False  # action `log`: record what would have stopped the stream, never stop it
    calls: dict[int, list[str]] = field(default_factory=dict)  # tool call index -> [id, name, arguments]

    def gather(self, pieces: list[ToolCallDelta]) -> None:
        """Add streamed tool-call pieces to the calls they belong to."""
        for piece in pieces:
            call = self.calls.setdefault(piece.index, ["", "", ""])
            call[0] = piece.id or call[0]
            if piece.function is not None:
                call[1] = piece.function.name or call[1]
                call[2] += piece.function.arguments or ""

    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(id=cid, function=FunctionCall(name=name, arguments=arguments))
            for _, (cid, name, arguments) in sorted(self.calls.items())
        ]


def _harm_stops(progress: _Progress, final: bool = False) -> bool:
    """Score the answer so far every HARM_STEP_CHARS (and at the end); True when it must stop."""
    if progress.harm_stop is None or progress.harm is not None:
        return progress.harm is not None and not progress.harm_log
    if not final and len(progress.text) - progress.harm_scored < HARM_STEP_CHARS:
        return False
    assessed = load_harmful_classifier().assess_answer(progress.text, start=progress.harm_scored)
    progress.harm_scored = len(progress.text)
    if assessed.score >= progress.harm_stop:
        progress.harm = f"{assessed.category} (score {assessed.score:.3f})"
        progress.harm_score = round(assessed.score, 4)
    return progress.harm is not None and not progress.harm_log


def _harm_stop(policy: HarmfulGuard) -> float | None:
    """The tier 2 score that stops a streamed answer. A stream cannot wait for the judge (what was
    sent cannot be taken back), so tier 2 decides alone: at its threshold, or at the top of the
    uncertain band when the tenant relies on a judge for the band."""
    if not (policy.enabled and policy.output):
        return None
    classifier = load_harmful_classifier()
    if policy.judge_model is not None:
        return policy.band[1] if policy.band is not None else classifier.band[1]
    return policy.threshold if policy.threshold is not None else classifier.threshold


def _relay(
    runner: InProcessRunner,
    state: GatewayState,
    model_id: str,
    provider: str,
    deltas: Iterator[StreamDelta],
    attempts: list[Attempt],
) -> Generator[StreamItem, None, None]:
    t0 = time.monotonic()
    policy = runner.deps.config.tenants[state.tenant().tenant].guards.pii
    progress = _Progress(leak=leak_watched(policy), withhold=policy.answers == "withhold")
    harmful = runner.deps.config.tenants[state.tenant().tenant].guards.harmful
    progress.harm_stop, progress.harm_log = _harm_stop(harmful), harmful.action == "log"
    ended = _Ended(runner, state, model_id, provider, attempts, t0, progress)
    try:
        yield _chunk(state, model_id, ChunkDelta(role="assistant", content=""))
        blocklist = runner.deps.output_blocklists[state.tenant().tenant]
        for item in _release(state, model_id, deltas, blocklist, progress):
            if state.first_token_at is None and isinstance(item, ChatCompletionChunk) and _carries_output(item):
                state.first_token_at = time.time()  # the time to first token the metrics report
            yield item
    except GeneratorExit:
        ended.early(ClientClosedRequest("The client closed the stream."))
        raise
    except GatewayError as error:  # the provider failed mid-stream (a ProviderError, see open_stream)
        yield ended.early(error)
        return
    except Exception:
        log.exception("stream failed", extra={"request_id": state.request_id})
        yield ended.early(InternalError("The gateway failed while streaming the answer."))
        return
    finally:
        close = getattr(deltas, "close", None)
        if close is not None:
            close()  # stop generating (and paying) as soon as we stop reading
    yield from _settle(runner, state, model_id, provider, attempts, t0, progress)


def _carries_output(chunk: ChatCompletionChunk) -> bool:
    return any(choice.delta.content or choice.delta.tool_calls for choice in chunk.choices)


@dataclass
class _Ended:
    """A relayed stream that ends before its finish: the client left, or the provider (or the
    gateway) failed after the first token."""

    runner: InProcessRunner
    state: GatewayState
    model_id: str
    provider: str
    attempts: list[Attempt]
    t0: float
    progress: _Progress

    def early(self, error: GatewayError) -> ErrorBody:
        """Record the request as the error it ended with, with what the model generated until then
        billed and charged to the budgets (an estimate: the provider's own count comes with the
        final delta, which will not arrive). Nothing is cached. Returns the stream's error event."""
        state, deps = self.state, self.runner.deps
        reply = _reply_from(state, self.progress.text, "length", None, self.progress.pieces)
        state.invoke = InvokeResult(
            model=self.model_id,
            provider=self.provider,
            response=build_completion(state, deps, self.model_id, reply),
            attempts=self.attempts,
            latency_ms=round((time.monotonic() - self.t0) * 1000, 3),
        )
        try:
            return record_abandoned(state, deps, error).error or error.body()
        except Exception:  # the answer to the client must not depend on the record
            log.exception("recording a stream that ended early failed", extra={"request_id": state.request_id})
            return error.body()


def _release(
    state: GatewayState,
    model_id: str,
    deltas: Iterator[StreamDelta],
    blocklist: CompiledBlocklist,
    progress: _Progress,
) -> Iterator[StreamItem]:
    """Relay text once the blocklist has seen HOLDBACK_CHARS past it; stop at the first match."""
    for delta in deltas:
        if delta.finish_reason is not None:
            progress.last = delta
            return
        if delta.tool_calls:
            progress.pieces += 1
            progress.gather(delta.tool_calls)
        if not delta.text:
            continue
        progress.pieces += 1
        progress.text += delta.text
        progress.rule = blocklist.first_match(progress.text[max(0, progress.released - HOLDBACK_CHARS) :])
        if progress.rule is not None:
            return
        if progress.withhold and find_pii(progress.text[progress.released :], progress.leak):
            progress.leaked.add("withheld")
            return
        if _harm_stops(progress):
            return
        if len(progress.text) - progress.released > HOLDBACK_CHARS:
            cut = safe_cut(progress.text, progress.released, len(progress.text) - HOLDBACK_CHARS)
            if progress.leak:  # never release part of a value: the rest could not be redacted
                cut = pii_safe_cut(progress.text, progress.released, cut, progress.leak)
            if cut > progress.released:
                released = _visible(state, progress, progress.text[progress.released : cut])
                yield _chunk(state, model_id, ChunkDelta(content=released))
                progress.released = cut


def _visible(state: GatewayState, progress: _Progress, text: str) -> str:
    """Released text as the client sees it: PII the answer carries redacted, masked PII the tenant
    allows put back."""
    spans = find_pii(text, progress.leak) if progress.leak else []
    if spans:
        progress.leaked.update(span.entity for span in spans)
        text = redact(text, spans)
    return restore(text, state.guard.restorable) if state.guard is not None else text


def _settle(
    runner: InProcessRunner,
    state: GatewayState,
    model_id: str,
    provider: str,
    attempts: list[Attempt],
    t0: float,
    progress: _Progress,
) -> Iterator[StreamItem]:
    """Send what was held back, record the answer (moderation outcome, usage, audit), end the stream."""
    calls = _checked_calls(runner, state, progress)
    rule, last = progress.rule, progress.last
    withheld = "withheld" in progress.leaked
    harmful = rule is None and not withheld and _harm_stops(progress, final=True)
    stopped = rule is not None or withheld or harmful
    if not stopped and progress.released < len(progress.text):
        rest = _visible(state, progress, progress.text[progress.released :])
        yield _chunk(state, model_id, ChunkDelta(content=rest))
    if not stopped and calls:
        yield _chunk(state, model_id, ChunkDelta(tool_calls=_call_deltas(calls, state)))
    finish: FinishReason = "content_filter" if stopped else (last.finish_reason if last else None) or "stop"
    reply = _reply_from(state, progress.text, finish, last, progress.pieces)
    if not stopped:
        reply.tool_calls = calls
    response: ChatCompletion = build_completion(state, runner.deps, model_id, reply)
    state.invoke = InvokeResult(
        model=model_id,
        provider=provider,
        response=response,
        attempts=attempts,
        latency_ms=round((time.monotonic() - t0) * 1000, 3),
    )
    state.moderate = _stream_moderation(progress)
    for decision in state.moderate.decisions:  # a dry run's "would have stopped it"
        runner.deps.metrics.count("guard_triggers", layer=decision.layer, action=decision.action)
    state.finish = finish_step(state, runner.deps)
    yield _chunk(state, model_id, ChunkDelta(), finish)
    if _wants_usage(state):
        yield _usage_chunk(state, model_id, response.usage)


def _checked_calls(runner: InProcessRunner, state: GatewayState, progress: _Progress) -> list[ToolCall]:
    """The streamed tool calls, read by the output checks as `moderate_step` reads them: the
    blocklist, harmful content, and PII (which withholds: a call's arguments are not redacted)."""
    calls = progress.tool_calls()
    if not calls or progress.rule is not None or progress.harm is not None:
        return calls
    text = calls_text(calls)
    progress.rule = runner.deps.output_blocklists[state.tenant().tenant].first_match(text)
    if progress.leak and find_pii(text, progress.leak):
        progress.leaked.add("withheld")
    if progress.harm_stop is not None:
        assessed = load_harmful_classifier().assess_answer(text)
        if assessed.score >= progress.harm_stop:
            progress.harm = f"{assessed.category} (score {assessed.score:.3f})"
            progress.harm_score = round(assessed.score, 4)
    return calls


def _call_deltas(calls: list[ToolCall], state: GatewayState | None = None) -> list[ToolCallDelta]:
    """Whole tool calls as one streamed piece each (masked PII the tenant allows put back)."""
    values = state.guard.restorable if state is not None and state.guard is not None else {}
    return [
        ToolCallDelta(
            index=i,
            id=call.id,
            type="function",
            function=FunctionCallDelta(
                name=call.function.name, arguments=restore_in_json(call.function.arguments, values)
            ),
        )
        for i, call in enumerate(calls)
    ]


def _stream_moderation(progress: _Progress) -> ModerateResult:
    """The moderation outcome of a relayed stream, as `moderate_step` would have recorded it."""
    logged = (
        [GuardDecision(layer="harmful_content", action="log", score=progress.harm_score, reason=progress.harm)]
        if progress.harm_log and progress.harm is not None
        else []
    )
    if progress.rule is not None:
        return ModerateResult(outcome="filtered", layer="blocklist", rule=progress.rule, decisions=logged)
    if progress.harm is not None and not progress.harm_log:
        return ModerateResult(outcome="filtered", layer="harmful_content", rule=progress.harm)
    if "withheld" in progress.leaked:
        types = sorted({s.entity for s in find_pii(progress.text, progress.leak)})
        return ModerateResult(outcome="filtered", layer="pii_leak", rule=", ".join(types), decisions=logged)
    if progress.leaked:
        content = redact(progress.text, find_pii(progress.text, progress.leak))
        return ModerateResult(
            outcome="redacted",
            layer="pii_leak",
            rule=", ".join(sorted(progress.leaked)),
            content=content,
            decisions=logged,
        )
    return ModerateResult(outcome="passed", decisions=logged)


def _reply_from(
    state: GatewayState, text: str, finish: FinishReason, last: StreamDelta | None, pieces: int
) -> ProviderReply:
    """Usage from the provider's final delta; when the stream was cut (filtered), an estimate:
    one token per delta received and four characters per prompt token."""
    if last is not None and last.prompt_tokens is not None:
        return ProviderReply(
            text=text,
            finish_reason=finish,
            prompt_tokens=last.prompt_tokens,
            completion_tokens=last.completion_tokens or 0,
            cached_tokens=last.cached_tokens,
            cache_write_tokens=last.cache_write_tokens,
        )
    prompt_chars = sum(len(m.text()) for m in state.model_request().messages)
    return ProviderReply(text=text, finish_reason=finish, prompt_tokens=prompt_chars // 4 + 1, completion_tokens=pieces)
