"""`llm-gateway trace <request-id>`: one request's trace from the local store, as `serve` kept it
(each step, what it decided, how long it took; attempts, tokens, cost; feedback)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from ..errors import ConfigError
from ..ports import Trace
from .store_location import existing_store, load_local_config


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    trace = commands.add_parser(
        "trace", help="one request's trace: its steps, decisions, timings, cost", parents=parents
    )
    trace.add_argument("request_id", help="the request's x-request-id")
    trace.add_argument("--json", action="store_true", help="the trace as JSON")


def trace(args: argparse.Namespace) -> int:
    from ..adapters.local.traces import SqliteTraceStore

    config = load_local_config(args.config)
    path = existing_store(config)
    store = SqliteTraceStore(path)
    try:
        found = store.find(args.request_id)
    finally:
        store.close()
    if found is None:
        raise ConfigError(f"no trace of request {args.request_id} (expired, never made, or its tenant keeps none)")
    print(found.model_dump_json(indent=2) if args.json else render(found))
    return 0


def render(trace: Trace) -> str:
    """The trace as a few readable lines: the request, then a line per step."""
    when = datetime.fromtimestamp(trace.ts, tz=UTC).isoformat(timespec="seconds")
    head = (
        f"request {trace.request_id}  tenant {trace.tenant}  {when}\n"
        f"outcome {trace.outcome}{f' ({trace.error_code})' if trace.error_code else ''}  "
        f"route {trace.route or '-'}  model {trace.model or '-'}  {trace.latency_ms:.1f} ms  "
        f"tokens {trace.prompt_tokens} in ({trace.cached_tokens} cached) / {trace.completion_tokens} out  "
        f"${trace.cost_usd:.6f}"
    )
    lines = [head]
    for step in trace.steps:
        took = f"{step.ms:8.2f} ms" if step.ms is not None else " " * 11
        lines.append(f"  {step.name:<9}{took}  {json.dumps(step.detail, separators=(', ', ': '))}")
    lines += [f"  feedback  {f.kind} {f.score}{f': {f.comment}' if f.comment else ''}" for f in trace.feedback]
    return "\n".join(lines)
