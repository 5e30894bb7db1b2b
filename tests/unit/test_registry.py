"""The model registry's rules: a provider's moving alias (`gpt-4o`, `claude-sonnet-4-5-latest`) is
refused by config validation unless the model allows it, naming a pinned version to use; a route
may not name a retired model; a route's model that retires within 30 days is warned of at
start-up and counted in the metrics."""

from __future__ import annotations

import logging
from datetime import date

import pytest

from llm_gateway.config import parse_config
from llm_gateway.errors import ConfigError
from llm_gateway.observability import InMemoryMetrics
from llm_gateway.registry import RETIREMENT_WARNING_DAYS, retiring, warn_retiring


def config(models: str, route_model: str = "main") -> str:
    return f"models:\n{models}\ntenants:\n  acme:\n    routes: {{default: {{model: {route_model}}}}}\n"


@pytest.mark.parametrize(
    ("model", "advice"),
    [
        (
            "  gpt-4o: {provider: openai}",
            "'gpt-4o' is a moving alias of openai: name a pinned version (e.g. gpt-4o-2024-08-06)",
        ),
        ("  main: {provider: openai, provider_model: gpt-4o-mini}", "(e.g. gpt-4o-mini-2024-07-18)"),
        ("  main: {provider: anthropic, provider_model: claude-sonnet-4-5}", "(e.g. claude-sonnet-4-5-20250929)"),
        (
            "  main: {provider: anthropic, provider_model: claude-3-5-sonnet-latest}",
            "(e.g. claude-3-5-sonnet-20241022)",
        ),
        (
            "  main: {provider: anthropic, provider_model: claude-sonnet-latest}",
            "'claude-sonnet-latest' is a moving alias",
        ),
        ("  main: {provider: openai, provider_model: chatgpt-4o-latest}", "'chatgpt-4o-latest' is a moving alias"),
    ],
)
def test_an_unpinned_alias_is_refused_naming_a_pinned_version(model: str, advice: str) -> None:
    route_model = model.split(":", maxsplit=1)[0].strip()
    with pytest.raises(ConfigError, match="moving alias") as refused:
        parse_config(config(model, route_model))
    assert advice in str(refused.value)


@pytest.mark.parametrize(
    "model",
    [
        "  main: {provider: openai, provider_model: gpt-4o-2024-08-06}",
        "  main: {provider: anthropic, provider_model: claude-sonnet-4-5-20250929}",
        "  main: {provider: openai, provider_model: gpt-4o, allow_unpinned: true}",
        "  main: {provider: openai, provider_model: ft:gpt-4o-mini-2024-07-18:acme::abc123}",
        "  main: {provider: openai, provider_model: my-company-proxy-model}",  # not an alias we know of
        "  main: {provider: echo}",
    ],
)
def test_pinned_versions_and_allowed_aliases_pass(model: str) -> None:
    assert parse_config(config(model)).models["main"]


def test_a_route_may_not_name_a_retired_model() -> None:
    models = "  main: {provider: echo, lifecycle: retired}\n  next: {provider: echo}"
    with pytest.raises(ConfigError, match=r"tenants\.acme\.routes\.default: model .main. is retired"):
        parse_config(config(models))
    assert parse_config(config(models, "next")).models["main"].lifecycle == "retired"  # kept, not routed


def test_a_model_retiring_soon_is_warned_of_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    models = (
        "  main: {provider: echo, retires_on: 2027-01-01}\n"
        "  later: {provider: echo, retires_on: 2027-06-01}\n"
        "  unused: {provider: echo, retires_on: 2026-12-10}"
    )
    loaded = parse_config(config(models).replace("{model: main}", "{model: main, fallbacks: [later]}"))
    today = date(2026, 12, 6)
    assert retiring(loaded, today) == {"main": 26}  # `later` is months away; `unused` no route names
    assert retiring(loaded, date(2027, 1, 3)) == {"main": -2}
    metrics = InMemoryMetrics()
    with caplog.at_level(logging.WARNING, logger="llm_gateway.registry"):
        assert warn_retiring(loaded, metrics, today) == {"main": 26}
    assert "model main retires in 26 days (2027-01-01)" in caplog.text
    assert 'llm_gateway_model_retiring_total{days="26",model="main"} 1.0' in metrics.prometheus()
    assert RETIREMENT_WARNING_DAYS == 30
