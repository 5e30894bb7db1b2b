"""`llm-gateway guard-report`, and what `llm-gateway review` does for the guard allow-list:
an approved input item that a classifier layer refused or flagged is allow-listed, and
`review export-approved` writes the approved texts as benign training rows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..ports import ReviewItem
from .store_location import load_local_config


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    report = commands.add_parser(
        "guard-report",
        help="per tenant and guard layer: requests seen, shares flagged, refused and logged",
        parents=parents,
    )
    report.add_argument("--since", help="ISO date or date-time (UTC unless it names an offset), included")
    report.add_argument("--until", help="ISO date (that whole day included) or date-time (excluded)")
    report.add_argument("--tenant", help="only this tenant")
    report.add_argument("--json", action="store_true", help="machine-readable output")


def guard_report(args: argparse.Namespace) -> int:
    """Read the local audit log (the configuration's `storage_path`, as `serve` writes it)."""
    from ..adapters.local.sqlite import SqliteStore
    from ..guard.report import audit_query, parse_bound, render_json, render_text, summarise

    config = load_local_config(args.config)
    since, until = parse_bound(args.since), parse_bound(args.until, end=True)
    if since is not None and until is not None and until <= since:
        raise ConfigError("--until must be later than --since")
    path = config.storage_path
    if path != ":memory:" and not Path(path).exists():
        raise ConfigError(f"no audit log at {path}: has `llm-gateway serve` run with this configuration?")
    store = SqliteStore(path, checkpoint_interval_s=0)
    try:
        sql, params = audit_query(since, until, args.tenant)
        rows: list[Any] = store.query(sql, params)
    finally:
        store.close()
    reports = summarise(rows)
    print(render_json(reports, args.since, args.until) if args.json else render_text(reports), end="")
    if args.json:
        print()
    return 0


def remember(item: ReviewItem, storage_path: str, now: float) -> str | None:
    """After an approval in the local store: allow-list the item's text when a classifier layer
    refused or flagged it; a line saying so, or None."""
    from ..adapters.local.allowlist import SqliteGuardAllowList
    from ..guard.allowlist import learns, remember_approval

    if item.status != "approved" or not learns(item):
        return None
    allowlist = SqliteGuardAllowList(storage_path)
    try:
        added = remember_approval(item, allowlist, now)
    finally:
        allowlist.close()
    state = "now skips" if added else "already skipped"
    return f"tenant {item.tenant}: the classifier layers {state} requests whose latest user message is this text"


def export_approved(store: Any, target: str, tenant: str | None) -> int:
    """Approved texts (inputs a classifier layer refused or flagged) as JSONL training rows:
    `text`, `tenant`, `layer`, `label` benign."""
    from ..guard.allowlist import approved_rows

    rows = approved_rows(store.items("approved", tenant, limit=1_000_000))
    with Path(target).open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    print(f"exported {len(rows)} approved texts to {target}")
    return 0
