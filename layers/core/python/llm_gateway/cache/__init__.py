"""Response cache lookup: exact match, scoped to tenant and resolved model version."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..contracts import CacheResult, GatewayState
from ..routing import resolve_route
from .keys import exact_key

if TYPE_CHECKING:
    from ..deps import Deps


def cache_directives(cache_control: str | None) -> tuple[bool, bool]:
    """(lookup, store) allowed by a `Cache-Control` request header: no-cache skips the lookup,
    no-store skips both."""
    if not cache_control:
        return True, True
    directives = {d.strip().lower() for d in cache_control.split(",")}
    no_store = "no-store" in directives
    return not (no_store or "no-cache" in directives), not no_store


def cache_lookup_step(state: GatewayState, deps: Deps) -> CacheResult:
    """Serve a stored answer when an identical request was answered by the same model version."""
    if not deps.config.cache.enabled:
        return CacheResult(status="bypass", store=False)
    lookup, store = cache_directives(state.caller.cache_control)
    tenant = state.tenant().tenant
    model = resolve_route(deps.config, tenant, state.request.model).candidates[0]
    key = exact_key(tenant, model, state.request)
    if lookup:
        cached = deps.cache.get(key, deps.clock())
        if cached is not None:
            return CacheResult(status="exact", key=key, store=False, response=cached)
        return CacheResult(status="miss", key=key, store=store)
    return CacheResult(status="bypass", key=key, store=store)
