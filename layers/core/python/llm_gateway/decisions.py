"""What every guard and moderation layer does with its decision: latency and trigger metrics, and
flagged items (and classifier refusals) queued for human review (tier 4)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

from .contracts import GatewayState, GuardDecision
from .ports import ReviewItem, ReviewQueue

if TYPE_CHECKING:
    from .deps import Deps


def submit_for_review(
    state: GatewayState,
    queue: ReviewQueue,
    tenant: str,
    kind: Literal["input", "output"],
    decisions: list[GuardDecision],
    text: str,
    now: float,
    action: Literal["flag", "block"] = "flag",
) -> None:
    """Queue what a layer flagged (let through, but unsure) — or, with `action` block, refused —
    for a person to decide. `text` is what the model saw (input: user and tool messages, PII
    masked) or what it answered (output)."""
    for decision in (d for d in decisions if d.action == action):
        queue.submit(
            ReviewItem(
                item_id=f"{state.request_id}:{kind}:{decision.layer}",
                request_id=state.request_id,
                tenant=tenant,
                kind=kind,
                layer=decision.layer,
                reason=decision.reason,
                score=decision.score,
                text=text,
                created_at=now,
                action=action,
            )
        )


def record_layer(deps: Deps, decision: GuardDecision, started: float) -> None:
    """A guard layer's latency (since `started`; its count is the layer's decisions) and, when it
    flagged, masked, logged or blocked, a trigger labelled with the action."""
    deps.metrics.observe("guard_layer_ms", (time.perf_counter() - started) * 1000, layer=decision.layer)
    if decision.action != "pass":
        deps.metrics.count("guard_triggers", layer=decision.layer, action=decision.action)
