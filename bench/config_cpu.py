"""Server CPU per request over loopback HTTP: llm-gateway's shipped example config beside a
minimal one, and LiteLLM's proxy beside both, under the same everyday traffic.

Starts a fake OpenAI-compatible upstream (its own process; its answers vary with the prompt, see
`everyday_prompts.answer_for`), then for each target one server process (pinned to the last CPU
when the machine has two or more; the client and the upstream use the others), and drives it
with the mix of `everyday_prompts` (two tenants, 40 users, new questions, paraphrases, repeats,
topical and pasted work, a few risky prompts):

- sequential: one request at a time on a keep-alive connection; the server's CPU time is read
  from /proc/<pid>/task/*/schedstat (nanoseconds, every thread) before each request, so each
  request is charged exactly the CPU the server spent from its start to the next one's start
  (parsing, guards, cache, the upstream call, writing the answer, and anything left behind) ->
  p50, p90, p99 and mean per request, and p50 per outcome;
- concurrent: N closed-loop clients for D seconds -> requests per second and the mean CPU per
  request (server CPU over the phase / requests answered).

Targets (`gateway_configs`): `example` and `minimal` (llm-gateway), `example@base` and
`minimal@base` (the same configs served by the code of the checkout `--baseline` names, for
before/after in one run); `litellm-minimal`, `litellm-pii`, `litellm-comparable` and
`litellm-comparable-pi` (LiteLLM, with `--litellm-venv`, a virtual environment with
`litellm[proxy]`).

    .venv/bin/python bench/config_cpu.py [--configs example,minimal] [--requests 600] \
        [--warmup 150] [--concurrency 16] [--duration 10] [--rounds 2] [--litellm-venv /tmp/litellm-venv]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from everyday_prompts import Request, answer_for, requests
from gateway_configs import GATEWAY_CONFIGS, KEYS, LITELLM_KEY, UPSTREAM_KEY_ENV, example_config, litellm_config

from llm_gateway.config import EXAMPLE_CONFIG

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the fake upstream


def upstream_app() -> Any:
    """OpenAI `POST /v1/chat/completions`: an answer chosen by the last user message, no delay."""
    import orjson
    from starlette.applications import Starlette
    from starlette.requests import Request as HttpRequest
    from starlette.responses import Response
    from starlette.routing import Route

    async def chat(request: HttpRequest) -> Response:
        body = orjson.loads(await request.body())
        prompt = next((m.get("content") or "" for m in reversed(body["messages"]) if m["role"] == "user"), "")
        text = answer_for(prompt if isinstance(prompt, str) else json.dumps(prompt))
        prompt_chars = sum(len(str(m.get("content") or "")) for m in body["messages"])
        completion = {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_chars // 4 + 1,
                "completion_tokens": len(text) // 4 + 1,
                "total_tokens": (prompt_chars + len(text)) // 4 + 2,
            },
        }
        return Response(orjson.dumps(completion), media_type="application/json")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def run_upstream(port: int) -> None:
    import uvicorn

    uvicorn.run(upstream_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --------------------------------------------------------------------------- processes


def cpu_ns(pid: int) -> int:
    """The process's CPU time so far, every thread, in nanoseconds (threads that ended are lost;
    the server's threads live as long as it does)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def pinned(command: list[str], cpu: int | None) -> list[str]:
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


def start_gateway(config_path: Path, port: int, cpu: int | None, source: Path | None = None) -> subprocess.Popen[str]:
    """`llm-gateway serve`; with `source`, that checkout's code (e.g. a worktree of an earlier commit)."""
    serve = ["serve", "--host", "127.0.0.1", "--port", str(port), "--config", str(config_path)]
    env = {**os.environ, UPSTREAM_KEY_ENV: "dummy"}
    if source is None:
        command = [str(Path(sys.executable).parent / "llm-gateway"), *serve]
    else:
        env["PYTHONPATH"] = str(source / "layers" / "core" / "python")
        command = [sys.executable, "-c", "import sys; from llm_gateway.cli.main import main; sys.exit(main())", *serve]
    process = subprocess.Popen(pinned(command, cpu), stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    deadline = time.monotonic() + 180
    for line in process.stdout:
        if line.startswith("ready "):
            return process
        if time.monotonic() > deadline:
            break
    process.kill()
    raise RuntimeError(f"the gateway did not start (exit {process.poll()})")


def start_litellm(venv: Path, config_path: Path, port: int, cpu: int | None) -> subprocess.Popen[str]:
    """LiteLLM's proxy as its own benchmark harness runs it (one worker, no telemetry, local cost map)."""
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": LITELLM_KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY_DISABLED": "true",
        "LITELLM_LOG": "ERROR",
    }
    command = [str(venv / "bin" / "litellm"), "--config", str(config_path), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--num_workers", "1"]
    process = subprocess.Popen(
        pinned(command, cpu), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    stop(process)
    raise RuntimeError(f"LiteLLM did not start (exit {process.poll()})")


def start(name: str, args: argparse.Namespace, upstream: str, work: Path, cpu: int | None) -> subprocess.Popen[str]:
    config_path = work / f"{name}.yaml"
    if name.startswith("litellm"):
        if args.litellm_venv is None:
            raise SystemExit(f"{name} needs --litellm-venv")
        config = litellm_config(upstream, name)
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return start_litellm(args.litellm_venv, config_path, args.port, cpu)
    config_name, _, at = name.partition("@")
    if at and args.baseline is None:
        raise SystemExit(f"{name} needs --baseline")
    storage = work / f"{config_name}-{time.monotonic_ns()}.db"
    if at and config_name == "example":  # the baseline serves its own example config
        config = example_config(upstream, storage, args.baseline / EXAMPLE_CONFIG.relative_to(ROOT))
    else:
        config = GATEWAY_CONFIGS[config_name](upstream, storage)
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return start_gateway(config_path, args.port, cpu, args.baseline if at else None)


def wait_http(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.post(url, json={"messages": []}, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


# --------------------------------------------------------------------------- load


def _headers(request: Request, litellm: bool) -> dict[str, str]:
    return {"authorization": f"Bearer {LITELLM_KEY if litellm else KEYS[request.tenant]}"}


def outcome(response: httpx.Response) -> str:
    if response.status_code != 200:
        code = response.json().get("error", {}).get("code") if response.content else None
        return f"refused {code or response.status_code}"
    cache = response.headers.get("x-gateway-cache", "miss")
    return "answered" if cache == "miss" else f"{cache} hit"


def sequential(
    base: str, pid: int, stream: Iterator[Request], count: int, litellm: bool = False
) -> tuple[list[float], list[str], list[str]]:
    """(CPU ms per request, outcome per request, kind per request)."""
    cpu: list[float] = []
    outcomes: list[str] = []
    kinds: list[str] = []
    with httpx.Client(timeout=60) as client:
        before = cpu_ns(pid)
        for _ in range(count):
            request = next(stream)
            response = client.post(f"{base}/chat/completions", json=request.body, headers=_headers(request, litellm))
            outcomes.append(f"{request.tenant} {outcome(response)}")
            kinds.append(request.kind)
            now = cpu_ns(pid)
            cpu.append((now - before) / 1e6)
            before = now
    return cpu, outcomes, kinds


async def _closed_loop(base: str, stream: Iterator[Request], workers: int, duration: float, litellm: bool) -> int:
    done = 0
    deadline = time.monotonic() + duration
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                request = next(stream)
                await client.post(f"{base}/chat/completions", json=request.body, headers=_headers(request, litellm))
                done += 1

        await asyncio.gather(*(worker() for _ in range(workers)))
    return done


def concurrent(
    base: str, pid: int, stream: Iterator[Request], workers: int, duration: float, litellm: bool
) -> tuple[float, float]:
    """(requests per second, mean server CPU ms per request)."""
    before, started = cpu_ns(pid), time.monotonic()
    done = asyncio.run(_closed_loop(base, stream, workers, duration, litellm))
    elapsed, spent = time.monotonic() - started, cpu_ns(pid) - before
    return done / elapsed, spent / 1e6 / max(done, 1)


def profile(pid: int, out: Path) -> subprocess.Popen[str]:
    """py-spy sampling the server until stopped (collapsed stacks of the thread holding the GIL)."""
    spy = Path(sys.executable).parent / "py-spy"
    command = [str(spy), "record", "--gil", "--format", "raw", "--rate", "500", "-o", str(out), "-p", str(pid)]
    process = subprocess.Popen(command, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches
    return process


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(name: str, args: argparse.Namespace, upstream: str, work: Path, cpu: int | None) -> dict[str, Any]:
    process = start(name, args, upstream, work, cpu)
    base = f"http://127.0.0.1:{args.port}/v1"
    litellm = name.startswith("litellm")
    try:
        stream = requests(seed=args.seed)
        sequential(base, process.pid, stream, args.warmup, litellm)
        profiler = profile(process.pid, work / f"{name}.collapsed") if args.profile else None
        cpu_ms, outcomes, kinds = sequential(base, process.pid, stream, args.requests, litellm)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            profiler.wait(timeout=60)
            print(f"# py-spy samples of the sequential phase: {work / f'{name}.collapsed'}", flush=True)
        rps, conc_ms = concurrent(base, process.pid, stream, args.concurrency, args.duration, litellm)
    finally:
        stop(process)
    by_outcome: dict[str, list[float]] = defaultdict(list)
    for value, label in zip(cpu_ms, outcomes, strict=True):
        by_outcome[label].append(value)
    return {
        "config": name,
        "p50": statistics.median(cpu_ms),
        "p90": percentile(cpu_ms, 0.90),
        "p99": percentile(cpu_ms, 0.99),
        "mean": statistics.fmean(cpu_ms),
        "rps": rps,
        "conc_mean": conc_ms,
        "outcomes": {k: (len(v), statistics.median(v)) for k, v in sorted(by_outcome.items())},
        "kinds": dict(Counter(kinds)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="example,minimal")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1, help="configs are measured in turn, this many times")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--port", type=int, default=18013)
    parser.add_argument("--upstream-port", type=int, default=18011)
    parser.add_argument("--no-pin", action="store_true", help="do not pin the gateway to the last CPU")
    parser.add_argument("--litellm-venv", type=Path, help="a virtual environment with litellm[proxy]")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout (e.g. `git worktree add`) whose code serves the `<config>@base` targets",
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--profile", type=Path, help="record py-spy stacks of the sequential phase into this folder")
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        run_upstream(args.upstream_port)
        return 0
    cpus = os.cpu_count() or 1
    gateway_cpu = None if args.no_pin or cpus < 2 else cpus - 1
    others = None if gateway_cpu is None else ",".join(str(c) for c in range(cpus - 1))
    if others is not None:
        os.sched_setaffinity(0, {int(c) for c in others.split(",")})  # the client stays off the gateway's CPU
    upstream_cmd = [sys.executable, __file__, "--serve-upstream", "--upstream-port", str(args.upstream_port)]
    upstream_proc = subprocess.Popen(upstream_cmd, text=True)
    upstream = f"http://127.0.0.1:{args.upstream_port}/v1"
    rows: list[dict[str, Any]] = []
    try:
        wait_http(f"{upstream}/chat/completions")
        with tempfile.TemporaryDirectory(prefix="config_cpu_") as tmp:
            for round_ in range(1, args.rounds + 1):
                for name in args.configs.split(","):
                    row = measure(name, args, upstream, args.profile or Path(tmp), gateway_cpu)
                    row["round"] = round_
                    rows.append(row)
                    print(f"# round {round_} {name}: p50 {row['p50']:.2f} ms, {row['rps']:.0f} req/s", flush=True)
    finally:
        stop(upstream_proc)
    report(rows, args, gateway_cpu)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


def report(rows: list[dict[str, Any]], args: argparse.Namespace, gateway_cpu: int | None) -> None:
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, gateway on CPU {gateway_cpu}; {args.requests} sequential requests after "
        f"{args.warmup} warm-up, then {args.concurrency} clients for {args.duration:.0f} s\n"
    )
    print(
        "| round | config | CPU ms/request p50 | p90 | p99 | mean (sequential) | "
        f"mean at concurrency {args.concurrency} | req/s at concurrency {args.concurrency} |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['round']} | {row['config']} | **{row['p50']:.2f}** | {row['p90']:.2f} | {row['p99']:.2f} | "
            f"{row['mean']:.2f} | {row['conc_mean']:.2f} | {row['rps']:.0f} |"
        )
    print("\nSequential requests by tenant and outcome (count, CPU ms p50), last round:\n")
    last = {row["config"]: row for row in rows}
    for name, row in last.items():
        parts = ", ".join(f"{label} {n} ({ms:.2f})" for label, (n, ms) in row["outcomes"].items())
        print(f"- {name}: {parts}")
    kinds = next(iter(last.values()))["kinds"]
    print("\nRequest mix (sequential phase): " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))


if __name__ == "__main__":
    sys.exit(main())
