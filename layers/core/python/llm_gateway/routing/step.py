"""Model choice: the tenant's route table with pinned model versions and ordered fallbacks, metadata
pins, and the complexity router (`routing.complexity`) that sends easy requests to cheaper models."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..config import GatewayConfig
from ..contracts import ChatCompletionRequest, GatewayState, RouteResult
from ..errors import InvalidRequest, ModelNotFound
from .candidates import usable_route

if TYPE_CHECKING:
    from ..deps import Deps

log = logging.getLogger(__name__)


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
    """Choose the ordered list of models to try for this request — the planned ones that can take
    it now (`routing.candidates`: its context fits, their endpoint is up) — and hold its worst-case
    cost on the tenant's budgets (`BudgetExceeded` when it does not fit)."""
    from ..budgets import reserve

    route = usable_route(state, deps, planned_route(state, deps))
    tenant = state.tenant().tenant
    if route.pinned or route.complexity is not None:
        reason = "pinned" if route.pinned else "complexity"
        deps.metrics.count("route_choice", tenant=tenant, route=route.route, model=route.candidates[0], reason=reason)
    if route.complexity is not None:
        deps.metrics.observe("route_complexity", route.complexity, tenant=tenant, route=route.route)
    state.router = route  # the reservation prices the request as the model will get it (route cap)
    reserve(state, deps, route.candidates)
    return route


def planned_route(state: GatewayState, deps: Deps) -> RouteResult:
    """The plan the guard step carried in the state (`GuardResult.route`): the cache keys answers by
    its first model and the router starts from it, so the complexity score is computed once a
    request, in one function on AWS. A step run on a state the guard has not planned (a step called
    on its own) plans here."""
    if state.guard is not None and state.guard.route is not None:
        return state.guard.route
    tenant = state.tenant().tenant
    return plan_route(state, deps, tenant, resolve_route(deps.config, tenant, state.request.model))


def plan_route(state: GatewayState, deps: Deps, tenant: str, route: RouteResult) -> RouteResult:
    """The tenant's resolved route's models to try, in order: a metadata pin, else the complexity
    router's tier (then the tiers above it and the route's fallbacks), else the route's own order;
    for a request that uses tools, only the models that take them (`tools_unsupported` when none)."""
    if deps.config.models[route.candidates[0]].kind != "chat":
        raise InvalidRequest(
            f"'{route.route}' is an embedding model: it answers POST /v1/embeddings.",
            param="model",
            code="model_not_supported",
        )
    planned = _ordered(state, deps, tenant, route)
    if not state.request.uses_tools():
        return planned
    models = deps.config.models
    kept = [m for m in planned.candidates if models[m].supports_tools()]
    if not kept:
        names = ", ".join(f"'{m}'" for m in planned.candidates)
        raise InvalidRequest(
            f"This request uses tools, which the models of route '{route.route}' ({names}) do not support.",
            param="tools",
            code="tools_unsupported",
        )
    return planned if kept == planned.candidates else planned.model_copy(update={"candidates": kept})


def _ordered(state: GatewayState, deps: Deps, tenant: str, route: RouteResult) -> RouteResult:
    settings = deps.config.tenants[tenant].routes.get(route.route)
    if settings is None:
        return route
    if settings.brief_simple and is_simple(state.request):
        route = route.model_copy(update={"brief": True})
    pin = next((p for p in settings.pins if p.matches(state.request.metadata)), None)
    if pin is not None:
        return route.model_copy(update={"candidates": settings.candidates_from(pin.model), "pinned": True})
    routing = settings.complexity
    if routing is None:
        return route
    from .complexity import default_scorer, knob_thresholds, tier_of

    try:
        scorer = default_scorer()
        score = scorer.score(state.request)
        prices = [deps.config.models[m].price for m in routing.models]
        thresholds = knob_thresholds(routing, prices, scorer.model)
    except Exception:  # the scorer could not run (its model files): the large model is the safe side
        log.exception(
            "complexity scoring failed for route %s of tenant %s; using its largest model", route.route, tenant
        )
        deps.metrics.count("route_complexity_errors", tenant=tenant, route=route.route)
        return route.model_copy(update={"candidates": settings.candidates_from(routing.models[-1])})
    tier = tier_of(score, thresholds)
    candidates = list(dict.fromkeys([*routing.models[tier:], *settings.fallbacks]))
    return route.model_copy(update={"candidates": candidates, "complexity": round(score, 4)})


SIMPLE_MAX_CHARS = 300


def is_simple(request: ChatCompletionRequest) -> bool:
    """One short user question without code or structured output: worth a brevity instruction."""
    turns = [m for m in request.messages if m.role in ("user", "assistant", "tool")]
    if len(turns) != 1 or request.response_format is not None:
        return False
    text = turns[0].text()
    return len(text) <= SIMPLE_MAX_CHARS and "```" not in text
