"""Response cache lookup: exact match, scoped to tenant and resolved model version."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

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
    if not lookup:
        deps.metrics.count("cache_lookups", status="bypass")
        return CacheResult(status="bypass", key=key, store=store)
    cached = deps.cache.get(key, deps.clock())
    if cached is not None:
        deps.metrics.count("cache_lookups", status="exact")
        return CacheResult(status="exact", key=key, store=False, response=cached)
    deps.metrics.count("cache_lookups", status="miss")
    return CacheResult(status="miss", key=key, store=store)


class PurgeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(min_length=1)
    model: str | None = None


def purge_caches(deps: Deps, tenant: str, model: str | None = None) -> int:
    """Remove a tenant's cached answers (optionally one model version's); return how many went
    (0 when the store cannot count, e.g. Momento)."""
    removed = deps.cache.purge(tenant, model)
    deps.metrics.count("cache_purges", tenant=tenant)
    return removed
