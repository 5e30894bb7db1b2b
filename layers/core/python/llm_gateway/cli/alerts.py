"""`llm-gateway alerts`: the five alerts (`alerts.ALERTS`) per tenant, evaluated now over the local
store `serve` writes."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

from .store_location import existing_store, load_local_config


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    alerts = commands.add_parser(
        "alerts", help="the alerts per tenant: firing or not, and what they measure", parents=parents
    )
    alerts.add_argument("--json", action="store_true", help="machine-readable output")


def alerts(args: argparse.Namespace) -> int:
    """Print each tenant's alerts; exit 0 (firing or not: the state is the output)."""
    from ..adapters.local.sqlite import SqliteStore
    from ..adapters.local.traces import SqliteTraceStore
    from ..alerts import LocalAlertHistory, evaluate

    config = load_local_config(args.config)
    path = existing_store(config)
    SqliteTraceStore(path).close()  # the traces table, even where no trace was kept yet
    store = SqliteStore(path, checkpoint_interval_s=0)
    try:
        states = evaluate(config, LocalAlertHistory(store.query), time.time())
    finally:
        store.close()
    if args.json:
        print(json.dumps([asdict(state) for state in states], indent=2))
    else:
        print("\n".join(state.line() for state in states))
    return 0
