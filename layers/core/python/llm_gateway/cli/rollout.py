"""`llm-gateway rollout`: staged rollouts of a route to a candidate model (docs/experiments.md),
kept in the local store `serve` reads (it evaluates the running ones' gates every 10 s), or with
`--table` in a deployment's DynamoDB rollout table (the stack's `RolloutTable` output; its
scheduled function evaluates the gates every minute), with the AWS credentials of the environment.

    rollout start --tenant T --route R --to MODEL [--stages 1,5,25,50,100] [--min-requests 200]
                  [--error-margin 0.02] [--latency-ratio 1.25] [--confidence 0.95] [--no-alerts]
                  [--eval BASELINE_RUN CANDIDATE_RUN [--eval-margin 0.02]]
    rollout status [ROLLOUT_ID] [--tenant T] [--check] [--json]
    rollout advance ROLLOUT_ID [--reason TEXT]
    rollout rollback ROLLOUT_ID [--reason TEXT]
    (each also [--table ROLLOUT_TABLE])
"""

from __future__ import annotations

import argparse
import getpass
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .eval import read_run
from .store_location import existing_store, load_local_config

if TYPE_CHECKING:
    from ..config import GatewayConfig
    from ..ports import ExperimentStore, RolloutStore


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    rollout = commands.add_parser("rollout", help="staged rollouts of a route to a candidate model")
    actions = rollout.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", help="start moving a route to a candidate model", parents=parents)
    start.add_argument("--tenant", required=True)
    start.add_argument("--route", required=True)
    start.add_argument("--to", required=True, dest="candidate", help="the candidate model")
    start.add_argument("--stages", default="1,5,25,50,100", help="shares of the route's users, in %% (1,5,25,50,100)")
    start.add_argument("--min-requests", type=int, default=200, help="candidate requests a stage needs (200)")
    start.add_argument("--error-margin", type=float, default=0.02, help="how much more it may fail (0.02)")
    start.add_argument("--latency-ratio", type=float, default=1.25, help="its p95 at most this x the baseline's")
    start.add_argument("--confidence", type=float, default=0.95, help="of the error gate's bounds (0.95)")
    start.add_argument("--no-alerts", action="store_true", help="the tenant's alerts do not roll it back")
    start.add_argument(
        "--eval",
        nargs=2,
        type=Path,
        metavar=("BASELINE_RUN", "CANDIDATE_RUN"),
        help="`eval run` reports of one suite on the baseline (or the route) and the candidate: start only if "
        "the candidate is not worse beyond --eval-margin",
    )
    start.add_argument("--eval-margin", type=float, default=0.02, help="how much lower its pass rate may be (0.02)")
    status = actions.add_parser("status", help="the rollouts, or one with its history", parents=parents)
    status.add_argument("rollout_id", nargs="?")
    status.add_argument("--tenant")
    status.add_argument("--check", action="store_true", help="evaluate the running rollouts' gates first")
    status.add_argument("--json", action="store_true")
    for name, help_text in (("advance", "move to the next stage now"), ("rollback", "send every user back")):
        moved = actions.add_parser(name, help=help_text, parents=parents)
        moved.add_argument("rollout_id")
        moved.add_argument("--reason", default=f"{name} by hand")
    for action in actions.choices.values():
        action.add_argument("--table", help="a deployment's DynamoDB rollout table (the stack's RolloutTable output)")


def rollout(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ..experiments.rollouts import move, start
    from ..ports import RolloutGates

    config = load_local_config(args.config)
    if args.action == "status" and args.check and args.table:
        raise ConfigError("on AWS the deployment's scheduled function evaluates the gates (every minute): no --check")
    store, close = _store(config, args.table)
    try:
        if args.action == "start":
            try:
                stages = tuple(float(s) for s in args.stages.split(","))
                gates = RolloutGates(
                    min_requests=args.min_requests,
                    error_margin=args.error_margin,
                    latency_ratio=args.latency_ratio,
                    confidence=args.confidence,
                    watch_alerts=not args.no_alerts,
                    eval_margin=args.eval_margin,
                )
                evals = (read_run(args.eval[0]), read_run(args.eval[1])) if args.eval else None
                started = start(
                    store,
                    config,
                    args.tenant,
                    args.route,
                    args.candidate,
                    stages,
                    gates,
                    _actor(),
                    experiments=_experiments(config, args.table),
                    evals=evals,
                )
            except ValidationError as exc:
                raise ConfigError(f"rollout gates: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            print(
                f"started {started.rollout_id}: {args.tenant}/{args.route} {started.baseline} -> {started.candidate} "
                f"at {started.share:g} %"
            )
            return 0
        if args.action == "status":
            if args.check:
                _check(store, config)
            return _status(store, args)
        found = store.get(args.rollout_id)
        if found is None:
            raise ConfigError(f"no rollout {args.rollout_id}")
        try:
            moved = move(store, found, args.action, args.reason, _actor(), time.time(), {})
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        print(f"{moved.rollout_id}: {moved.status}, {moved.share:g} % on {moved.candidate}")
        return 0
    finally:
        close()


def _store(config: GatewayConfig, table: str | None) -> tuple[RolloutStore, Callable[[], None]]:
    """The rollout store the command works on, and how to close it."""
    if table:
        from ..adapters.aws.rollouts import DynamoRolloutStore
        from .main import deployment_table_client

        return DynamoRolloutStore(table, deployment_table_client()), lambda: None
    from ..adapters.local.rollouts import SqliteRolloutStore

    local = SqliteRolloutStore(existing_store(config))
    return local, local.close


def _experiments(config: GatewayConfig, table: str | None) -> ExperimentStore:
    """The experiments beside the rollouts (a route runs one or the other)."""
    if table:
        from ..adapters.aws.experiments import DynamoExperimentStore
        from .main import deployment_table_client

        return DynamoExperimentStore(table, deployment_table_client())
    from ..adapters.local.experiments import SqliteExperimentStore

    return SqliteExperimentStore(existing_store(config))


def _check(store: RolloutStore, config: GatewayConfig) -> None:
    """The running rollouts' gates, judged once over the local store."""
    from ..adapters.local.sqlite import SqliteStore
    from ..experiments.rollouts import LocalEvidence, RolloutController

    audit = SqliteStore(existing_store(config), checkpoint_interval_s=0)
    try:
        RolloutController(store, LocalEvidence(audit.query, config)).check()
    finally:
        audit.close()


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def _status(store: RolloutStore, args: argparse.Namespace) -> int:
    rollouts = [r for r in store.all(args.tenant) if args.rollout_id in (None, r.rollout_id)]
    if args.rollout_id and not rollouts:
        raise ConfigError(f"no rollout {args.rollout_id}")
    if args.json:
        shown = [
            {**r.model_dump(), "share": r.share, "events": [e.model_dump() for e in store.events(r.rollout_id)]}
            for r in rollouts
        ]
        print(json.dumps(shown, indent=2))
        return 0
    for r in rollouts:
        print(
            f"{r.rollout_id} {r.tenant}/{r.route} {r.baseline} -> {r.candidate}: {r.status}, "
            f"{r.share:g} % (stage {r.stage + 1} of {len(r.stages)}: {','.join(f'{s:g}' for s in r.stages)}); "
            f"{r.reason}"
        )
        if args.rollout_id:
            for e in store.events(r.rollout_id):
                print(f"  {_when(e.at)} {e.action:<9} {e.share:g} % by {e.actor}: {e.detail.get('reason', '')}")
    if not rollouts:
        print("no rollout")
    return 0
