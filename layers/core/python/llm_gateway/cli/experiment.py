"""`llm-gateway experiment`: A/B experiments between variants of a route (docs/experiments.md).

`experiment plan --baseline P --mde D [--alpha 0.05] [--power 0.8]` sizes an experiment before it
starts: `per_arm=<n>` is the fixed-horizon size of a two-sided two-proportion test (statsmodels'
power analysis); `sequential_per_arm=<n>` is what the gateway's always-valid test needs to reach
the same power while it is read every day (`experiments.stats`).

`experiment start --tenant T --route R --variant NAME[=MODEL][,param=value...][,system=FILE] ...
--mde D [--metric task_success|satisfaction] [--alpha 0.05]` starts one (the first variant is the
control; `--weights 50,50` splits the users otherwise than evenly); `experiment report ID [--json]`
reads it (any day: the analysis stays valid); `experiment stop ID [--winner NAME] [--reason TEXT]`.
With `--table ROLLOUT_TABLE` (the stack's `RolloutTable` output) they work on a deployment's
DynamoDB table with the environment's AWS credentials; there `report` shows what the scheduled
gates function last computed (every minute).
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .store_location import existing_store, load_local_config

if TYPE_CHECKING:
    from ..config import GatewayConfig
    from ..ports import Experiment, Variant


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    experiment = commands.add_parser("experiment", help="A/B experiments: plan, start, report, stop")
    actions = experiment.add_subparsers(dest="action", required=True)
    plan = actions.add_parser("plan", help="requests per arm to detect an absolute change of a success rate")
    plan.add_argument("--baseline", type=float, required=True, help="the control's success rate, e.g. 0.10")
    plan.add_argument(
        "--mde", type=float, required=True, help="the smallest absolute change worth detecting, e.g. 0.02"
    )
    plan.add_argument("--alpha", type=float, default=0.05, help="two-sided false-positive rate (0.05)")
    plan.add_argument("--power", type=float, default=0.8, help="chance of detecting the change when it is there (0.8)")
    start = actions.add_parser("start", help="start an experiment on a route", parents=parents)
    start.add_argument("--tenant", required=True)
    start.add_argument("--route", required=True)
    start.add_argument(
        "--variant",
        action="append",
        required=True,
        help="NAME[=MODEL][,temperature=0.2][,system=FILE]; the first is the control (repeat for each)",
    )
    start.add_argument("--weights", help="the variants' shares, e.g. 90,10 (even by default)")
    start.add_argument(
        "--mde", type=float, required=True, help="the smallest absolute change of the metric worth detecting"
    )
    start.add_argument("--metric", choices=("task_success", "satisfaction"), default="task_success")
    start.add_argument("--alpha", type=float, default=0.05)
    report = actions.add_parser(
        "report", help="each variant's numbers and verdict against the control", parents=parents
    )
    report.add_argument("experiment_id", nargs="?", help="one experiment (all of them without)")
    report.add_argument("--json", action="store_true")
    stop = actions.add_parser(
        "stop", help="stop an experiment (every user back on the route as configured)", parents=parents
    )
    stop.add_argument("experiment_id")
    stop.add_argument("--winner", help="the variant to remember as the winner")
    stop.add_argument("--reason", default="stopped by hand")
    for name in ("start", "report", "stop"):
        actions.choices[name].add_argument("--table", help="a deployment's DynamoDB rollout table (RolloutTable)")


def experiment(args: argparse.Namespace) -> int:
    if args.action != "plan":
        return _manage(args)
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


def parse_variant(text: str) -> Variant:
    """`NAME[=MODEL][,param=value...][,system=FILE]` as a variant (ConfigError when it is not one)."""
    from pydantic import ValidationError

    from ..experiments.ab import PARAMS
    from ..ports import Variant

    head, *options = text.split(",")
    name, _, model = head.partition("=")
    params: dict[str, float | int] = {}
    system = None
    for option in options:
        key, _, value = option.partition("=")
        if key == "system":
            try:
                system = Path(value).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"variant {name}: system prompt file {value}: {exc.strerror or exc}") from None
        elif key in PARAMS:
            try:
                number = float(value)
            except ValueError:
                raise ConfigError(f"variant {name}: {key} is a number, not {value!r}") from None
            if not math.isfinite(number):
                raise ConfigError(f"variant {name}: {key} is a finite number")
            params[key] = int(number) if key in ("max_tokens", "seed") else number
        else:
            raise ConfigError(f"variant {name}: {key!r} is not one of {', '.join((*PARAMS, 'system'))}")
    try:
        return Variant(name=name, model=model or None, params=params, system_prompt=system)
    except ValidationError as exc:
        raise ConfigError(f"variant {text!r}: {exc.errors()[0]['msg']}") from None


def _manage(args: argparse.Namespace) -> int:
    from ..experiments import ab

    config = load_local_config(args.config)
    stores = _stores(config, args.table)
    store, rollouts = stores.experiments, stores.rollouts
    try:
        if args.action == "start":
            variants = [parse_variant(v) for v in args.variant]
            if args.weights:
                try:
                    weights = [float(w) for w in args.weights.split(",")]
                except ValueError:
                    raise ConfigError("--weights are numbers, one per variant") from None
                if len(weights) != len(variants) or not all(math.isfinite(w) and w > 0 for w in weights):
                    raise ConfigError("--weights: one positive number per variant")
                variants = [v.model_copy(update={"weight": w}) for v, w in zip(variants, weights, strict=True)]
            try:
                started = ab.start(
                    store, config, args.tenant, args.route, variants, args.mde, args.metric, args.alpha, rollouts
                )
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            names = ", ".join(v.name for v in started.variants)
            print(
                f"started {started.experiment_id} on {args.tenant}/{args.route}: {names} "
                f"(control {started.variants[0].name})"
            )
            return 0
        if args.action == "stop":
            found = store.get(args.experiment_id)
            if found is None:
                raise ConfigError(f"no experiment {args.experiment_id}")
            try:
                stopped = ab.stop(store, found, args.reason, args.winner)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            print(f"{stopped.experiment_id}: stopped" + (f", winner {stopped.winner}" if stopped.winner else ""))
            return 0
        chosen = [e for e in store.all() if args.experiment_id in (None, e.experiment_id)]
        if args.experiment_id and not chosen:
            raise ConfigError(f"no experiment {args.experiment_id}")
        reports = [stores.report(e) for e in chosen]
        print(json.dumps(reports, indent=2) if args.json else "\n\n".join(map(_render, reports)) or "no experiment")
        return 0
    finally:
        stores.close()


class _Stores:
    """Where the command reads and writes: the local store, or a deployment's table."""

    def __init__(self, experiments: Any, rollouts: Any, report: Any, close: Any) -> None:
        self.experiments, self.rollouts, self.report, self.close = experiments, rollouts, report, close


def _stores(config: GatewayConfig, table: str | None) -> _Stores:
    if table:
        from ..adapters.aws.experiments import DynamoExperimentStore
        from ..adapters.aws.rollouts import DynamoRolloutStore
        from .main import deployment_table_client

        client = deployment_table_client()
        experiments = DynamoExperimentStore(table, client)

        def saved(experiment: Experiment) -> dict[str, Any]:
            found = experiments.report(experiment)
            if found is None:  # the gates function has not judged it yet
                control = experiment.variants[0].name
                return {
                    "experiment": experiment.model_dump(),
                    "control": control,
                    "variants": {},
                    "against_control": {},
                }
            at, report = found
            return {**report, "experiment": experiment.model_dump(), "reported_at": at}

        return _Stores(experiments, DynamoRolloutStore(table, client), saved, lambda: None)
    from ..adapters.local.experiments import SqliteExperimentStore
    from ..adapters.local.rollouts import SqliteRolloutStore
    from ..adapters.local.sqlite import SqliteStore
    from ..experiments import ab

    path = existing_store(config)
    local, rollouts = SqliteExperimentStore(path), SqliteRolloutStore(path)

    def analysed(experiment: Experiment) -> dict[str, Any]:
        audit = SqliteStore(path, checkpoint_interval_s=0)
        try:
            return ab.analyse(audit.query, experiment)
        finally:
            audit.close()

    def close() -> None:
        local.close()
        rollouts.close()

    return _Stores(local, rollouts, analysed, close)


def _render(report: dict[str, Any]) -> str:
    e = report["experiment"]
    lines = [
        f"{e['experiment_id']} {e['tenant']}/{e['route']}: {e['status']}"
        + (f", winner {e['winner']}" if e["winner"] else "")
        + f"; metric {e['metric']} (mde {e['mde']:g}, alpha {e['alpha']:g})",
        f"{'variant':<14}{'requests':>9}{'errors':>8}{'p95 ms':>9}{'cost USD':>12}{'metric':>16}",
    ]
    if "reported_at" in report:
        lines.insert(
            1, f"as judged at {datetime.fromtimestamp(report['reported_at'], UTC).isoformat(timespec='seconds')}"
        )
    for name, v in report["variants"].items():
        rate = "n/a" if v["metric_rate"] is None else f"{v['metric_rate']:.3f} ({v['metric_n']})"
        p95 = "n/a" if v["latency_p95_ms"] is None else f"{v['latency_p95_ms']:.0f}"
        lines.append(f"{name:<14}{v['requests']:>9}{v['errors']:>8}{p95:>9}{v['cost_usd']:>12.6g}{rate:>16}")
    for name, c in report["against_control"].items():
        low, high = c["interval"]
        lines.append(
            f"{name} vs {report['control']}: {c['verdict']} (difference {c['difference']:+.3f}, "
            f"always-valid interval {low:+.3f} to {high:+.3f}, p {c['p_value']:.3g}); guardrail {c['guardrail']}"
        )
    return "\n".join(lines)
