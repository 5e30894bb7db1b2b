"""Output moderation. Tier 1: the tenant's keyword/regex blocklist."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..contracts import GatewayState, ModerateResult

if TYPE_CHECKING:
    from ..deps import Deps


def moderate_step(state: GatewayState, deps: Deps) -> ModerateResult:
    """Check the model's answer against the tenant's output blocklist."""
    if state.invoke is None:
        raise RuntimeError("moderate runs after invoke")
    blocklist = deps.output_blocklists[state.tenant().tenant]
    rule = blocklist.first_match(state.invoke.response.text())
    if rule is None:
        return ModerateResult(outcome="passed")
    return ModerateResult(outcome="filtered", layer="blocklist", rule=rule)
