"""Request traces: what each step of the chain decided for one request, how long it took, what it
cost; written where the request's record is (`finish`), read by its tenant (`GET
/v1/traces/{request_id}`) and by the operator (`llm-gateway trace <request-id>`); feedback on the
answer is kept with it (`POST /v1/feedback`).

A trace holds decisions, scores, reasons (which name layers, scores, entity types, never the text),
models, attempts, tokens and cost. The prompt and the answer are kept only when the tenant says
`traces.store_content`, PII masked per its policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .contracts import ChatCompletion, ChatMessage, GatewayState, GuardDecision
from .errors import GatewayError, InvalidRequest, NotFound
from .ports import Feedback, ReviewItem, StepTrace, Trace

if TYPE_CHECKING:
    from .config import TenantConfig
    from .deps import Deps

_DAY_S = 86_400


def record_trace(
    state: GatewayState,
    deps: Deps,
    outcome: str,
    error: GatewayError | None = None,
    answer: ChatCompletion | None = None,
) -> Trace | None:
    """Keep the request's trace when the deployment keeps traces and its tenant is known and
    wants them; `answer`: what the client received. The trace kept, if one was."""
    tenant = state.guard.tenant.tenant if state.guard is not None and state.guard.tenant is not None else None
    if deps.traces is None or tenant is None:
        return None
    policy = deps.config.tenants[tenant]
    if not policy.traces.enabled:
        return None
    trace = build_trace(state, deps, tenant, policy, outcome, error, answer)
    deps.traces.put(trace)
    return trace


def build_trace(
    state: GatewayState,
    deps: Deps,
    tenant: str,
    policy: TenantConfig,
    outcome: str,
    error: GatewayError | None,
    received: ChatCompletion | None = None,
) -> Trace:
    now = state.ended_at(deps.clock)
    answer = state.invoke.response if state.invoke is not None else None
    if answer is None and state.cache is not None:
        answer = state.cache.response
    usage = state.invoke.response.usage if state.invoke is not None else None
    route = state.router.route if state.router is not None else state.cache.route if state.cache else None
    return Trace.model_construct(  # built from validated results: no second validation
        request_id=state.request_id,
        tenant=tenant,
        ts=state.received_at,
        expires_at=state.received_at + policy.traces.retention_days * _DAY_S,
        outcome=outcome,
        error_code=(error.code or type(error).__name__) if error is not None else None,
        route=route,
        model=answer.model if answer is not None else None,
        latency_ms=round((now - state.received_at) * 1000, 3),
        first_token_ms=_first_token_ms(state, now) if error is None and answer is not None else None,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        cached_tokens=usage.prompt_tokens_details.cached_tokens if usage else 0,
        cost_usd=usage.cost_usd if usage else 0.0,
        steps=steps(state, error),
        content=_content(state, policy, received) if policy.traces.store_content else None,
        feedback=[],
        replay_of=state.caller.replay_of,
        offline=state.caller.offline,
    )


def _first_token_ms(state: GatewayState, now: float) -> float:
    """As the `time_to_first_token_seconds` metric: a streamed answer's first text, a whole one's end."""
    first = state.first_token_at if state.first_token_at is not None else now
    return round(max(0.0, first - state.received_at) * 1000, 3)


def steps(state: GatewayState, error: GatewayError | None = None) -> list[StepTrace]:
    """Each step the request went through, in chain order, with what it decided."""
    timed = state.timings_ms
    found: list[StepTrace] = []
    if state.guard is not None:
        guard = state.guard
        detail: dict[str, Any] = {"outcome": guard.outcome, "decisions": _decisions(guard.decisions)}
        if guard.layer is not None:
            detail.update(layer=guard.layer, reason=guard.reason)
        if guard.route is not None:
            detail["planned_route"] = guard.route.route
        if guard.saved_tokens:
            detail["compression_saved_tokens"] = guard.saved_tokens
        found.append(StepTrace.model_construct(name="guard", ms=timed.get("guard"), detail=detail))
    if state.cache is not None:
        cache = state.cache
        detail = {"status": cache.status, "store": cache.store}
        if cache.score is not None:
            detail.update(score=cache.score, similarity=cache.similarity)
        found.append(StepTrace.model_construct(name="cache", ms=timed.get("cache"), detail=detail))
    if state.router is not None:
        router = state.router
        detail = {"route": router.route, "candidates": router.candidates, "brief": router.brief}
        if router.complexity is not None:
            detail["complexity"] = router.complexity
        if router.pinned:
            detail["pinned"] = True
        found.append(StepTrace.model_construct(name="router", ms=timed.get("router"), detail=detail))
    if state.invoke is not None:
        invoke = state.invoke
        usage = invoke.response.usage
        detail = {
            "model": invoke.model,
            "provider": invoke.provider,
            "attempts": [a.model_dump() for a in invoke.attempts],
            "latency_ms": invoke.latency_ms,
            "choices": [c.finish_reason for c in invoke.response.choices],
            "usage": usage.model_dump(exclude={"total_tokens"}),
        }
        found.append(StepTrace.model_construct(name="invoke", ms=timed.get("invoke"), detail=detail))
    if state.moderate is not None:
        moderate = state.moderate
        detail = {"outcome": moderate.outcome, "decisions": _decisions(moderate.decisions)}
        if moderate.layer is not None:
            detail.update(layer=moderate.layer, rule=moderate.rule)
        found.append(StepTrace.model_construct(name="moderate", ms=timed.get("moderate"), detail=detail))
    if error is not None:
        found.append(
            StepTrace.model_construct(
                name="failed", detail={"status": error.status, "code": error.code, "type": error.type}
            )
        )
    else:
        found.append(
            StepTrace.model_construct(name="finish", detail={"status": state.finish.status if state.finish else 200})
        )
    return found


def _decisions(decisions: list[GuardDecision]) -> list[dict[str, Any]]:
    return [d.model_dump(exclude_none=True) for d in decisions]


def _content(state: GatewayState, policy: TenantConfig, received: ChatCompletion | None) -> dict[str, Any]:
    """The request as the caller sent it and the answer the client received, PII masked per the
    tenant's policy with the placeholders the model saw (a value restored for the client goes back
    to its placeholder)."""
    from .guard.step import ConversationMasker  # the guard package: only where content is kept

    messages = state.request.messages  # as the caller sent them (a replay sends them again)
    masker = ConversationMasker(messages, policy.guards.pii)
    kept: dict[str, Any] = {"messages": [masker.message(m).model_dump(exclude_none=True) for m in messages]}
    # what else shapes the answer, for a replay (`llm-gateway replay`); RAG passages masked too
    kept["request"] = {"model": state.request.model, **masker.json(state.request.generation_params())}
    if received is not None:
        answers = [
            ChatMessage.model_validate(
                c.message.model_dump(exclude={"refusal"}, exclude_none=True) | {"role": "assistant"}
            )
            for c in received.choices
        ]
        kept["answer"] = [masker.message(m).model_dump(exclude_none=True) for m in answers]
    return kept


class FeedbackRequest(BaseModel):
    """The body of `POST /v1/feedback`: thumbs (-1 or +1), a rating (1 to 5), or a task outcome
    (`kind: task`, 0 or 1: whether the answer did the job, an experiment's success metric) on one
    answer, named by its `x-request-id`. `kind` may be left out where the score says it (a 1 is a
    thumbs up unless `kind` is `rating` or `task`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: str = Field(min_length=1, max_length=256)
    score: int
    kind: Literal["thumbs", "rating", "task"] | None = None
    comment: str | None = Field(default=None, max_length=4000)

    def feedback(self, at: float, comment: str | None) -> Feedback:
        kind = self.kind or ("thumbs" if self.score in (-1, 1) else "rating")
        allowed = {"thumbs": (-1, 1), "rating": (1, 2, 3, 4, 5), "task": (0, 1)}[kind]
        if self.score not in allowed:
            raise InvalidRequest(f"A {kind} score is one of {', '.join(map(str, allowed))}.", param="score")
        return Feedback(kind=kind, score=self.score, comment=comment, at=at)


def give_feedback(deps: Deps, tenant: str, request: FeedbackRequest) -> Trace:
    """Keep feedback with the tenant's trace of the request (`NotFound` for any other request),
    count it, and queue a negative one for review."""
    policy = deps.config.tenants[tenant]
    comment = request.comment
    if comment:
        from .guard.step import ConversationMasker  # the guard package: only where a comment is kept

        comment = ConversationMasker([], policy.guards.pii).text(comment)
    feedback = request.feedback(deps.clock(), comment)
    trace = deps.traces.add_feedback(tenant, request.request_id, feedback, deps.clock()) if deps.traces else None
    if trace is None:
        raise NotFound(f"No request '{request.request_id}' of yours to give feedback on.", param="request_id")
    if feedback.kind == "task":  # an experiment's success metric, not a satisfaction
        deps.metrics.count("feedback", tenant=tenant, kind="task", verdict="success" if feedback.score else "failure")
    else:
        verdict = "negative" if feedback.negative else "positive"
        deps.metrics.count("feedback", tenant=tenant, kind=feedback.kind, verdict=verdict)
        deps.metrics.observe("feedback_score", feedback.satisfaction, tenant=tenant)
    if feedback.negative and deps.review is not None:
        answer = (trace.content or {}).get("answer") or []
        deps.review.submit(
            ReviewItem(
                item_id=f"{request.request_id}:feedback",
                request_id=request.request_id,
                tenant=tenant,
                kind="output",
                layer="feedback",
                reason=f"{feedback.kind} {feedback.score}" + (f": {comment}" if comment else ""),
                score=feedback.satisfaction,
                text="\n".join(str(m.get("content") or "") for m in answer),
                created_at=feedback.at,
            )
        )
    return trace
