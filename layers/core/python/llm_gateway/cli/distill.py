"""`llm-gateway distill`: a tenant's own traffic into a smaller self-hosted model (docs/distillation.md).

    distill collect --tenant T --route R [--since 30d] --out DIR

reads the tenant's traces in the local store `serve` writes (the tenant must have opted in, and
keep content: `training.opt_in`, `traces.store_content`), keeps the answers fit to learn from
(`distill.collect`) and writes the splits, a Hugging Face dataset and a data card into DIR.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import ConfigError
from .replay import since_bound
from .store_location import existing_store, load_local_config, report_folder


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    distill = commands.add_parser("distill", help="a tenant's traffic into a smaller self-hosted model")
    actions = distill.add_subparsers(dest="action", required=True)
    collect = actions.add_parser(
        "collect", help="the tenant's answers fit to learn from, as a dataset", parents=parents
    )
    collect.add_argument("--tenant", required=True)
    collect.add_argument("--route", required=True)
    collect.add_argument("--since", default="30d", help="30m, 24h, 7d, 2w back, or an ISO date or date-time (30d)")
    collect.add_argument("--out", type=Path, required=True, help="the dataset's folder")


def distill(args: argparse.Namespace) -> int:
    from ..adapters.local.traces import SqliteTraceStore
    from ..distill.collect import CollectionRefused, collect
    from ..distill.dataset import write
    from ..semantic.embeddings import default_embedder

    config = load_local_config(args.config)
    now = time.time()
    since = since_bound(args.since, now)
    policy = config.tenants.get(args.tenant)
    if policy is not None and not policy.traces.store_content:
        raise ConfigError(
            f"tenant {args.tenant} keeps no content in its traces (`traces.store_content`): nothing to learn from"
        )
    report_folder(args.out, ("card.json", "README.md", "train.jsonl", "validation.jsonl", "test.jsonl"))
    store = SqliteTraceStore(existing_store(config))
    try:
        found = collect(
            config, args.tenant, args.route, store.with_content(args.tenant, since, now), default_embedder().embed
        )
    except CollectionRefused as exc:
        raise ConfigError(str(exc)) from None
    finally:
        store.close()
    written = write(found, args.out, tenant=args.tenant, route=args.route, since=since)
    print(json.dumps({"examples": written["examples"], "removed": written["removed"], "out": str(args.out)}))
    return 0
