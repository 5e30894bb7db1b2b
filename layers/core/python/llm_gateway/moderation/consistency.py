"""Groundedness and factual consistency of answers (moderate step, `guards.grounded`).

With `context` in the request, every claim of the answer is scored against it (`grounding`).
A sampled share of answers (`check_sample`) also goes to a second model (`check_model`), which
says whether the answer is consistent with the context, or, without context, factually right for
the question. Its reply is parsed strictly: `consistent`, or `inconsistent` and a line of claim
numbers; anything else leaves the answer as it is and counts as unparseable.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from ..config import GroundedGuard
from ..contracts import GatewayState, GuardDecision
from ..errors import ProviderError
from .grounding import claims, support
from .judge import JudgeUnparseable, ask_model

if TYPE_CHECKING:
    from ..deps import Deps

GROUNDED = "groundedness"
CONSISTENCY = "factual_consistency"
_NUMBERS = re.compile(r"\d+")


def sampled(request_id: str, share: float) -> bool:
    """A stable choice per request: the same request id is always in or out of the sample."""
    if share <= 0:
        return False
    bucket = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:4], "big") / 2**32
    return bucket < share


def grounded_decision(answer: str, passages: list[str], policy: GroundedGuard) -> GuardDecision:
    """Claims below the threshold make the decision flag or withhold; the reason counts claims
    and names their numbers, never their text (decisions reach logs and the audit trail)."""
    from ..semantic.embeddings import default_embedder

    scored = support(answer, passages, default_embedder().embed)
    if not scored:
        return GuardDecision(layer=GROUNDED, action="pass", reason="no claims")
    weak = [i for i, s in enumerate(scored, start=1) if s.support < policy.threshold]
    share = round(1 - len(weak) / len(scored), 4)
    if not weak:
        return GuardDecision(layer=GROUNDED, action="pass", score=share)
    action = "block" if policy.action == "withhold" else "flag"
    reason = f"{len(weak)} of {len(scored)} claims unsupported (claims {', '.join(map(str, weak))})"
    return GuardDecision(layer=GROUNDED, action=action, score=share, reason=reason)


def consistency_prompt(question: str, answer: str, passages: list[str] | None) -> str:
    numbered = "\n".join(f"{i}. {claim}" for i, claim in enumerate(claims(answer) or [answer], start=1))
    if passages:
        source = "CONTEXT:\n" + "\n\n".join(passages)
        task = "Is every numbered claim fully supported by the CONTEXT?"
    else:
        source = f"QUESTION:\n{question}"
        task = "Is every numbered claim factually correct, as an answer to the QUESTION?"
    return (
        f"{source}\n\nANSWER CLAIMS:\n{numbered}\n\n{task}\n"
        "Reply with the single word 'consistent', or with 'inconsistent' and, on a second line, the "
        "numbers of the claims that are not, comma-separated (e.g. 2,3). Reply with nothing else."
    )


def parse_consistency(reply: str) -> list[int]:
    """[] for consistent, the claim numbers for inconsistent; `JudgeUnparseable` otherwise."""
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    if len(lines) == 1 and lines[0].lower() == "consistent":
        return []
    if len(lines) == 2 and lines[0].lower() == "inconsistent":
        parts = [p.strip() for p in lines[1].split(",")]
        if parts and all(p.isdigit() and int(p) > 0 for p in parts):
            return sorted({int(p) for p in parts})
    raise JudgeUnparseable("expected 'consistent', or 'inconsistent' and a line of claim numbers")


def consistency_decision(state: GatewayState, deps: Deps, answer: str, policy: GroundedGuard) -> GuardDecision | None:
    """The second model's verdict on a sampled answer; None when not sampled or undecided."""
    if policy.check_model is None or not sampled(state.request_id, policy.check_sample):
        return None
    request = state.model_request()
    question = next((m.text() for m in reversed(request.messages) if m.role == "user"), "")
    prompt = consistency_prompt(question, answer, state.context_passages())
    try:
        wrong = ask_model(
            deps, policy.check_model, prompt, parse_consistency, "consistency", state.request_id, state.tenant(), 24
        )
    except (ProviderError, JudgeUnparseable):
        return GuardDecision(layer=CONSISTENCY, action="pass", reason="no verdict")
    if not wrong:
        return GuardDecision(layer=CONSISTENCY, action="pass", reason="consistent")
    action = "block" if policy.action == "withhold" else "flag"
    return GuardDecision(layer=CONSISTENCY, action=action, reason=f"inconsistent claims {', '.join(map(str, wrong))}")
