"""`llm-gateway experiment`: A/B experiments between variants of a route (docs/experiments.md).

`experiment plan --baseline P --mde D [--alpha 0.05] [--power 0.8]` sizes an experiment before it
starts: `per_arm=<n>` is the fixed-horizon size of a two-sided two-proportion test (statsmodels'
power analysis); `sequential_per_arm=<n>` is what the gateway's always-valid test needs to reach
the same power while it is read every day (`experiments.stats`).
"""

from __future__ import annotations

import argparse

from ..errors import ConfigError


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    experiment = commands.add_parser("experiment", help="A/B experiments: size one before it starts")
    actions = experiment.add_subparsers(dest="action", required=True)
    plan = actions.add_parser("plan", help="requests per arm to detect an absolute change of a success rate")
    plan.add_argument("--baseline", type=float, required=True, help="the control's success rate, e.g. 0.10")
    plan.add_argument(
        "--mde", type=float, required=True, help="the smallest absolute change worth detecting, e.g. 0.02"
    )
    plan.add_argument("--alpha", type=float, default=0.05, help="two-sided false-positive rate (0.05)")
    plan.add_argument("--power", type=float, default=0.8, help="chance of detecting the change when it is there (0.8)")


def experiment(args: argparse.Namespace) -> int:
    from ..experiments.stats import per_arm_sample_size, sequential_per_arm

    try:
        fixed = per_arm_sample_size(args.baseline, args.mde, args.alpha, args.power)
        sequential = sequential_per_arm(args.baseline, args.mde, args.alpha, args.power)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print(f"per_arm={fixed}")
    print(f"total={2 * fixed}")
    print(f"sequential_per_arm={sequential}")
    print(
        f"# {args.baseline:g} -> {args.baseline + args.mde:g} (absolute {args.mde:+g}), two-sided, "
        f"alpha {args.alpha:g}, power {args.power:g}: per_arm is read once at the end; "
        "sequential_per_arm lets the experiment be read every day and stop early"
    )
    return 0
