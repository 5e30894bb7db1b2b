"""Model choice: the tenant's route table with pinned model versions and ordered fallbacks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import GatewayConfig
from ..contracts import ChatCompletionRequest, GatewayState, RouteResult
from ..errors import ModelNotFound

if TYPE_CHECKING:
    from ..deps import Deps


def resolve_route(config: GatewayConfig, tenant: str, requested: str) -> RouteResult:
    """Turn the request's `model` (a route name or a pinned model the tenant may use) into candidates."""
    tenant_config = config.tenants[tenant]
    route = tenant_config.routes.get(requested)
    if route is not None:
        return RouteResult(route=requested, candidates=route.candidates(), max_tokens=route.max_tokens)
    if requested in tenant_config.allowed_models:
        return RouteResult(route=requested, candidates=[requested])
    raise ModelNotFound(f"The model '{requested}' does not exist or you do not have access to it.", param="model")


def route_step(state: GatewayState, deps: Deps) -> RouteResult:
    """Choose the ordered list of models to try for this request, and hold its worst-case cost on
    the tenant's budgets (`BudgetExceeded` when it does not fit)."""
    from ..budgets import reserve

    route = resolve_route(deps.config, state.tenant().tenant, state.request.model)
    settings = deps.config.tenants[state.tenant().tenant].routes.get(route.route)
    if settings is not None and settings.brief_simple and is_simple(state.request):
        route = route.model_copy(update={"brief": True})
    state.router = route  # the reservation prices the request as the model will get it (route cap)
    reserve(state, deps, route.candidates)
    return route


SIMPLE_MAX_CHARS = 300


def is_simple(request: ChatCompletionRequest) -> bool:
    """One short user question without code or structured output: worth a brevity instruction."""
    turns = [m for m in request.messages if m.role in ("user", "assistant", "tool")]
    if len(turns) != 1 or request.response_format is not None:
        return False
    text = turns[0].text()
    return len(text) <= SIMPLE_MAX_CHARS and "```" not in text
