"""In-process chain overhead: the full chain with a zero-latency provider, no HTTP.

Runs the local runner (real SQLite file in WAL mode for cache, usage and audit; in-process rate
limiter) over N requests per scenario and prints p50/p99 per request. "Overhead" subtracts the
provider's own time (the `echo` model's call, as recorded per attempt) from the total.

    python bench/chain_overhead.py [--requests 5000]
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_gateway.adapters.local.memory import MemoryRateLimiter
from llm_gateway.adapters.local.sqlite import SqliteStore
from llm_gateway.config import hash_key, parse_config
from llm_gateway.contracts import CallerContext, ChatCompletionRequest, GatewayState
from llm_gateway.deps import Deps
from llm_gateway.providers.base import default_registry
from llm_gateway.runner import InProcessRunner

KEY = "sk-bench"
PLAIN = "miss, no-store (cache lookup skipped)"
TOOLED = "miss, no-store, carrying 3 tools and a tool result"
CONFIG = f"""
models:
  echo:
    provider: echo
    tools: true  # echo answers in text; the tool-carrying scenario measures the chain around it
    price: {{input_per_mtok: 0.15, cached_input_per_mtok: 0.075, output_per_mtok: 0.6}}
tenants:
  bench:
    api_keys: [{{id: k1, sha256: {hash_key(KEY)}}}]
    routes: {{default: {{model: echo, fallbacks: []}}}}
    rate_limit: {{requests_per_minute: 100000000, burst: 1000000}}
    user_rate_limit: {{requests_per_minute: 100000000, burst: 1000000}}
    input_blocklist: {{keywords: [codename, internal-only], patterns: ['\\b\\d{{3}}-\\d{{2}}-\\d{{4}}\\b']}}
    output_blocklist: {{keywords: [forbidden], patterns: ['\\b\\d{{3}}-\\d{{2}}-\\d{{4}}\\b']}}
"""
SYSTEM = "You are a concise assistant for an online store. Answer in one short paragraph."
# An agent's turn: three function definitions, and the conversation's last call and its result.
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {
                    "order_id": {"type": "string", "pattern": "^[A-Z0-9-]{6,20}$"},
                    "detail": {"type": "boolean"},
                },
                "required": ["order_id"],
            },
        },
    }
    for name, description in (
        ("order_status", "Where an order is and when it arrives."),
        ("refund_status", "Whether a refund was issued, and when."),
        ("cancel_order", "Cancel an order that has not shipped."),
    )
]
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "order_status", "arguments": '{"order_id": "A-123456"}'},
}


def make_state(question: str, cache_control: str | None, tools: bool = False) -> GatewayState:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    extra = {}
    if tools:
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Shipped on Monday; arrives Thursday."},
        ]
        extra = {"tools": TOOLS, "tool_choice": "auto"}
    request = ChatCompletionRequest.model_validate(
        {"model": "default", "messages": messages, "max_tokens": 16, "temperature": 0, "user": "user-42", **extra}
    )
    return GatewayState(
        request_id=uuid.uuid4().hex,
        received_at=time.time(),
        request=request,
        caller=CallerContext(api_key_sha256=hash_key(KEY), client_ip="127.0.0.1", cache_control=cache_control),
    )


def measure(
    runner: InProcessRunner, n: int, question: Callable[[int], str], cache_control: str | None, tools: bool = False
) -> dict[str, float]:
    totals: list[float] = []
    overheads: list[float] = []
    gc.collect()
    for i in range(n):
        total, overhead = _timed(runner, make_state(question(i), cache_control, tools))
        totals.append(total)
        overheads.append(overhead)
    return _summary(totals, overheads)


def measure_side_by_side(runner: InProcessRunner, n: int) -> tuple[dict[str, float], dict[str, float]]:
    """The plain and the tool-carrying no-store scenarios, one request of each in turn, so the
    machine's drift and noise fall on both alike: (plain, tool-carrying)."""
    runs: dict[bool, tuple[list[float], list[float]]] = {False: ([], []), True: ([], [])}
    gc.collect()
    for i in range(n):
        for tools in (False, True):
            total, overhead = _timed(runner, make_state(f"Do you ship to country {i}?", "no-store", tools))
            runs[tools][0].append(total)
            runs[tools][1].append(overhead)
    return _summary(*runs[False]), _summary(*runs[True])


def _timed(runner: InProcessRunner, state: GatewayState) -> tuple[float, float]:
    """(total, overhead) ms of one request: overhead leaves out the provider's own time."""
    t0 = time.perf_counter()
    runner.run(state)
    elapsed_ms = (time.perf_counter() - t0) * 1000
    model_ms = sum(a.latency_ms for a in state.invoke.attempts) if state.invoke else 0.0
    return elapsed_ms, elapsed_ms - model_ms


def _summary(totals: list[float], overheads: list[float]) -> dict[str, float]:
    return {
        "total_p50": statistics.median(totals),
        "total_p99": statistics.quantiles(totals, n=100)[98],
        "overhead_p50": statistics.median(overheads),
        "overhead_p99": statistics.quantiles(overheads, n=100)[98],
        "overhead_mean": statistics.fmean(overheads),
    }


def bench_runner(path: Path, config: str = CONFIG, **extra: Any) -> InProcessRunner:
    """The chain on one SQLite file (cache, usage, audit), an in-process rate limiter and `extra`
    dependencies (metrics, traces, shadows, ...)."""
    store = SqliteStore(path)
    deps = Deps(
        config=parse_config(config),
        cache=store,
        limiter=MemoryRateLimiter(),
        usage=store,
        audit=store,
        providers=default_registry(),
        **extra,
    )
    return InProcessRunner(deps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runner = bench_runner(Path(tmp) / "bench.db")
        n = args.requests
        measure(runner, 300, lambda i: f"warm-up question {i}", "no-store")
        scenarios = {
            "miss, answer stored (unique questions)": measure(
                runner, n, lambda i: f"Where is my order number {i}?", None
            ),
            "exact cache hit": measure(runner, n, lambda i: f"Where is my order number {i % 100}?", None),
        }
        scenarios[PLAIN], scenarios[TOOLED] = measure_side_by_side(runner, n)
    print(f"# chain overhead, {n} requests per scenario, {platform.python_version()}, {platform.machine()}")
    print()
    print("| scenario | overhead p50 ms | overhead p99 ms | overhead mean ms | total p50 ms | total p99 ms |")
    print("|---|---|---|---|---|---|")
    for name, r in scenarios.items():
        print(
            f"| {name} | {r['overhead_p50']:.3f} | {r['overhead_p99']:.3f} | {r['overhead_mean']:.3f} "
            f"| {r['total_p50']:.3f} | {r['total_p99']:.3f} |"
        )
    plain, tooled = scenarios[PLAIN], scenarios[TOOLED]
    print()
    p50, mean = (tooled[k] / plain[k] for k in ("overhead_p50", "overhead_mean"))
    print(f"tool-carrying / plain overhead: p50 {p50:.3f}x, mean {mean:.3f}x")


if __name__ == "__main__":
    main()
