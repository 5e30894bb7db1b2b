"""Output moderation. Tier 1: the tenant's keyword/regex blocklist; then PII in the answer (values
the model produced itself: redacted or withheld per the tenant's `guards.pii.answers`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import PiiGuard
from ..contracts import GatewayState, ModerateResult
from ..guard.pii import STRUCTURED_TYPES, find_pii, redact

if TYPE_CHECKING:
    from ..deps import Deps


def moderate_step(state: GatewayState, deps: Deps) -> ModerateResult:
    """Check the model's answer: the tenant's output blocklist, then PII the answer contains."""
    if state.invoke is None:
        raise RuntimeError("moderate runs after invoke")
    tenant = state.tenant().tenant
    text = state.invoke.response.text()
    rule = deps.output_blocklists[tenant].first_match(text)
    if rule is not None:
        return ModerateResult(outcome="filtered", layer="blocklist", rule=rule)
    policy = deps.config.tenants[tenant].guards.pii
    entities = leak_watched(policy)
    spans = find_pii(text, entities) if entities else []
    if not spans:
        return ModerateResult(outcome="passed")
    types = ", ".join(sorted({span.entity for span in spans}))
    deps.metrics.count("guard_triggers", layer="pii_leak", action=policy.answers)
    if policy.answers == "withhold":
        return ModerateResult(outcome="filtered", layer="pii_leak", rule=types)
    return ModerateResult(outcome="redacted", layer="pii_leak", rule=types, content=redact(text, spans))


def leak_watched(policy: PiiGuard) -> list[str]:
    """The structured PII types an answer must not carry under this policy ([] = no check)."""
    if not policy.enabled or policy.answers == "allow":
        return []
    return [entity for entity in STRUCTURED_TYPES if policy.action(entity) != "allow"]
