"""`llm-gateway replay <request-id> [--model M] [--config FILE]`: the debugging loop. A stored
request (its trace kept its content: `traces.store_content`) runs again through the whole chain,
as its tenant, with the caches bypassed, on another model or under another configuration if
asked; then the two are printed side by side: the answer (a unified diff), the guard decisions,
tokens, cost and latency.

The request is replayed as the trace kept it: PII masked, with the placeholders the model saw.
The replay is a request of its own (its own id, trace and records).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import time
import uuid
from typing import Any

from ..errors import ConfigError, GatewayError
from ..ports import Trace
from .store_location import existing_store, load_local_config


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    replay = commands.add_parser(
        "replay", help="run a stored request again (another model or config) and show the difference", parents=parents
    )
    replay.add_argument("request_id", help="the request's x-request-id (its tenant keeps traces with content)")
    replay.add_argument("--model", help="a route or model of the tenant to answer instead")
    replay.add_argument("--json", action="store_true", help="the comparison as JSON")


def replay(args: argparse.Namespace) -> int:
    from ..adapters.local.traces import SqliteTraceStore
    from ..adapters.local.wiring import local_deps
    from ..contracts import CallerContext, ChatCompletionRequest, GatewayState
    from ..runner import InProcessRunner

    config = load_local_config(args.config)
    store = SqliteTraceStore(existing_store(config))
    try:
        original = store.find(args.request_id)
    finally:
        store.close()
    if original is None:
        raise ConfigError(f"no trace of request {args.request_id} (expired, never made, or its tenant keeps none)")
    if original.content is None or "request" not in original.content:
        raise ConfigError(
            f"tenant {original.tenant} keeps no content in its traces (traces.store_content): nothing to replay"
        )
    tenant = config.tenants.get(original.tenant)
    if tenant is None or not tenant.api_keys:
        raise ConfigError(f"tenant {original.tenant} is not in this configuration, or has no API key to replay as")
    body: dict[str, Any] = {**original.content["request"], "messages": original.content["messages"]}
    if args.model:
        body["model"] = args.model
    request = ChatCompletionRequest.model_validate(body)
    state = GatewayState(
        request_id=uuid.uuid4().hex,
        received_at=time.time(),
        request=request,
        caller=CallerContext(api_key_sha256=tenant.api_keys[0].sha256, cache_control="no-cache, no-store"),
    )
    with contextlib.ExitStack() as stack:
        deps = local_deps(config, stack)
        with contextlib.suppress(GatewayError):  # a refusal or failure is an outcome to compare too
            InProcessRunner(deps).run(state)
        traces = deps.traces
        replayed = traces.find(state.request_id) if isinstance(traces, SqliteTraceStore) else None
    if replayed is None:
        raise ConfigError("the replay left no trace (its tenant keeps none under this configuration)")
    comparison = compare(original, replayed)
    print(json.dumps(comparison, indent=2) if args.json else render(comparison))
    return 0


def _side(trace: Trace) -> dict[str, Any]:
    answers = (trace.content or {}).get("answer") or []
    return {
        "request_id": trace.request_id,
        "model": trace.model,
        "outcome": trace.outcome + (f" ({trace.error_code})" if trace.error_code else ""),
        "tokens": f"{trace.prompt_tokens} in / {trace.completion_tokens} out",
        "cost_usd": round(trace.cost_usd, 8),
        "latency_ms": trace.latency_ms,
        "guards": " ".join(
            f"{d['layer']}:{d['action']}"
            for step in trace.steps
            if step.name in ("guard", "moderate")
            for d in step.detail.get("decisions", [])
        )
        or "-",
        "answer": "\n".join(str(a.get("content") or "") for a in answers),
    }


def compare(original: Trace, replayed: Trace) -> dict[str, Any]:
    """The two runs side by side, and the answer's unified diff."""
    before, after = _side(original), _side(replayed)
    diff = difflib.unified_diff(
        before["answer"].splitlines(), after["answer"].splitlines(), "original", "replay", lineterm=""
    )
    return {"tenant": original.tenant, "original": before, "replay": after, "answer_diff": list(diff)}


def render(comparison: dict[str, Any]) -> str:
    before, after = comparison["original"], comparison["replay"]
    rows = [f"tenant {comparison['tenant']}", f"{'':<12}{'original':<40}replay"]
    for field in ("request_id", "model", "outcome", "tokens", "cost_usd", "latency_ms", "guards"):
        rows.append(f"{field:<12}{before[field]!s:<40}{after[field]}")
    rows += comparison["answer_diff"] or ["(the answers are the same)"]
    return "\n".join(rows)
