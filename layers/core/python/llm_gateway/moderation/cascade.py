"""The harmful-content cascade for one text: tier 2 scores it, tier 3 (the judge) decides the
uncertain band, tier 4 (human review) gets what the judge could not decide.

    score <  band low                  -> pass                    (layer harmful_content)
    score >= band high                 -> the tenant's action     (layer harmful_content)
    in the band, judge configured      -> the judge's verdict     (layer llm_judge)
    in the band, no judge              -> tier 2's threshold      (layer harmful_content)
    judge failed or out of format      -> tier 2's threshold; a pass becomes `flag` (queued for review)
                                          unless the action is `log` (a dry run queues nothing)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..config import HarmfulGuard
from ..contracts import GuardDecision, TenantContext
from ..errors import ProviderError
from .harmful import load_harmful_classifier
from .judge import JudgeUnparseable, Kind, ask_judge

if TYPE_CHECKING:
    from ..deps import Deps

log = logging.getLogger(__name__)
TIER2 = "harmful_content"
TIER3 = "llm_judge"


def harmful_decision(
    text: str, kind: Kind, policy: HarmfulGuard, deps: Deps, request_id: str, tenant: TenantContext
) -> GuardDecision:
    """The cascade's decision on `text`; reasons name scores and categories, never the text."""
    classifier = load_harmful_classifier()
    assessed = classifier.assess_request(text) if kind == "input" else classifier.assess_answer(text)
    score = round(assessed.score, 4)
    low, high = policy.band if policy.band is not None else classifier.band
    threshold = policy.threshold if policy.threshold is not None else classifier.threshold
    deps.metrics.count("harmful_tier2", kind=kind, zone="low" if score < low else "high" if score >= high else "band")
    if score < low:
        return GuardDecision(layer=TIER2, action="pass", score=score)
    if score >= high:
        return _tier2(score, threshold=0.0, policy=policy, category=assessed.category)
    if policy.judge_model is None:
        return _tier2(score, threshold, policy, assessed.category)
    return _judged(text, kind, policy, deps, request_id, tenant, score, threshold, assessed.category)


def _judged(
    text: str,
    kind: Kind,
    policy: HarmfulGuard,
    deps: Deps,
    request_id: str,
    tenant: TenantContext,
    score: float,
    threshold: float,
    category: str,
) -> GuardDecision:
    if policy.judge_model is None:
        raise RuntimeError("no judge configured")
    try:
        verdict = ask_judge(deps, policy.judge_model, text, kind, request_id, tenant)
    except (ProviderError, JudgeUnparseable) as error:
        log.warning(
            "judge %s gave no verdict (%s); tier 2 decides and the text is queued",
            policy.judge_model,
            type(error).__name__,
        )
        fallback = _tier2(score, threshold, policy, category)
        if fallback.action == "pass" and policy.action != "log":  # a dry run queues nothing for review
            return GuardDecision(
                layer=TIER3,
                action="flag",
                score=score,
                reason=f"judge gave no verdict; {category} score {score:.3f}",
            )
        return fallback
    if verdict.safe:
        return GuardDecision(layer=TIER3, action="pass", score=score, reason="judge: safe")
    return GuardDecision(
        layer=TIER3, action=policy.action, score=score, reason=f"judge: unsafe ({', '.join(verdict.categories)})"
    )


def _tier2(score: float, threshold: float, policy: HarmfulGuard, category: str) -> GuardDecision:
    if score < threshold:
        return GuardDecision(layer=TIER2, action="pass", score=score)
    return GuardDecision(layer=TIER2, action=policy.action, score=score, reason=f"{category} (score {score:.3f})")
