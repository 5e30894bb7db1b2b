"""Output moderation. Tier 1: the tenant's keyword/regex blocklist; tiers 2-4: the harmful-content
cascade (`cascade`: classifier, LLM judge for the uncertain band, human review); groundedness of
RAG answers and sampled factual consistency (`consistency`); then PII in the answer (values the
model produced itself: redacted or withheld per `guards.pii.answers`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..config import PiiGuard
from ..contracts import Choice, ChoiceModeration, GatewayState, GuardDecision, ModerateResult, ToolCall
from ..decisions import record_layer, submit_for_review
from ..guard.pii import STRUCTURED_TYPES, find_pii, redact
from .cascade import harmful_decision
from .consistency import consistency_decision, grounded_decision

if TYPE_CHECKING:
    from ..deps import Deps


_SEVERITY = {"passed": 0, "redacted": 1, "filtered": 2}


def moderate_step(state: GatewayState, deps: Deps) -> ModerateResult:
    """Check the model's answer: the tenant's output blocklist, harmful content, groundedness and
    factual consistency (the first that blocks withholds it; flags queue it for review), then PII
    the answer contains. An answer with several choices has each checked on its own."""
    if state.invoke is None:
        raise RuntimeError("moderate runs after invoke")
    choices = state.invoke.response.choices
    if len(choices) <= 1:
        return _moderated(state, deps, choices[0] if choices else None)
    verdicts = [_moderated(state, deps, choice) for choice in choices]
    worst = max(verdicts, key=lambda v: _SEVERITY[v.outcome])
    return worst.model_copy(
        update={
            "decisions": [d for v in verdicts for d in v.decisions],
            "choices": [
                ChoiceModeration(outcome=v.outcome, layer=v.layer, rule=v.rule, content=v.content) for v in verdicts
            ],
        }
    )


def _moderated(state: GatewayState, deps: Deps, choice: Choice | None) -> ModerateResult:
    tenant = state.tenant().tenant
    text = (choice.message.content or "") if choice is not None else ""
    calls = calls_text(choice.message.tool_calls or []) if choice is not None else ""
    text = "\n".join(part for part in (text, calls) if part) if calls else text
    rule = deps.output_blocklists[tenant].first_match(text)
    if rule is not None:
        return ModerateResult(outcome="filtered", layer="blocklist", rule=rule)
    guards = deps.config.tenants[tenant].guards
    decisions: list[GuardDecision] = []
    checks: list[Callable[[], GuardDecision | None]] = []
    if guards.harmful.enabled and guards.harmful.output and text:
        checks.append(lambda: harmful_decision(text, "output", guards.harmful, deps, state.request_id, state.tenant()))
    if guards.grounded.enabled and text and not calls:  # a turn that calls tools states no claims yet
        context = state.context_passages()
        if context:
            checks.append(lambda: grounded_decision(text, context, guards.grounded))
        checks.append(lambda: consistency_decision(state, deps, text, guards.grounded))
    for check in checks:
        started = time.perf_counter()
        decision = check()
        if decision is None:
            continue
        record_layer(deps, decision, started)
        decisions.append(decision)
        if decision.action == "block":
            return ModerateResult(outcome="filtered", layer=decision.layer, rule=decision.reason, decisions=decisions)
    if deps.review is not None and any(d.action == "flag" for d in decisions):
        submit_for_review(state, deps.review, tenant, "output", decisions, text, deps.clock())
    policy = deps.config.tenants[tenant].guards.pii
    entities = leak_watched(policy)
    spans = find_pii(text, entities) if entities else []
    if not spans:
        return ModerateResult(outcome="passed", decisions=decisions)
    types = ", ".join(sorted({span.entity for span in spans}))
    deps.metrics.count("guard_triggers", layer="pii_leak", action=policy.answers)
    if policy.answers == "withhold" or calls:  # a tool call's arguments are not redacted: withheld
        return ModerateResult(outcome="filtered", layer="pii_leak", rule=types, decisions=decisions)
    return ModerateResult(
        outcome="redacted", layer="pii_leak", rule=types, content=redact(text, spans), decisions=decisions
    )


def calls_text(calls: list[ToolCall]) -> str:
    """Tool calls as the output checks read them: `name(arguments)`, a line each."""
    return "\n".join(f"{c.function.name}({c.function.arguments})" for c in calls)


def leak_watched(policy: PiiGuard) -> list[str]:
    """The structured PII types an answer must not carry under this policy ([] = no check)."""
    if not policy.enabled or policy.answers == "allow":
        return []
    return [entity for entity in STRUCTURED_TYPES if policy.action(entity) != "allow"]
