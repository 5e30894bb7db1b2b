"""`llm-gateway shadow report [--tenant T] [--route R] [--since 7d] [--json]`: what the routes'
shadow models did with the copies of live requests they were sent (`experiments.shadow`): how
often they agreed with the live model, failed, cost and took, from the local store `serve` writes,
or with `--table` from a deployment's pair table (the stack's `ShadowTable` output; the pairs are
scored here, by the embedding scorer, as they are read)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .replay import since_bound
from .store_location import existing_store, load_local_config


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    shadow = commands.add_parser("shadow", help="what the routes' shadow models did with copies of live requests")
    actions = shadow.add_subparsers(dest="action", required=True)
    report = actions.add_parser(
        "report", help="agreement, failures, cost and latency of the shadow pairs", parents=parents
    )
    report.add_argument("--tenant")
    report.add_argument("--route")
    report.add_argument("--since", default="7d", help="30m, 24h, 7d, 2w back, or an ISO date or date-time (7d)")
    report.add_argument("--json", action="store_true")
    report.add_argument("--table", help="a deployment's DynamoDB shadow pair table (the stack's ShadowTable output)")


def shadow(args: argparse.Namespace) -> int:
    from ..experiments.shadow import summary

    config = load_local_config(args.config)
    if args.tenant is not None and args.tenant not in config.tenants:
        raise ConfigError(f"tenant {args.tenant} is not in this configuration")
    since = since_bound(args.since, time.time())
    pairs = _deployed_pairs(args, since) if args.table else _local_pairs(args, existing_store(config), since)
    found = summary(pairs)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not pairs:
        print("no shadow pair in that window")
        return 0
    latency = found["latency_ms"]
    lines = [
        f"pairs={found['pairs']} ({', '.join(found['models'])})",
        f"shadow_failed={found['shadow_failed']} same_answer={found['same_answer']}",
        "agreement="
        + ("n/a" if found["agreement"] is None else f"{found['agreement']:.3f}")
        + " (similarity >= 0.8; mean "
        + ("n/a" if found["similarity_mean"] is None else f"{found['similarity_mean']:.3f}")
        + ")",
        f"cost_usd live={found['cost_usd']['live']:.6g} shadow={found['cost_usd']['shadow']:.6g}",
    ]
    if latency["live"] and latency["shadow"]:
        lines.append(
            f"latency_ms p50 live={latency['live']['p50']:.1f} shadow={latency['shadow']['p50']:.1f}; "
            f"p95 live={latency['live']['p95']:.1f} shadow={latency['shadow']['p95']:.1f}"
        )
    print("\n".join(lines))
    return 0


def _local_pairs(args: argparse.Namespace, path: str | Path, since: float) -> list[dict[str, Any]]:
    from ..experiments.shadow import ShadowRunner

    runner = ShadowRunner(path)
    try:
        runner.score_pending()
        return runner.pairs(args.tenant, args.route, since)
    finally:
        runner.close()


def _deployed_pairs(args: argparse.Namespace, since: float) -> list[dict[str, Any]]:
    from ..adapters.aws.shadow import DynamoShadowPairs
    from ..experiments.shadow import similarity
    from .main import deployment_table_client

    pairs = DynamoShadowPairs(args.table, deployment_table_client()).pairs(args.tenant, args.route, since)
    for pair in pairs:
        if pair["outcome"] == "ok" and pair.get("similarity") is None:
            pair["similarity"] = similarity(pair["live_answer"], pair["shadow_answer"] or "")
    return pairs
