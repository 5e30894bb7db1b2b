"""The last step on every path: cache store, usage record, audit record; and the final answer."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from pydantic import ValidationError

from .budgets import settle
from .cache.keys import cache_tags
from .contracts import (
    AssistantMessage,
    ChatCompletion,
    Choice,
    ChoiceModeration,
    FinishResult,
    GatewayState,
    GuardDecision,
    InvokeResult,
)
from .errors import GatewayError, GuardrailBlocked, from_step_error
from .guard.pii import restore, restore_in_json
from .identity import pseudonym
from .ports import AuditRecord, Outcome, UsageRecord
from .semantic.index import decode_vector
from .semantic.scope import query_text

if TYPE_CHECKING:
    from .deps import Deps

log = logging.getLogger(__name__)


def final_response(state: GatewayState) -> ChatCompletion:
    """What the client receives: the model's answer, the cached one, or the withheld one."""
    if state.cache is not None and state.cache.response is not None:
        cached = state.cache.response
        usage = cached.usage.model_copy(update={"cost_usd": 0.0})
        return _restored(
            state,
            cached.model_copy(
                update={"id": f"chatcmpl-{state.request_id}", "created": int(state.received_at), "usage": usage}
            ),
        )
    if state.invoke is None:
        raise RuntimeError("no answer to return: the chain ended before invoke")
    response = state.invoke.response
    moderate = state.moderate
    if moderate is None or moderate.outcome == "passed":  # every choice passed: as it came
        return _restored(state, response)
    verdicts = moderate.choices or [ChoiceModeration(outcome=moderate.outcome, content=moderate.content)]
    choices = [_moderated_choice(choice, verdict) for choice, verdict in zip(response.choices, verdicts, strict=False)]
    return _restored(state, response.model_copy(update={"choices": choices}))


def _moderated_choice(choice: Choice, verdict: ChoiceModeration) -> Choice:
    """A choice as the output checks let it through: withheld, redacted, or as it was."""
    if verdict.outcome == "filtered":
        return Choice(index=choice.index, message=AssistantMessage(content=None), finish_reason="content_filter")
    if verdict.outcome == "redacted":
        return choice.model_copy(update={"message": choice.message.model_copy(update={"content": verdict.content})})
    return choice


def _restored(state: GatewayState, response: ChatCompletion) -> ChatCompletion:
    """The answer with the masked PII the tenant allows put back (caches keep the masked answer:
    a cached answer is restored with the values of the request it serves)."""
    values = state.guard.restorable if state.guard is not None else {}
    if not values:
        return response
    choices = [
        choice.model_copy(update={"message": _restored_message(choice.message, values)}) for choice in response.choices
    ]
    return response.model_copy(update={"choices": choices})


def _restored_message(message: AssistantMessage, values: dict[str, str]) -> AssistantMessage:
    """The message's text and its tool calls' arguments with the placeholders' values put back
    (JSON-escaped inside the arguments, which stay valid JSON)."""
    content = restore(message.content, values) if isinstance(message.content, str) else message.content
    calls = message.tool_calls
    if calls:
        calls = [
            c.model_copy(
                update={
                    "function": c.function.model_copy(
                        update={"arguments": restore_in_json(c.function.arguments, values)}
                    )
                }
            )
            for c in calls
        ]
    return message.model_copy(update={"content": content, "tool_calls": calls})


def _outcome(state: GatewayState) -> Outcome:
    if state.guard is not None and state.guard.outcome == "blocked":
        return "blocked"
    if state.cache is not None and state.cache.response is not None:
        return "cache_hit"
    if state.moderate is not None and state.moderate.outcome == "filtered":
        return "filtered"
    return "ok"


def _store_in_cache(state: GatewayState, deps: Deps) -> bool:
    cache, invoke, router = state.cache, state.invoke, state.router
    if cache is None or invoke is None or router is None or not cache.store or cache.key is None:
        return False
    # Only answers of the model the key names (not a fallback's), complete, and not filtered.
    if invoke.model != router.candidates[0] or invoke.response.choices[0].finish_reason == "content_filter":
        return False
    if state.moderate is None or state.moderate.outcome != "passed":
        return False
    tenant = state.tenant().tenant
    ttl = deps.config.tenants[tenant].cache_ttl_s
    ttl = deps.config.cache.ttl_s if ttl is None else ttl
    if ttl <= 0:
        return False
    expires_at = deps.clock() + ttl
    tags = cache_tags(state.model_request())
    deps.cache.put(cache.key, tenant, invoke.model, invoke.response, expires_at, tags)
    _store_by_meaning(state, deps, tenant, expires_at, tags)
    return True


def _store_by_meaning(state: GatewayState, deps: Deps, tenant: str, expires_at: float, tags: tuple[str, ...]) -> None:
    """Index the answer by its query's embedding, when the lookup prepared one. Only complete
    answers (`stop`): a truncated one may pass for exact reuse, not for a paraphrase. A failure
    loses a future hit, never this answer."""
    cache, invoke = state.cache, state.invoke
    if deps.semantic is None or cache is None or invoke is None or cache.key is None:
        return
    if cache.semantic_scope is None or cache.query_vector is None:
        return
    if invoke.response.choices[0].finish_reason != "stop":
        return
    try:
        deps.semantic.add(
            cache.semantic_scope,
            tenant,
            invoke.model,
            cache.key,
            decode_vector(cache.query_vector),
            query_text(state.model_request()),
            invoke.response.model_dump_json(),
            expires_at,
            tags,
        )
    except Exception:
        log.exception("semantic index store failed")


def _audit(state: GatewayState, deps: Deps, outcome: Outcome, error_code: str | None = None) -> AuditRecord:
    tenant = state.guard.tenant if state.guard is not None else None
    tenant_name = tenant.tenant if tenant else None
    answer = None
    if state.invoke is not None:
        answer = state.invoke.response
    elif state.cache is not None and state.cache.response is not None:
        answer = state.cache.response
    usage = answer.usage if answer is not None else None
    return AuditRecord(
        request_id=state.request_id,
        ts=state.received_at,
        tenant=tenant_name,
        key_id=tenant.key_id if tenant else None,
        user_hash=pseudonym(tenant_name or "", tenant.user) if tenant else None,
        client_ip_hash=pseudonym(tenant_name or "", state.caller.client_ip),
        route=state.router.route if state.router else None,
        model=answer.model if answer is not None else None,
        provider=state.invoke.provider if state.invoke else None,
        cache=state.cache.status if state.cache else None,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        cached_tokens=usage.prompt_tokens_details.cached_tokens if usage else 0,
        cost_usd=state.invoke.response.usage.cost_usd if state.invoke else 0.0,
        latency_ms=round((state.ended_at(deps.clock) - state.received_at) * 1000, 3),
        attempts=len(state.invoke.attempts) if state.invoke else 0,
        outcome=outcome,
        error_code=error_code,
        guards=decision_summary(state),
        guard_reasons=decision_reasons(state),
        variant=_variant(state),
    )


def _variant(state: GatewayState) -> str | None:
    """The request's rollout arm or experiment variant, where its route has one (planned by the guard)."""
    if state.router is not None:
        return state.router.variant
    planned = state.guard.route if state.guard is not None else None
    return planned.variant if planned is not None else None


def _decisions(state: GatewayState) -> list[tuple[str, GuardDecision]]:
    """The request's guard (`input`) and moderation (`output`) decisions, in the order taken."""
    found = [("input", d) for d in (state.guard.decisions if state.guard else [])]
    if state.guard is not None and state.guard.outcome == "blocked" and state.guard.layer == "blocklist":
        found.append(("input", GuardDecision(layer="blocklist", action="block", reason=state.guard.reason)))
    found += [("output", d) for d in (state.moderate.decisions if state.moderate else [])]
    if state.moderate is not None and state.moderate.layer in ("blocklist", "pii_leak"):
        action = "block" if state.moderate.outcome == "filtered" else "mask"
        found.append(("output", GuardDecision(layer=state.moderate.layer, action=action, reason=state.moderate.rule)))
    return found


def decision_summary(state: GatewayState) -> str | None:
    """The request's guard and moderation decisions for the audit record: layer, action, score."""
    parts = [f"{d.layer}:{d.action}" + ("" if d.score is None else f":{d.score:g}") for _, d in _decisions(state)]
    return " ".join(parts) or None


def decision_reasons(state: GatewayState) -> str | None:
    """Why the request's layers flagged, logged (would have blocked) or blocked, for the audit
    record: JSON `[[kind, layer, action, reason], ...]` (reasons never quote the text)."""
    reasons = [[kind, d.layer, d.action, d.reason] for kind, d in _decisions(state) if d.action in _REASONED]
    return json.dumps(reasons, separators=(",", ":")) if reasons else None


_REASONED = ("flag", "log", "block")


def finish_step(state: GatewayState, deps: Deps) -> FinishResult:
    """Store the answer in the cache, record usage (when a model was paid), settle its budget
    reservation, and the audit record."""
    cached = _store_in_cache(state, deps)
    cost = _record_usage(state, deps)
    settle(state, deps)
    outcome = _outcome(state)
    deps.audit.record(_audit(state, deps, outcome))
    request_metrics(state, deps, outcome)
    guard = state.guard
    if guard is not None and guard.outcome == "blocked":
        message = guard.message or "The request was refused by the gateway's input policy."
        refusal = GuardrailBlocked(message, code=guard.layer)
        _trace(state, deps, outcome, refusal)
        return FinishResult(status=refusal.status, error=refusal.body())
    response = final_response(state)
    _trace(state, deps, outcome, answer=response)
    if deps.shadows is not None and state.invoke is not None:
        try:  # a sampled copy, sent after the answer; whatever befalls it, never the answer's business
            deps.shadows.offer(state, deps, state.invoke.response)
        except Exception:
            log.exception("offering a shadow copy failed", extra={"request_id": state.request_id})
    return FinishResult(cached=cached, cost_usd=cost, response=response)


def _trace(
    state: GatewayState,
    deps: Deps,
    outcome: str,
    error: GatewayError | None = None,
    answer: ChatCompletion | None = None,
) -> None:
    """The request's trace (`traces`) and its spans (`telemetry`); a store or an exporter that
    fails loses them, never the answer."""
    kept = None
    if deps.traces is not None:
        from .traces import record_trace

        try:
            kept = record_trace(state, deps, outcome, error, answer)
        except Exception:
            log.exception("keeping a trace failed", extra={"request_id": state.request_id})
    if deps.spans is not None:
        try:
            deps.spans.export(state, deps, outcome, error, answer, kept)  # the same trace: built once
        except Exception:
            log.exception("exporting a request's spans failed", extra={"request_id": state.request_id})


def request_metrics(state: GatewayState, deps: Deps, outcome: str, error: GatewayError | None = None) -> None:
    """The request's own metrics (docs/observability.md), labelled tenant, route, model and outcome:
    `requests`, `request_duration_seconds`, `time_to_first_token_seconds` (a streamed answer's
    first text; a whole answer's first token comes with the rest, so its duration), and for what a
    model answered `tokens` by kind, `cost_usd` and `output_tokens`; `errors` by code."""
    tenant = state.guard.tenant.tenant if state.guard is not None and state.guard.tenant is not None else NO_LABEL
    route = state.router.route if state.router is not None else None
    if route is None and state.cache is not None:
        route = state.cache.route
    if route is None and state.guard is not None and state.guard.route is not None:
        route = state.guard.route.route
    answer = state.invoke.response if state.invoke is not None else state.cache.response if state.cache else None
    model = answer.model if answer is not None else NO_LABEL
    labels = {"tenant": tenant, "route": route or NO_LABEL, "model": model, "outcome": outcome}
    metrics = deps.metrics
    now = state.ended_at(deps.clock)
    metrics.count("requests", 1.0, **labels)
    metrics.observe("request_duration_seconds", max(0.0, now - state.received_at), **labels)
    if error is not None:
        metrics.count("errors", tenant=tenant, code=error.code or type(error).__name__)
    elif answer is not None:
        first = state.first_token_at if state.first_token_at is not None else now
        metrics.observe("time_to_first_token_seconds", max(0.0, first - state.received_at), **labels)
    if state.invoke is not None:  # what a model was paid for (a cache hit costs nothing)
        usage = state.invoke.response.usage
        cached = usage.prompt_tokens_details.cached_tokens
        for kind, n in (
            ("input", usage.prompt_tokens - cached),
            ("cached", cached),
            ("output", usage.completion_tokens),
        ):
            if n:
                metrics.count("tokens", n, tenant=tenant, model=model, kind=kind)
        metrics.count("cost_usd", usage.cost_usd, tenant=tenant, model=model)
        metrics.observe("output_tokens", usage.completion_tokens, tenant=tenant, route=labels["route"], model=model)


NO_LABEL = "_none"  # a label the request never got a value for (refused before its tenant or model was known)


def _record_usage(state: GatewayState, deps: Deps) -> float:
    """The usage record of what the model was paid for (nothing without an invoke result)."""
    if state.invoke is None:
        return 0.0
    tenant = state.tenant()
    usage = state.invoke.response.usage
    deps.usage.record(
        UsageRecord(
            request_id=state.request_id,
            ts=state.received_at,
            tenant=tenant.tenant,
            key_id=tenant.key_id,
            user_hash=pseudonym(tenant.tenant, tenant.user),
            model=state.invoke.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.prompt_tokens_details.cached_tokens,
            cost_usd=usage.cost_usd,
        )
    )
    return usage.cost_usd


def record_abandoned(state: GatewayState, deps: Deps, error: GatewayError) -> FinishResult:
    """A stream that ended before its finish (the client left, the provider failed mid-way): the
    model generated (and the provider bills) until then, so `state.invoke` holds that partial
    usage; it is recorded and charged to the budgets like an answer, and audited as the error it
    is. Nothing is cached."""
    _record_usage(state, deps)
    settle(state, deps)
    deps.audit.record(_audit(state, deps, "error", error.code or type(error).__name__))
    request_metrics(state, deps, "error", error)
    _trace(state, deps, "error", error)
    return FinishResult(status=error.status, error=error.body())


def record_failure(state: GatewayState, deps: Deps, error: GatewayError) -> FinishResult:
    """Record a request that ended in an error, so nothing goes unaccounted; the error is the answer.
    A budget reservation is released (nothing was charged for a failed request), unless the error
    says what the request had already paid for (`GatewayError.spent`): that is recorded and charged."""
    spent = _spent(error)
    if spent is not None:
        failed = record_abandoned(state.model_copy(update={"invoke": spent}), deps, error)
        return failed.model_copy(update={"retry_after_s": error.retry_after_s})
    settle(state.model_copy(update={"invoke": None}), deps)
    deps.audit.record(_audit(state, deps, "error", error.code or type(error).__name__))
    request_metrics(state, deps, "error", error)
    _trace(state, deps, "error", error)
    return FinishResult(status=error.status, error=error.body(), retry_after_s=error.retry_after_s)


def _spent(error: GatewayError) -> InvokeResult | None:
    if error.spent is None:
        return None
    try:
        return InvokeResult.model_validate(error.spent)
    except ValidationError:  # not what the invoke step wrote: nothing to charge
        log.warning("an error's spent usage could not be read")
        return None


def failure_step(state: GatewayState, deps: Deps) -> FinishResult:
    """The state machine's Catch target: rebuild the task's error from `$.error`, record it, answer it."""
    if state.error is None:
        raise RuntimeError("failure_step runs only after a caught error")
    return record_failure(state, deps, from_step_error(state.error))


def refused_record(
    request_id: str,
    received_at: float,
    tenant: str | None,
    key_id: str | None,
    client_ip: str | None,
    error: GatewayError,
    now: float,
) -> AuditRecord:
    """The audit record of a request refused at the edge, before a `GatewayState` could be built."""
    return AuditRecord(
        request_id=request_id,
        ts=received_at,
        tenant=tenant,
        key_id=key_id,
        user_hash=None,
        client_ip_hash=pseudonym(tenant or "", client_ip),
        route=None,
        model=None,
        provider=None,
        cache=None,
        prompt_tokens=0,
        completion_tokens=0,
        cached_tokens=0,
        cost_usd=0.0,
        latency_ms=round((now - received_at) * 1000, 3),
        attempts=0,
        outcome="error",
        error_code=error.code or type(error).__name__,
    )
