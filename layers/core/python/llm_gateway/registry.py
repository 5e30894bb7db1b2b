"""The model registry's rules (docs/experiments.md): a model of the configuration is a pinned
version with a lifecycle state and an optional retirement date.

- A provider's moving alias (a name the provider points at a newer version from time to time:
  anything ending in `-latest`, and the names below) is refused for `openai` and `anthropic`
  models unless the model says `allow_unpinned: true`: a route would change behaviour with no
  change of its own. The refusal names a pinned version to use instead.
- A route may not name a `retired` model.
- A model a route names that retires within `RETIREMENT_WARNING_DAYS` is logged at start-up and
  counted in the metrics (`model_retiring{model, days}`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import GatewayConfig, ModelConfig, TenantConfig
    from .observability import MetricsSink

log = logging.getLogger("llm_gateway.registry")
RETIREMENT_WARNING_DAYS = 30

# alias -> a pinned version it has pointed at (for the refusal's advice)
ALIASES: dict[str, dict[str, str]] = {
    "openai": {
        "gpt-4o": "gpt-4o-2024-08-06",
        "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
        "gpt-4-turbo": "gpt-4-turbo-2024-04-09",
        "gpt-4": "gpt-4-0613",
        "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
        "gpt-4.1": "gpt-4.1-2025-04-14",
        "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
        "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
        "gpt-4.5-preview": "gpt-4.5-preview-2025-02-27",
        "gpt-5": "gpt-5-2025-08-07",
        "gpt-5-mini": "gpt-5-mini-2025-08-07",
        "gpt-5-nano": "gpt-5-nano-2025-08-07",
        "o1": "o1-2024-12-17",
        "o1-mini": "o1-mini-2024-09-12",
        "o3": "o3-2025-04-16",
        "o3-mini": "o3-mini-2025-01-31",
        "o4-mini": "o4-mini-2025-04-16",
        "text-embedding-3-small": "",
        "text-embedding-3-large": "",
    },
    "anthropic": {
        "claude-3-5-sonnet": "claude-3-5-sonnet-20241022",
        "claude-3-5-haiku": "claude-3-5-haiku-20241022",
        "claude-3-7-sonnet": "claude-3-7-sonnet-20250219",
        "claude-sonnet-4-0": "claude-sonnet-4-20250514",
        "claude-sonnet-4": "claude-sonnet-4-20250514",
        "claude-opus-4-0": "claude-opus-4-20250514",
        "claude-opus-4": "claude-opus-4-20250514",
        "claude-opus-4-1": "claude-opus-4-1-20250805",
        "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
        "claude-haiku-4-5": "claude-haiku-4-5-20251001",
    },
}
# OpenAI's embedding models have no dated versions: naming them is as pinned as it gets
_UNVERSIONED = {"text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"}


def alias_advice(provider: str, provider_name: str) -> str | None:
    """Why `provider_name` is a moving alias of `provider` and what to name instead; None when it is not."""
    known = ALIASES.get(provider)
    provider_name = provider_name.strip().lower().removeprefix(f"{provider}/")  # as the provider reads it
    if known is None or provider_name in _UNVERSIONED:
        return None
    base = provider_name.removesuffix("-latest")
    if base == provider_name and provider_name not in known:
        return None
    pinned = known.get(base) or known.get(provider_name)
    instead = f" (e.g. {pinned})" if pinned else ""
    return (
        f"'{provider_name}' is a moving alias of {provider}: name a pinned version{instead} or set allow_unpinned: true"
    )


def registry_problems(models: Mapping[str, ModelConfig], tenants: Mapping[str, TenantConfig]) -> list[str]:
    """`location: problem` for each unpinned alias and each route naming a retired model."""
    problems = []
    for name, model in models.items():
        advice = None if model.allow_unpinned else alias_advice(model.provider, model.provider_model or name)
        if advice is not None:
            problems.append(f"models.{name}: {advice}")

    def retired(name: str | None) -> bool:
        return name is not None and name in models and models[name].lifecycle == "retired"

    for tenant_name, tenant in tenants.items():
        where = f"tenants.{tenant_name}"
        for route_name, route in tenant.routes.items():
            problems += [f"{where}.routes.{route_name}: model '{m}' is retired" for m in route.models() if retired(m)]
            if route.shadow is not None and retired(route.shadow.model):
                problems.append(f"{where}.routes.{route_name}.shadow: model '{route.shadow.model}' is retired")
        problems += [f"{where}.allowed_models: model '{m}' is retired" for m in tenant.allowed_models if retired(m)]
        for field, checker in (
            ("guards.harmful.judge_model", tenant.guards.harmful.judge_model),
            ("guards.grounded.check_model", tenant.guards.grounded.check_model),
        ):
            if retired(checker):
                problems.append(f"{where}.{field}: model '{checker}' is retired")
    return problems


def retiring(config: GatewayConfig, today: date, within_days: int = RETIREMENT_WARNING_DAYS) -> dict[str, int]:
    """The models a route names that retire within `within_days` of `today`: model -> days left."""
    named = {m for tenant in config.tenants.values() for route in tenant.routes.values() for m in route.models()}
    found = {}
    for name in sorted(named):
        retires_on = config.models[name].retires_on
        if retires_on is not None and (retires_on - today).days <= within_days:
            found[name] = (retires_on - today).days
    return found


def warn_retiring(config: GatewayConfig, metrics: MetricsSink, today: date) -> dict[str, int]:
    """Log and count each model a route names that retires soon (at start-up)."""
    found = retiring(config, today)
    for name, days in found.items():
        when = "retired" if days < 0 else f"retires in {days} days"
        log.warning("model %s %s (%s): move its routes to another model", name, when, config.models[name].retires_on)
        metrics.count("model_retiring", model=name, days=str(max(days, 0)))
    return found
