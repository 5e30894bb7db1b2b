"""Response cache lookup: exact match, then by meaning; both scoped to tenant and resolved model version.

Semantic lookup (when the tenant enables it and `semantic_allowed`): embed the last user message,
search the semantic index within the request's scope (`semantic.scope`: tenant, model version,
system prompt, conversation, response_format, parameters, kb version), and serve the best
candidate the verifier accepts at the tenant's target precision. Any failure on that path is a
miss: the semantic cache may lose hits, never fail a request.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from ..config import SemanticCache
from ..contracts import CacheResult, ChatCompletion, ChatCompletionRequest, GatewayState
from ..routing.step import planned_route
from ..semantic.index import Vector, encode_vector
from ..semantic.near_miss import near_miss
from ..semantic.scope import query_text, semantic_allowed, semantic_scope
from .keys import exact_key

if TYPE_CHECKING:
    from ..deps import Deps

log = logging.getLogger(__name__)


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
    if not (lookup or store):  # `no-store`: nothing to look up, nothing to key an answer by
        deps.metrics.count("cache_lookups", status="bypass")
        return CacheResult(status="bypass", store=False)
    tenant = state.tenant().tenant
    planned = planned_route(state, deps)  # what the router will choose: the model and the request it gets
    model, request = planned.candidates[0], state.model_request(planned)
    key = exact_key(tenant, model, request)
    if lookup:
        cached = deps.cache.get(key, deps.clock())
        if cached is not None:
            deps.metrics.count("cache_lookups", status="exact")
            return CacheResult(status="exact", key=key, store=False, response=cached, route=planned.route)
    settings = deps.config.tenants[tenant].semantic_cache
    semantic = None
    if deps.semantic is not None and settings.enabled and semantic_allowed(request, settings.max_temperature):
        semantic = _embed_query(request, tenant, model)
    if lookup and semantic is not None:
        hit = _semantic_hit(state, deps, settings, key, *semantic)
        if hit is not None:
            deps.metrics.count("cache_lookups", status="semantic")
            return hit.model_copy(update={"route": planned.route})
    status = "miss" if lookup else "bypass"
    deps.metrics.count("cache_lookups", status=status)
    if semantic is None or not store:
        return CacheResult(status=status, key=key, store=store)
    scope, _query, vector = semantic
    return CacheResult(status=status, key=key, store=store, semantic_scope=scope, query_vector=encode_vector(vector))


def _embed_query(request: ChatCompletionRequest, tenant: str, model: str) -> tuple[str, str, Vector] | None:
    """(scope, query text, unit embedding), or None when the embedder fails (then: no semantic cache)."""
    from ..semantic.embeddings import default_embedder

    query = query_text(request)
    try:
        vector = np.asarray(default_embedder().embed_one(query), dtype=np.float32)
    except Exception:  # the embedder is an optimisation: a broken one must not fail requests
        log.exception("query embedding failed; semantic cache skipped")
        return None
    return semantic_scope(tenant, model, request), query, vector


def _semantic_hit(
    state: GatewayState, deps: Deps, settings: SemanticCache, key: str, scope: str, query: str, vector: Vector
) -> CacheResult | None:
    """The best stored answer in this scope that the verifier accepts at the tenant's precision."""
    from ..semantic.verifier import load_verifier

    assert deps.semantic is not None
    try:
        candidates = deps.semantic.search(scope, vector, settings.top_k, deps.clock())
        verifier = load_verifier()
        threshold = verifier.threshold_for(settings.target_precision)
        scored = verifier.rank(query, vector, candidates)
    except Exception:  # as above: lose the hit, keep the request
        log.exception("semantic lookup failed; treated as a miss")
        return None
    for probability, candidate in scored:
        if probability < threshold:
            break
        difference = near_miss(query, candidate.text)
        if difference is not None:  # same words, another number, date, entity...: never the same answer
            deps.metrics.count("semantic_near_miss_vetoed", kind=difference)
            continue
        try:
            response = ChatCompletion.model_validate_json(candidate.response_json)
        except ValueError:  # stored by a release with another response schema
            continue
        deps.metrics.observe("semantic_hit_similarity", candidate.cosine)
        deps.metrics.observe("semantic_hit_score", probability)
        return CacheResult(
            status="semantic",
            key=key,
            store=False,
            response=response,
            score=round(probability, 4),
            similarity=round(candidate.cosine, 4),
        )
    if scored:  # candidates were found but the verifier accepted none of them
        deps.metrics.count("semantic_verifier_rejected")
    return None
