"""`llm-gateway cost-report`: at which daily volume a self-hosted model beats an API's price."""

from __future__ import annotations

import argparse
import math

from ..config import EXAMPLE_CONFIG, GatewayConfig, Price, load_config
from ..errors import ConfigError


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    cost_cmd = commands.add_parser(
        "cost-report", help="at which daily volume self-hosting beats an API model", parents=parents
    )
    api_side = cost_cmd.add_mutually_exclusive_group(required=True)
    api_side.add_argument("--api-model", help="a model id whose price is the API's")
    api_side.add_argument("--route", help="tenant.route: its model's price, or its models' blend at the router's knob")
    api_side.add_argument(
        "--api-price",
        type=float,
        nargs=2,
        metavar=("INPUT", "OUTPUT"),
        help="an API's list price in USD per million input and output tokens (a model not in the configuration)",
    )
    cost_cmd.add_argument("--selfhost-model", required=True, help="a model id with hourly_usd and tokens_per_second")
    cost_cmd.add_argument("--prompt-tokens", type=int, default=500, help="per request")
    cost_cmd.add_argument("--completion-tokens", type=int, default=200, help="per request")
    cost_cmd.add_argument("--utilisation", type=float, default=0.5, help="share of the day an instance is busy")
    cost_cmd.add_argument("--min-instances", type=int, default=1)


def cost_report(args: argparse.Namespace) -> int:
    """API cost against a self-hosted endpoint's per day, over volumes, and the break-even."""
    from ..selfhost import SelfHosted, Workload, break_even, report_rows

    config = load_config(args.config or EXAMPLE_CONFIG)
    for name in (args.api_model, args.selfhost_model):
        if name is not None and name not in config.models:
            raise ConfigError(f"no model {name!r} in the configuration")
    own = config.models[args.selfhost_model]
    label, api_price = api_side(config, args)
    if own.hourly_usd is None or own.tokens_per_second is None:
        raise ConfigError(f"model {args.selfhost_model!r} needs hourly_usd and tokens_per_second")
    if not 0 < args.utilisation <= 1 or args.min_instances < 1:
        raise ConfigError("--utilisation must be in (0, 1] and --min-instances at least 1")
    hosted = SelfHosted(own.hourly_usd, own.tokens_per_second, args.utilisation, args.min_instances)
    workload = Workload(args.prompt_tokens, args.completion_tokens)
    print(
        f"{label} at {api_price.input_per_mtok:g}/{api_price.output_per_mtok:g} $/Mtok vs {args.selfhost_model} "
        f"at {own.hourly_usd} $/h, {own.tokens_per_second:g} tok/s x {args.utilisation:g} busy; "
        f"{workload.prompt_tokens} + {workload.completion_tokens} tokens a request"
    )
    print("| requests/day | API $/day | self-hosted $/day | instances | cheaper |\n|---|---|---|---|---|")
    for volume, api_cost, own_cost, instances in report_rows(
        api_price, hosted, workload, [1_000, 10_000, 100_000, 1_000_000, 10_000_000]
    ):
        cheaper = "self-hosted" if own_cost < api_cost else "API"
        print(f"| {volume:,} | {api_cost:,.2f} | {own_cost:,.2f} | {instances} | {cheaper} |")
    even = break_even(api_price, hosted, workload)
    if even is None:
        print("self-hosting never wins: a busy instance-day costs more than the API for the same requests")
    else:
        print(f"self-hosting wins from {math.ceil(even):,} requests/day on")
    return 0


def api_side(config: GatewayConfig, args: argparse.Namespace) -> tuple[str, Price]:
    """The report's API side: a configured model's price, a route's, or a price given outright."""
    if args.api_model:
        return args.api_model, config.models[args.api_model].price
    if args.route:
        return route_price(config, args.route)
    input_price, output_price = args.api_price
    if input_price < 0 or output_price < 0:
        raise ConfigError("--api-price: prices are USD per million tokens, at least 0")
    return "the API", Price(input_per_mtok=input_price, output_per_mtok=output_price)


def route_price(config: GatewayConfig, route_ref: str) -> tuple[str, Price]:
    """A route's price per token for the cost report: its first model's, or for a complexity-routed
    route the average of its models' prices weighted by the share of traffic each gets."""
    from ..routing.complexity import default_scorer, tier_weights

    tenant, _, name = route_ref.partition(".")
    route = config.tenants[tenant].routes.get(name) if tenant in config.tenants else None
    if route is None:
        raise ConfigError(f"no route '{route_ref}' (tenant.route) in the configuration")
    if route.complexity is None:
        return f"route {route_ref} ({route.model})", config.models[route.model].price
    prices = [config.models[m].price for m in route.complexity.models]
    weights = tier_weights(route.complexity, prices, default_scorer().model)

    def blend(field: str) -> float:
        values = [getattr(p, field) if getattr(p, field) is not None else p.input_per_mtok for p in prices]
        return sum(w * v for w, v in zip(weights, values, strict=True))

    shares = ", ".join(f"{w:.0%} {m}" for w, m in zip(weights, route.complexity.models, strict=True))
    blended = Price(
        input_per_mtok=blend("input_per_mtok"),
        cached_input_per_mtok=blend("cached_input_per_mtok"),
        output_per_mtok=blend("output_per_mtok"),
    )
    return f"route {route_ref} ({shares})", blended
