"""Budgets that hold under concurrency: reserve the worst case before the model is called, settle
to the actual cost after, release on failure (`BudgetLedger` port).

- Worst case: every candidate model of the route (a fallback may answer), its price, the request's
  input as an upper bound in tokens (UTF-8 bytes + 8 per message: a token of the providers' BPE
  vocabularies is at least one byte) and its output cap (`max_tokens`, else the model's default,
  within its maximum). A request whose worst case does not fit in every one of its budgets is
  refused before anything is spent (429 `insufficient_quota`, code `budget_exceeded`), never
  half-served. Cache hits cost nothing and reserve nothing.
- The reservation is keyed by the request id, so a retried step neither reserves nor settles twice;
  an unsettled reservation expires after the invoke deadline and is reclaimed.
- Counters are per tenant, scope (tenant / key / user) and calendar period (UTC day or month), in
  nano-dollars and tokens. Crossing a share of a budget (`budget_alerts`, default 80 %) emits the
  `budget_alerts` metric and a warning log.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

from .config import Budget, GatewayConfig
from .contracts import ChatCompletionRequest, GatewayState, TenantContext
from .errors import BudgetExceeded
from .identity import pseudonym
from .pipeline import INVOKE_POLICY
from .ports import BudgetLimit, BudgetRefused
from .providers.base import output_limit

if TYPE_CHECKING:
    from .deps import Deps

log = logging.getLogger(__name__)
NANO = 1_000_000_000
MESSAGE_OVERHEAD_TOKENS = 8
RESERVATION_TTL_S = INVOKE_POLICY.deadline_s + 60
# A batch line's reservation lasts as long as a provider batch may take (24 h) and a margin.
BATCH_RESERVATION_TTL_S = 26 * 3600


def nano_usd(usd: float) -> int:
    """Dollars to nano-dollars, rounded up (a reservation never falls short by rounding)."""
    return math.ceil(round(usd * NANO, 3))


def period_start(period: str, now: float) -> str:
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    return day if period == "day" else day[:7]


def budget_key(tenant: TenantContext, budget: Budget, now: float) -> str:
    if budget.scope == "tenant":
        who = "tenant"
    elif budget.scope == "key":
        who = f"key:{tenant.key_id}"
    else:
        who = f"user:{pseudonym(tenant.tenant, tenant.user) or 'key:' + tenant.key_id}"
    return f"{tenant.tenant}/{who}/{budget.period}:{period_start(budget.period, now)}"


def limits_for(config: GatewayConfig, tenant: TenantContext, now: float) -> list[BudgetLimit]:
    return [
        BudgetLimit(
            key=budget_key(tenant, budget, now),
            max_nusd=None if budget.usd is None else nano_usd(budget.usd),
            max_tokens=budget.tokens,
        )
        for budget in config.tenants[tenant.tenant].budgets
    ]


def input_token_bound(request: ChatCompletionRequest) -> int:
    return sum(len(m.text().encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS for m in request.messages)


def worst_case(config: GatewayConfig, request: ChatCompletionRequest, candidates: list[str]) -> tuple[int, int]:
    """(nano-dollars, tokens) the request can cost at most, over the route's candidates: each of
    its `n` choices may be a call of its own, paying for the prompt again."""
    prompt = input_token_bound(request)
    choices = request.choices_wanted()
    nusd = tokens = 0
    for model_id in candidates:
        model = config.models[model_id]
        completion = output_limit(request, model)
        # Every input token written to the provider's cache, where a write costs more than input.
        writes = prompt if (model.price.cache_write_per_mtok or 0.0) > model.price.input_per_mtok else 0
        nusd = max(nusd, choices * nano_usd(model.price.cost(prompt, completion, 0, writes)))
        tokens = max(tokens, choices * (prompt + completion))
    return nusd, tokens


def reserve(state: GatewayState, deps: Deps, candidates: list[str]) -> None:
    """Hold the worst case on every budget of the request (router step), or refuse it."""
    tenant = state.tenant()
    if deps.budgets is None or not deps.config.tenants[tenant.tenant].budgets:
        return
    now = deps.clock()
    limits = limits_for(deps.config, tenant, now)
    nusd, tokens = worst_case(deps.config, state.model_request(), candidates)
    try:
        ttl = RESERVATION_TTL_S if state.caller.batch_tenant is None else BATCH_RESERVATION_TTL_S
        deps.budgets.reserve(state.request_id, limits, nusd, tokens, now + ttl, now)
    except BudgetRefused as refused:
        deps.metrics.count("budget_refusals", tenant=tenant.tenant)
        period = {"day": "daily", "month": "monthly"}[refused.key.rsplit("/", 1)[-1].split(":", 1)[0]]
        raise BudgetExceeded(
            f"This request could cost more than is left of a {period} budget. Lower max_tokens or try later."
        ) from None
    deps.metrics.count("budget_reservations", tenant=tenant.tenant)


def reserve_check(
    deps: Deps, tenant: TenantContext, reservation_id: str, model_id: str, request: ChatCompletionRequest
) -> bool:
    """Hold a checking call's worst case (a judge, a consistency check) on the request's budgets;
    False when it does not fit (the caller goes without the check)."""
    if deps.budgets is None or not deps.config.tenants[tenant.tenant].budgets:
        return True
    now = deps.clock()
    nusd, tokens = worst_case(deps.config, request, [model_id])
    try:
        deps.budgets.reserve(
            reservation_id, limits_for(deps.config, tenant, now), nusd, tokens, now + RESERVATION_TTL_S, now
        )
    except BudgetRefused:
        deps.metrics.count("budget_refusals", tenant=tenant.tenant, kind="check")
        return False
    return True


def settle_check(deps: Deps, tenant: TenantContext, reservation_id: str, usd: float, tokens: int) -> None:
    """Charge a checking call's actual cost (0 releases the hold)."""
    if deps.budgets is None or not deps.config.tenants[tenant.tenant].budgets:
        return
    nusd = nano_usd(usd)
    if deps.budgets.settle(reservation_id, nusd, tokens) and nusd + tokens > 0:
        _alerts(deps, tenant)


def settle(state: GatewayState, deps: Deps) -> None:
    """Charge the actual cost (finish) or release the hold (a failed request), then check alerts."""
    if deps.budgets is None or state.guard is None or state.guard.tenant is None:
        return
    tenant = state.guard.tenant
    if not deps.config.tenants[tenant.tenant].budgets:
        return
    nusd = tokens = 0
    if state.invoke is not None:
        usage = state.invoke.response.usage
        nusd, tokens = nano_usd(usage.cost_usd), usage.prompt_tokens + usage.completion_tokens
    if deps.budgets.settle(state.request_id, nusd, tokens) and nusd + tokens > 0:
        _alerts(deps, tenant)


def _alerts(deps: Deps, tenant: TenantContext) -> None:
    """Raise each alert share a budget has reached, once per budget period (the ledger's marker)."""
    assert deps.budgets is not None
    tenant_config = deps.config.tenants[tenant.tenant]
    now = deps.clock()
    for budget, limit in zip(tenant_config.budgets, limits_for(deps.config, tenant, now), strict=True):
        spent = deps.budgets.usage(limit.key)
        for cap, after in ((limit.max_nusd, spent.spent_nusd), (limit.max_tokens, spent.spent_tokens)):
            if cap is None:
                continue
            for share in tenant_config.budget_alerts:
                if after >= share * cap and deps.budgets.claim_alert(limit.key, f"{share:g}"):
                    deps.metrics.count(
                        "budget_alerts",
                        tenant=tenant.tenant,
                        scope=budget.scope,
                        period=budget.period,
                        share=f"{share:g}",
                    )
                    log.warning(
                        "budget alert: %s %s budget of tenant %s passed %.0f %%",
                        budget.scope,
                        budget.period,
                        tenant.tenant,
                        share * 100,
                    )
