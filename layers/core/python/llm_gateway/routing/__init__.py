"""Model choice: the tenant's route table with pinned model versions and ordered fallbacks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import GatewayConfig
from ..contracts import GatewayState, RouteResult
from ..errors import ModelNotFound

if TYPE_CHECKING:
    from ..deps import Deps


def resolve_route(config: GatewayConfig, tenant: str, requested: str) -> RouteResult:
    """Turn the request's `model` (a route name or a pinned model the tenant may use) into candidates."""
    tenant_config = config.tenants[tenant]
    route = tenant_config.routes.get(requested)
    if route is not None:
        return RouteResult(route=requested, candidates=route.candidates())
    if requested in tenant_config.allowed_models:
        return RouteResult(route=requested, candidates=[requested])
    raise ModelNotFound(f"The model '{requested}' does not exist or you do not have access to it.", param="model")


def route_step(state: GatewayState, deps: Deps) -> RouteResult:
    """Choose the ordered list of models to try for this request, and hold its worst-case cost on
    the tenant's budgets (`BudgetExceeded` when it does not fit)."""
    from ..budgets import reserve

    route = resolve_route(deps.config, state.tenant().tenant, state.request.model)
    reserve(state, deps, route.candidates)
    return route
