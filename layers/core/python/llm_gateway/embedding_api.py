"""`POST /v1/embeddings`: the tenant's key, its routes, rate limits, input blocklist, PII policy,
budgets, usage and audit records apply as they do to chat completions; the answer comes from the
packaged embedding model (provider `embedder`, in process) or an OpenAI embedding model.

- **Routes.** `model` names a route (or an allowed model) whose models are `kind: embedding`; a
  chat route is a 400 `model_not_supported` here, as an embedding route is on chat completions.
  The route's models are tried in order: a provider that fails goes to the next.
- **Guards.** The tenant's input blocklist refuses an input that matches (400 `blocklist`). For an
  upstream model, PII the tenant masks is replaced by placeholders before the texts leave the
  gateway (a `reject` type refuses the request); the packaged model runs in process and reads the
  texts as sent. The other input layers (injection, topics, harmful content) judge requests for
  answers, and do not run on texts to embed.
- **Cache.** Each input's vector is remembered in process by tenant, model, dimensions and text
  (`x-gateway-cache: exact` when every input was), for the configured cache TTL.
- **Accounting.** The worst case (every input byte a token) is held on the tenant's budgets, then
  settled at the provider's token count (the packaged model: its tokenizer's); usage and audit
  records as for a chat completion, with no completion tokens.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

from .budgets import limits_for, nano_usd
from .config import ModelConfig
from .contracts import CallerContext, Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage, TenantContext
from .errors import (
    AllModelsFailed,
    BudgetExceeded,
    GatewayError,
    GuardrailBlocked,
    InvalidRequest,
    ProviderBadRequest,
    ProviderError,
)
from .guard.step import authenticate_key, check_rate, mask_texts
from .identity import pseudonym
from .ports import AuditRecord, BudgetRefused, Outcome, UsageRecord
from .routing.step import resolve_route

if TYPE_CHECKING:
    from .deps import Deps

LOCAL_DIMENSIONS = 384
RESERVATION_TTL_S = 300.0


class EmbeddingAnswer:
    """The answer and what the HTTP layer reports about it."""

    def __init__(self, body: EmbeddingList, route: str, cached: bool) -> None:
        self.body, self.route, self.cached = body, route, cached


class _Vectors:
    """Recent vectors by (tenant, model, dimensions, text) digest, with their expiry; float32, so
    4,096 of OpenAI's largest (3,072 dimensions) hold ~50 MB."""

    def __init__(self, size: int = 4096) -> None:
        self._rows: OrderedDict[str, tuple[float, np.ndarray]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: str, now: float) -> list[float] | None:
        with self._lock:
            found = self._rows.get(key)
            if found is None or found[0] <= now:
                return None
            self._rows.move_to_end(key)
            return found[1].tolist()  # type: ignore[no-any-return]

    def put(self, key: str, vector: list[float], expires_at: float) -> None:
        packed = np.asarray(vector, dtype=np.float32)
        with self._lock:
            self._rows[key] = (expires_at, packed)
            while len(self._rows) > self._size:
                self._rows.popitem(last=False)


_vectors = _Vectors()


def _key(tenant: str, model: str, dimensions: int | None, text: str) -> str:
    return hashlib.sha256("\x1f".join([tenant, model, str(dimensions or ""), text]).encode()).hexdigest()


def embed_request(
    deps: Deps, request: EmbeddingRequest, caller: CallerContext, request_id: str, received_at: float
) -> EmbeddingAnswer:
    """Answer the request, or raise the `GatewayError` it ends with (audited either way)."""
    context: TenantContext | None = None
    try:
        context = authenticate_key(caller.api_key_sha256, deps, request.user)
        answer, audit = _answer(deps, request, caller, context, request_id)
    except GatewayError as error:
        _audit(deps, request_id, received_at, caller, context, None, "error", error.code or type(error).__name__)
        raise
    _audit(deps, request_id, received_at, caller, context, audit, "cache_hit" if answer.cached else "ok", None)
    return answer


def _answer(
    deps: Deps, request: EmbeddingRequest, caller: CallerContext, context: TenantContext, request_id: str
) -> tuple[EmbeddingAnswer, tuple[str, str, int, float]]:
    tenant = deps.config.tenants[context.tenant]
    texts = request.texts()
    if sum(len(t) for t in texts) > deps.config.limits.max_prompt_chars:
        raise InvalidRequest(f"The input exceeds {deps.config.limits.max_prompt_chars} characters.", param="input")
    route = resolve_route(deps.config, context.tenant, request.model)
    models = [(m, deps.config.models[m]) for m in route.candidates]
    if any(model.kind != "embedding" for _, model in models):
        raise InvalidRequest(
            f"'{route.route}' is not an embedding model: it answers POST /v1/chat/completions.",
            param="model",
            code="model_not_supported",
        )
    check_rate(context, deps, caller.client_ip)
    blocklist = deps.input_blocklists[context.tenant]
    for text in texts:
        rule = blocklist.first_match(text)
        if rule is not None:
            raise GuardrailBlocked("The request was refused by the gateway's input policy.", code="blocklist")
    now = deps.clock()
    keys = [_key(context.tenant, route.candidates[0], request.dimensions, t) for t in texts]
    cached = [_vectors.get(k, now) for k in keys]
    if all(v is not None for v in cached):
        deps.metrics.count("embedding_lookups", status="exact", tenant=context.tenant)
        vectors = [v for v in cached if v is not None]
        body = _body(vectors, request, route.candidates[0], 0, 0.0)
        return EmbeddingAnswer(body, route.route, cached=True), (route.route, route.candidates[0], 0, 0.0)
    deps.metrics.count("embedding_lookups", status="miss", tenant=context.tenant)
    _reserve(deps, context, request_id, texts, models)
    tokens, cost = 0, 0.0
    try:
        model_id, vectors, tokens = _embed(deps, context, texts, models, request.dimensions)
        cost = deps.config.models[model_id].price.cost(tokens, 0, 0, 0)
    finally:
        _settle(deps, context, request_id, cost, tokens)
    expires_at = now + (tenant.cache_ttl_s if tenant.cache_ttl_s is not None else deps.config.cache.ttl_s)
    for key, vector in zip(keys, vectors, strict=True):
        _vectors.put(key, vector, expires_at)
    deps.usage.record(
        UsageRecord(
            request_id=request_id,
            ts=now,
            tenant=context.tenant,
            key_id=context.key_id,
            user_hash=pseudonym(context.tenant, context.user),
            model=model_id,
            prompt_tokens=tokens,
            completion_tokens=0,
            cached_tokens=0,
            cost_usd=cost,
        )
    )
    deps.metrics.count("embedding_inputs", len(texts), tenant=context.tenant, model=model_id)
    body = _body(vectors, request, model_id, tokens, cost)
    return EmbeddingAnswer(body, route.route, cached=False), (route.route, model_id, tokens, cost)


def _embed(
    deps: Deps,
    context: TenantContext,
    texts: list[str],
    models: list[tuple[str, ModelConfig]],
    dimensions: int | None,
) -> tuple[str, list[list[float]], int]:
    """(model, vectors, input tokens) from the first of the route's models that answers."""
    failures: list[str] = []
    for model_id, model in models:
        try:
            if model.provider == "embedder":
                vectors, tokens = _local(texts, dimensions)
            else:
                from .providers.openai import OpenAIProvider

                sent = _masked(deps, context, texts)
                provider = deps.providers.get(model.provider)
                assert isinstance(provider, OpenAIProvider)  # EMBEDDING_PROVIDERS: embedder, openai
                vectors, tokens = provider.embed(sent, model_id, model, dimensions)
            return model_id, vectors, tokens
        except ProviderBadRequest as error:
            raise InvalidRequest(str(error.message), param=error.param) from error
        except ProviderError as error:
            failures.append(f"{model_id}: {error.message}")
            deps.metrics.count("embedding_failures", model=model_id)
    raise AllModelsFailed("No embedding model of the route answered: " + "; ".join(failures))


def _local(texts: list[str], dimensions: int | None) -> tuple[list[list[float]], int]:
    if dimensions is not None and dimensions != LOCAL_DIMENSIONS:
        raise InvalidRequest(
            f"The packaged embedding model gives {LOCAL_DIMENSIONS} dimensions; `dimensions` must be omitted "
            f"or {LOCAL_DIMENSIONS}.",
            param="dimensions",
        )
    from .semantic.embeddings import default_embedder

    embedder = default_embedder()
    matrix = embedder.embed(texts)
    return [row.tolist() for row in np.asarray(matrix, dtype=np.float32)], embedder.count_tokens(texts)


def _masked(deps: Deps, context: TenantContext, texts: list[str]) -> list[str]:
    """The texts as an upstream may see them under the tenant's PII policy."""
    policy = deps.config.tenants[context.tenant].guards.pii
    if not policy.enabled:
        return texts
    decision, masked = mask_texts(texts, policy)
    if decision.action == "block":
        raise GuardrailBlocked("The input holds personal data this tenant does not allow.", code="pii")
    return masked


def _body(vectors: list[list[float]], request: EmbeddingRequest, model: str, tokens: int, cost: float) -> EmbeddingList:
    def encoded(vector: list[float]) -> list[float] | str:
        if request.encoding_format == "float":
            return vector
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")

    return EmbeddingList(
        data=[Embedding(index=i, embedding=encoded(v)) for i, v in enumerate(vectors)],
        model=model,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens, cost_usd=cost),
    )


def _reserve(
    deps: Deps, context: TenantContext, request_id: str, texts: list[str], models: list[tuple[str, ModelConfig]]
) -> None:
    """Hold the worst case (a token per input byte, at the dearest model) on the tenant's budgets."""
    if deps.budgets is None or not deps.config.tenants[context.tenant].budgets:
        return
    tokens = sum(len(t.encode("utf-8")) for t in texts)
    nusd = max(nano_usd(model.price.cost(tokens, 0, 0, 0)) for _, model in models)
    now = deps.clock()
    try:
        deps.budgets.reserve(
            request_id, limits_for(deps.config, context, now), nusd, tokens, now + RESERVATION_TTL_S, now
        )
    except BudgetRefused:
        deps.metrics.count("budget_refusals", tenant=context.tenant)
        raise BudgetExceeded("This request could cost more than is left of a budget.") from None


def _settle(deps: Deps, context: TenantContext, request_id: str, cost: float, tokens: int) -> None:
    if deps.budgets is None or not deps.config.tenants[context.tenant].budgets:
        return
    deps.budgets.settle(request_id, nano_usd(cost), tokens)


def _audit(
    deps: Deps,
    request_id: str,
    received_at: float,
    caller: CallerContext,
    context: TenantContext | None,
    answered: tuple[str, str, int, float] | None,
    outcome: Outcome,
    error_code: str | None,
) -> None:
    route, model, tokens, cost = answered if answered is not None else (None, None, 0, 0.0)
    tenant = context.tenant if context is not None else None
    deps.audit.record(
        AuditRecord(
            request_id=request_id,
            ts=received_at,
            tenant=tenant,
            key_id=context.key_id if context is not None else None,
            user_hash=pseudonym(tenant, context.user) if context is not None and tenant is not None else None,
            client_ip_hash=pseudonym(tenant or "", caller.client_ip),
            route=route,
            model=model,
            provider=None if model is None else deps.config.models[model].provider,
            cache="exact" if outcome == "cache_hit" else ("miss" if answered is not None else None),
            prompt_tokens=tokens,
            completion_tokens=0,
            cached_tokens=0,
            cost_usd=cost,
            latency_ms=round((time.time() - received_at) * 1000, 3),
            attempts=0 if answered is None else 1,
            outcome=outcome,
            error_code=error_code,
        )
    )
