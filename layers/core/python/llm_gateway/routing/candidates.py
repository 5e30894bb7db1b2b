"""Which of the planned candidates can take this request now. Each check keeps the candidates that
pass it, in order; when it would keep none, it refuses the request with its own error:

1. context: the model's `context_tokens` holds the request's messages (at least
   `context_window.prompt_token_floor` tokens) plus the completion the caller asked for
   (`max_tokens`, within the route's cap and the model's maximum; without one, at least one token).
   A model without `context_tokens` always passes. None fits: 400 `context_length_exceeded`,
   naming the largest window among the candidates.
2. endpoint: a model on an endpoint `serve` runs (`deps.model_endpoints`) while that endpoint is
   down (crashed, restarting). None left: 503 that says the endpoint is restarting and why.

Skipped candidates are counted (`route_skips`, by reason) so that a route that keeps falling back
for size shows."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..context_window import context_exceeded, prompt_token_floor
from ..contracts import GatewayState, RouteResult
from ..model_endpoint import endpoint_down

if TYPE_CHECKING:
    from ..deps import Deps

Check = Callable[[GatewayState, "Deps", RouteResult, list[str]], list[str]]


def fits_context(state: GatewayState, deps: Deps, route: RouteResult, candidates: list[str]) -> list[str]:
    """The candidates whose context window holds the request; refuses it when none does."""
    models = deps.config.models
    if all(models[m].context_tokens is None for m in candidates):
        return candidates
    prompt = prompt_token_floor(state.model_request(route))
    asked = state.request.output_limit()  # the caller's own cap; the route's is only a ceiling
    if asked is not None and route.max_tokens is not None:
        asked = min(asked, route.max_tokens)

    def completion(model_id: str) -> int:
        return 0 if asked is None else min(asked, models[model_id].max_output_tokens)

    def fits(model_id: str) -> bool:
        limit = models[model_id].context_tokens
        return limit is None or prompt + max(1, completion(model_id)) <= limit

    kept = [m for m in candidates if fits(m)]
    if kept:
        return kept
    widest = max(candidates, key=lambda m: models[m].context_tokens or 0)
    limit = models[widest].context_tokens
    assert limit is not None  # every candidate has one, or one would have fit
    raise context_exceeded(limit, prompt, completion(widest))


def endpoint_up(state: GatewayState, deps: Deps, route: RouteResult, candidates: list[str]) -> list[str]:
    """The candidates not served by a supervised endpoint while it is down; refuses the request
    when every one of them is (saying why the first of those endpoints is down)."""
    kept, first_down = candidates, None
    for monitor in deps.model_endpoints:
        if not monitor.models.intersection(kept):
            continue
        health = monitor.health()
        if not health.ready:
            kept = [m for m in kept if m not in monitor.models]
            first_down = first_down or health
    if not kept and first_down is not None:
        raise endpoint_down(first_down)
    return kept


CHECKS: tuple[tuple[str, Check], ...] = (("context", fits_context), ("endpoint", endpoint_up))


def usable_route(state: GatewayState, deps: Deps, route: RouteResult) -> RouteResult:
    """`route` with the candidates every check keeps (or the first check's refusal)."""
    candidates = route.candidates
    for reason, check in CHECKS:
        kept = check(state, deps, route, candidates)
        for model in candidates:
            if model not in kept:
                deps.metrics.count("route_skips", route=route.route, model=model, reason=reason)
        candidates = kept
    if candidates == route.candidates:
        return route
    return route.model_copy(update={"candidates": candidates})
