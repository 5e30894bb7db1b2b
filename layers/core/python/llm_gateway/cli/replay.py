"""`llm-gateway replay`: the debugging loop.

`replay <request-id> [--model M] [--config FILE]`: a stored request (its trace kept its content:
`traces.store_content`) runs again through the whole chain, as its tenant, with the caches
bypassed, on another model or under another configuration if asked; then the two are printed side
by side: the answer (a unified diff), the guard decisions, tokens, cost and latency.

`replay --tenant T [--since 24h] [--sample N] [--model M] [--config FILE] [--out DIR]`: a random
sample (seeded: `--seed`) of the tenant's stored requests since then, each replayed so, with a
progress bar; `DIR/report.json` and `DIR/report.md` hold each comparison and what changed overall
(answers, outcomes, guard decisions, tokens, cost, latency).

A request is replayed as its trace kept it: PII masked, with the placeholders the model saw. A
replay is a request of its own (its own id, trace and records).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import random
import re
import statistics
import time
import unicodedata
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..alerts import percentile
from ..errors import ConfigError, GatewayError
from ..ports import Trace
from .store_location import existing_store, load_local_config, report_folder

if TYPE_CHECKING:
    from ..config import GatewayConfig
    from ..contracts import ChatCompletionRequest
    from ..deps import Deps


_DURATION_S = {"m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 7 * 86_400.0}
MAX_SAMPLE = 10_000
_SIDES = ("original", "replay")
_MARKDOWN_DIFFS = 50  # the report's markdown shows this many answers that changed (the JSON: all)


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    replay = commands.add_parser(
        "replay",
        help="run a stored request, or a sample of a tenant's, again (another model or config) and show the difference",
        parents=parents,
    )
    replay.add_argument(
        "request_id", nargs="?", help="the request's x-request-id (its tenant keeps traces with content)"
    )
    replay.add_argument("--model", help="a route or model of the tenant to answer instead")
    replay.add_argument("--json", action="store_true", help="the comparison as JSON (one request)")
    sample = replay.add_argument_group("a sample of a tenant's traffic (instead of a request id)")
    sample.add_argument("--tenant", help="replay a sample of this tenant's stored requests")
    sample.add_argument("--since", default="24h", help="30m, 24h, 7d, 2w back, or an ISO date or date-time (24h)")
    sample.add_argument("--sample", type=int, default=20, help=f"how many requests, at most {MAX_SAMPLE} (20)")
    sample.add_argument("--seed", type=int, default=0, help="the sample's random seed (0)")
    sample.add_argument("--out", type=Path, default=Path("replay-report"), help="the report's folder (replay-report)")


def replay(args: argparse.Namespace) -> int:
    if (args.request_id is None) == (args.tenant is None):
        raise ConfigError("name a request id, or --tenant for a sample of its traffic (not both)")
    if args.tenant is not None:
        return replay_sample(args)
    if args.out != Path("replay-report") or args.sample != 20:
        raise ConfigError("--sample and --out take --tenant (a sample), not a request id")
    from ..adapters.local.traces import SqliteTraceStore
    from ..adapters.local.wiring import local_deps
    from .main import chain_config

    config = load_local_config(args.config)
    store = SqliteTraceStore(existing_store(config))
    try:
        original = store.find(args.request_id)
    except ValueError:  # pydantic's ValidationError too: a row another version wrote, or a damaged one
        message = f"the trace of request {args.request_id} cannot be read (damaged, or another version's)"
        raise ConfigError(message) from None
    finally:
        store.close()
    if original is None:
        raise ConfigError(f"no trace of request {args.request_id} (expired, never made, or its tenant keeps none)")
    request = replay_request(original, config, args.model)
    with contextlib.ExitStack() as stack:
        replayed = run_again(local_deps(chain_config(config, stack), stack), original, request)
    comparison = compare(original, replayed)
    print(json.dumps(comparison, indent=2) if args.json else render(comparison))
    return 0


def replay_request(original: Trace, config: GatewayConfig, model: str | None) -> ChatCompletionRequest:
    """The request `original` kept, to send again (on `model` if given); `ConfigError` when it
    cannot be (no content kept, content this version cannot read, a tenant or model unknown here)."""
    from pydantic import ValidationError

    from ..contracts import ChatCompletionRequest

    tenant = config.tenants.get(original.tenant)
    if tenant is None or not (tenant.api_keys or tenant.demo):
        raise ConfigError(f"tenant {original.tenant} is not in this configuration, or has no API key to replay as")
    if model and model not in tenant.routes and model not in tenant.allowed_models:
        raise ConfigError(f"{model} is neither a route of tenant {original.tenant} nor a model it may use")
    content = original.content
    if not isinstance(content, dict) or "request" not in content:
        raise ConfigError(
            f"tenant {original.tenant} keeps no content in its traces (traces.store_content): nothing to replay"
        )
    kept = content.get("request")
    if not isinstance(kept, dict) or not isinstance(content.get("messages"), list):
        raise ConfigError(
            f"request {original.request_id}: its kept content cannot be read (damaged, or another version's)"
        )
    try:
        return ChatCompletionRequest.model_validate(
            {**kept, "messages": content["messages"], **({"model": model} if model else {})}
        )
    except ValidationError:
        raise ConfigError(
            f"request {original.request_id}: its kept content is not a request this version takes"
        ) from None


def run_again(deps: Deps, original: Trace, request: ChatCompletionRequest) -> Trace:
    """`request` (`original`'s, from `replay_request`) through the chain again, as its tenant,
    caches bypassed; its trace."""
    from ..adapters.local.traces import SqliteTraceStore
    from ..contracts import CallerContext, GatewayState
    from ..runner import InProcessRunner

    state = GatewayState(
        request_id=uuid.uuid4().hex,
        received_at=time.time(),
        request=request,
        caller=CallerContext(
            api_key_sha256=deps.config.tenants[original.tenant].api_keys[0].sha256,
            cache_control="no-cache, no-store",
            replay_of=original.request_id,
            offline=True,
        ),
    )
    with contextlib.suppress(GatewayError):  # a refusal or failure is an outcome to compare too
        InProcessRunner(deps).run(state)
    traces = deps.traces
    replayed = traces.find(state.request_id) if isinstance(traces, SqliteTraceStore) else None
    if replayed is None:
        raise ConfigError("the replay left no trace (its tenant keeps none under this configuration)")
    return replayed


def since_bound(text: str, now: float) -> float:
    """`--since`: a span back from now (`30m`, `24h`, `7d`, `2w`) or an ISO date or date-time."""
    from ..guard.report import parse_bound

    unit = _DURATION_S.get(text[-1:].lower())
    amount = text[:-1]
    try:
        if unit is not None and amount.isascii() and amount.isdigit():
            since = now - int(amount) * unit
        else:
            bound = parse_bound(text)
            assert bound is not None  # a text was given
            since = bound
        _when(since)  # a moment a date can name
    except (OverflowError, ValueError, OSError):
        raise ConfigError(f"--since {text!r} is further back than a date can be") from None
    if since >= now:
        raise ConfigError("--since must be in the past")
    return since


def replay_sample(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..adapters.local.traces import SqliteTraceStore
    from ..adapters.local.wiring import local_deps
    from .main import chain_config

    if not 1 <= args.sample <= MAX_SAMPLE:
        raise ConfigError(f"--sample is 1 to {MAX_SAMPLE}")
    config = load_local_config(args.config)
    if args.tenant not in config.tenants:
        raise ConfigError(f"tenant {args.tenant} is not in this configuration")
    usable = config.tenants[args.tenant]
    if args.model and args.model not in usable.routes and args.model not in usable.allowed_models:
        raise ConfigError(f"{args.model} is neither a route of tenant {args.tenant} nor a model it may use")
    now = time.time()
    since = since_bound(args.since, now)
    report_folder(args.out, ("report.json", "report.md"))
    store = SqliteTraceStore(existing_store(config))
    unreadable: list[str] = []
    chosen: list[tuple[Trace, ChatCompletionRequest]] = []
    try:
        found = store.replayable(args.tenant, since, now)
        sampler = random.Random(args.seed)  # noqa: S311 - a reproducible sample, not a secret
        for request_id in sorted(sampler.sample(found, min(args.sample, len(found)))):
            try:  # every request is read and checked before the first is replayed (and paid for)
                original = store.get(args.tenant, request_id, now)
                if original is not None:
                    chosen.append((original, replay_request(original, config, args.model)))
            except (ValueError, ConfigError):  # a damaged row, or another version's: counted, left out
                unreadable.append(request_id)
    finally:
        store.close()
    if not chosen:
        raise ConfigError(
            f"tenant {args.tenant} has no stored request with its content since {_when(since)} "
            "(its traces keep content only with traces.store_content)"
            + (f"; {len(unreadable)} could not be read" if unreadable else "")
        )
    chosen.sort(key=lambda pair: (pair[0].ts, pair[0].request_id))
    comparisons: list[dict[str, Any]] = []
    console = Console(stderr=True)
    columns = (TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with contextlib.ExitStack() as stack, Progress(*columns, console=console, transient=True) as progress:
        deps = local_deps(chain_config(config, stack), stack)
        task = progress.add_task("replay", total=len(chosen))
        for original, request in chosen:
            comparisons.append(compare(original, run_again(deps, original, request)))
            progress.advance(task)
    report = sample_report(args, since, now, len(found), comparisons)
    report["unreadable"] = unreadable
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "report.md").write_text(render_sample(report), encoding="utf-8")
    summary = report["summary"]
    print(
        f"replayed {summary['requests']} of {report['stored']} stored requests of {args.tenant}"
        + (f" ({len(unreadable)} left out: unreadable)" if unreadable else "")
        + f": {summary['same_answer']} same answers, {summary['outcome_changed']} outcomes changed, "
        f"cost {summary['cost_usd']['original']:.6g} -> {summary['cost_usd']['replay']:.6g} USD; "
        f"report {args.out / 'report.md'} and {args.out / 'report.json'}"
    )
    return 0


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")


def sample_report(
    args: argparse.Namespace, since: float, until: float, stored: int, comparisons: list[dict[str, Any]]
) -> dict[str, Any]:
    """What changed across the sample, and each comparison."""
    before = [c["original"] for c in comparisons]
    after = [c["replay"] for c in comparisons]
    same = sum(b["answer"] == a["answer"] for b, a in zip(before, after, strict=True))
    similarity = [
        difflib.SequenceMatcher(None, b["answer"], a["answer"]).ratio() for b, a in zip(before, after, strict=True)
    ]
    changes: dict[str, int] = {}
    for b, a in zip(before, after, strict=True):
        if b["outcome"] != a["outcome"]:
            key = f"{b['outcome']} -> {a['outcome']}"
            changes[key] = changes.get(key, 0) + 1

    def latency(side: list[dict[str, Any]], q: float) -> float:
        return percentile([float(s["latency_ms"]) for s in side], q)

    return {
        "tenant": args.tenant,
        "since": _when(since),
        "until": _when(until),
        "model": args.model,
        "config": str(args.config) if args.config else None,
        "seed": args.seed,
        "stored": stored,
        "summary": {
            "requests": len(comparisons),
            "same_answer": same,
            "answer_similarity_mean": round(statistics.fmean(similarity), 4),
            "outcome_changed": sum(changes.values()),
            "outcome_changes": changes,
            "guards_changed": sum(_unmasked(b) != _unmasked(a) for b, a in zip(before, after, strict=True)),
            "cost_usd": {
                "original": round(sum(b["cost_usd"] for b in before), 8),
                "replay": round(sum(a["cost_usd"] for a in after), 8),
            },
            "tokens": {
                side: {
                    "input": sum(s["prompt_tokens"] for s in group),
                    "output": sum(s["completion_tokens"] for s in group),
                }
                for side, group in (("original", before), ("replay", after))
            },
            "latency_ms": {
                side: {"p50": latency(group, 0.5), "p95": latency(group, 0.95)}
                for side, group in (("original", before), ("replay", after))
            },
            "models": {
                side: sorted({str(s["model"]) for s in group if s["model"]})
                for side, group in (("original", before), ("replay", after))
            },
        },
        "requests": comparisons,
    }


def _unmasked(side: dict[str, Any]) -> list[str]:
    """A run's guard decisions but PII's: a replay sends the text as it was kept, masked, so its
    PII layer finds nothing to mask where the original masked."""
    return [d for d in str(side["guards"]).split() if not d.startswith("pii:")]


def _run(side: dict[str, Any]) -> str:
    return f"{side['model'] or '-'} ({side['outcome']}, {side['cost_usd']:.6g} USD, {side['latency_ms']:.0f} ms)"


def render_sample(report: dict[str, Any]) -> str:
    s = report["summary"]
    target = report["model"] or "the same model"
    config = f", configuration `{report['config']}`" if report["config"] else ""
    lines = [
        f"# Replay of {report['tenant']}'s traffic on {target}{config}",
        "",
        f"{s['requests']} requests sampled (seed {report['seed']}) from the {report['stored']} stored "
        f"with their content between {report['since']} and {report['until']} (UTC).",
        "",
        "| | original | replay |",
        "|---|---|---|",
        f"| models | {', '.join(s['models']['original'])} | {', '.join(s['models']['replay'])} |",
        f"| cost (USD) | {s['cost_usd']['original']:.6g} | {s['cost_usd']['replay']:.6g} |",
        f"| tokens in / out | {s['tokens']['original']['input']} / {s['tokens']['original']['output']} "
        f"| {s['tokens']['replay']['input']} / {s['tokens']['replay']['output']} |",
        "| latency p50 / p95 (ms) | "
        + " | ".join(f"{s['latency_ms'][side]['p50']:.1f} / {s['latency_ms'][side]['p95']:.1f}" for side in _SIDES)
        + " |",
        "",
        f"- same answer: {s['same_answer']} of {s['requests']} (mean similarity {s['answer_similarity_mean']:.2f})",
        f"- outcome changed: {s['outcome_changed']}"
        + "".join(f"; {change}: {n}" for change, n in sorted(s["outcome_changes"].items())),
        f"- guard decisions changed (PII's left out: the replay sends masked text): {s['guards_changed']}",
        "",
    ]
    changed = [c for c in report["requests"] if c["answer_diff"] or c["original"]["outcome"] != c["replay"]["outcome"]]
    if changed:
        lines += ["## What changed", ""]
    for comparison in changed[:_MARKDOWN_DIFFS]:
        before, after = comparison["original"], comparison["replay"]
        runs = [len(run) for line in comparison["answer_diff"] for run in re.findall("`+", line)]
        fence = "`" * max(3, max(runs, default=0) + 1)  # longer than any run of backticks in the answers
        lines += [
            f"### {before['request_id']}",
            "",
            f"{_run(before)} -> {_run(after)}",
            "",
            fence + "diff",
            *(_shown(line) for line in comparison["answer_diff"]),
            fence,
            "",
        ]
    if len(changed) > _MARKDOWN_DIFFS:
        lines.append(f"... and {len(changed) - _MARKDOWN_DIFFS} more in report.json.\n")
    return "\n".join(lines)


def _answer(trace: Trace) -> str:
    """The answer a trace kept (its choices' text), whatever shape a damaged row gave it."""
    answers = (trace.content or {}).get("answer")
    if not isinstance(answers, list):
        return ""
    return "\n".join(str(a.get("content") or "") for a in answers if isinstance(a, dict))


def _shown(text: str) -> str:
    """Text for a terminal or markdown: control characters (an answer's escape sequences) escaped."""
    return "".join(c if c in "\t" or unicodedata.category(c) != "Cc" else f"\\x{ord(c):02x}" for c in text)


def _side(trace: Trace) -> dict[str, Any]:
    return {
        "request_id": trace.request_id,
        "model": trace.model,
        "outcome": trace.outcome + (f" ({trace.error_code})" if trace.error_code else ""),
        "tokens": f"{trace.prompt_tokens} in / {trace.completion_tokens} out",
        "prompt_tokens": trace.prompt_tokens,
        "completion_tokens": trace.completion_tokens,
        "cost_usd": round(trace.cost_usd, 8),
        "latency_ms": trace.latency_ms,
        "guards": " ".join(
            f"{d['layer']}:{d['action']}"
            for step in trace.steps
            if step.name in ("guard", "moderate")
            for d in step.detail.get("decisions", [])
        )
        or "-",
        "answer": _answer(trace),
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
        rows.append(f"{field:<12}{before[field] or '-'!s:<40}{after[field] or '-'}")
    rows += [_shown(line) for line in comparison["answer_diff"]] or ["(the answers are the same)"]
    return "\n".join(rows)
