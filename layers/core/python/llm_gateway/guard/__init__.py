"""Input checks: API key -> tenant, request size limits, rate limits, input blocklist."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..contracts import GatewayState, GuardResult, TenantContext
from ..errors import AuthenticationFailed, InvalidRequest, PayloadTooLarge, RateLimited
from ..routing import resolve_route

if TYPE_CHECKING:
    from ..deps import Deps


def authenticate(state: GatewayState, deps: Deps) -> TenantContext:
    """Find the tenant whose key digest the caller presented."""
    digest = state.caller.api_key_sha256
    found = deps.keys.get(digest) if digest else None
    if found is None:
        raise AuthenticationFailed("Incorrect API key provided.")
    tenant, key_id = found
    return TenantContext(tenant=tenant, key_id=key_id, user=state.request.user)


def check_size(state: GatewayState, deps: Deps) -> None:
    limits = deps.config.limits
    if state.caller.body_bytes > limits.max_body_bytes:
        raise PayloadTooLarge(f"Request body exceeds {limits.max_body_bytes} bytes.")
    messages = state.request.messages
    if len(messages) > limits.max_messages:
        raise InvalidRequest(f"At most {limits.max_messages} messages are allowed.", param="messages")
    if sum(len(m.text()) for m in messages) > limits.max_prompt_chars:
        raise InvalidRequest(
            f"The messages exceed {limits.max_prompt_chars} characters.",
            param="messages",
            code="prompt_too_long",
        )


def check_rate(context: TenantContext, deps: Deps) -> None:
    """Token buckets per tenant and per user (the key id when the request names no user)."""
    tenant = deps.config.tenants[context.tenant]
    now = deps.clock()
    if tenant.rate_limit is not None:
        wait = deps.limiter.acquire(f"t:{context.tenant}", tenant.rate_limit, now)
        if wait > 0:
            raise RateLimited("Rate limit reached for this tenant.", retry_after_s=wait)
    if tenant.user_rate_limit is not None:
        user = context.user if context.user is not None else f"key:{context.key_id}"
        wait = deps.limiter.acquire(f"u:{context.tenant}:{user}", tenant.user_rate_limit, now)
        if wait > 0:
            raise RateLimited("Rate limit reached for this user.", retry_after_s=wait)


def guard_step(state: GatewayState, deps: Deps) -> GuardResult:
    """Refuse what must not reach a model; protocol failures raise, policy refusals return `blocked`."""
    context = authenticate(state, deps)
    check_size(state, deps)
    resolve_route(deps.config, context.tenant, state.request.model)  # unknown model: 404 before spending a token
    check_rate(context, deps)
    blocklist = deps.input_blocklists[context.tenant]
    for message in state.request.messages:
        rule = blocklist.first_match(message.text())
        if rule is not None:
            return GuardResult(outcome="blocked", tenant=context, layer="blocklist", reason=rule)
    return GuardResult(outcome="allowed", tenant=context)
