"""Does shadow traffic slow the user's answer? Two modes.

In-process (the default): the CPU-bound worst case. Two runners over the same plain no-store
request, each in a process of its own, one after the other, three times (a process shares its CPU
with its shadow worker, so the runner without a shadow must not share it): one whose route copies
a share of its answered requests to a shadow model (`--sample`, 1.0 by default: every one; the copy
is answered, priced and stored by the shadow worker thread while the live requests go on), one
without. Both answer with the zero-latency `echo` model, in a tight loop: any CPU the worker takes
shows in the live path.

    python bench/shadow_overhead.py [--requests 3000] [--rounds 3] [--sample 1.0]

Over HTTP (`--http`): the path users run. `llm-gateway serve` in a process of its own (a config
and its SQLite store in a temporary folder), its live and shadow models on a fake OpenAI-compatible
upstream in another process that answers each after `--upstream-ms` (150). This process is the
load generator: open-loop Poisson arrivals at `--rate` requests a second (20), `--requests` per run
(450), each request's latency taken from its scheduled arrival to the whole answer, every answer
checked (the live model's, HTTP 200: any failure fails the run). Each round runs, in a rotating
order, a gateway whose route has no shadow twice (A and B: the A/A pair, the noise between
identical runs) and one per `--samples` share (0.1 and 1.0) whose route copies that share to the
shadow model; every run of a round gets the same arrivals. Prints p50/p99 per run and pooled over
the rounds, the with ÷ without (A) and the A/A p99 ratios, and the shadow pairs kept in the store
for the run's requests (proof that the shadow ran) with the worker's drops; per run also the
client's largest delay in sending a request, the gateway process's CPU per request, and the cores
other processes kept busy meanwhile (from /proc: a run disturbed by the rest of the machine shows).

    python bench/shadow_overhead.py --http [--rate 20] [--requests 450] [--rounds 3] \
        [--upstream-ms 150] [--samples 0.1 1.0]

Goal: the live path's p99 unchanged within noise.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from llm_gateway.config import hash_key
from llm_gateway.experiments.shadow import ShadowRunner
from llm_gateway.runner import InProcessRunner
from llm_gateway.semantic.embeddings import default_embedder

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from chain_overhead import CONFIG, KEY, SYSTEM, _timed, bench_runner, make_state

from tests.support.servers import free_port

ROUTE = "routes: {default: {model: echo, fallbacks: []}}"
SHADOWED_ROUTE = (
    "routes: {default: {model: echo, fallbacks: [], shadow: {model: echo, sample: SAMPLE, budget_usd_per_day: 1000}}}"
)


def runner(folder: Path, sample: float | None) -> tuple[InProcessRunner, ShadowRunner | None]:
    """The chain; with `sample`, its route copies that share of answered requests to a shadow."""
    path = folder / ("shadowed.db" if sample else "plain.db")
    shadows = ShadowRunner(path, seed=0) if sample else None
    config = CONFIG.replace(ROUTE, SHADOWED_ROUTE.replace("SAMPLE", str(sample))) if sample else CONFIG
    assert sample is None or "shadow:" in config
    return bench_runner(path, config, shadows=shadows), shadows


def measure(requests: int, sample: float | None) -> dict[str, float]:
    """One process's run: the live path's p50/p99 over `requests` (and the pairs kept)."""
    default_embedder()  # loaded before timing (serve loads it at start)
    with tempfile.TemporaryDirectory() as tmp:
        chain, shadows = runner(Path(tmp), sample)
        for i in range(200):  # warm-up, not counted
            _timed(chain, make_state(f"warm-up {i}", "no-store"))
        if shadows is not None:
            shadows.drain(120)
        gc.collect()
        times = [_timed(chain, make_state(f"Do you ship to country {i}?", "no-store"))[0] for i in range(requests)]
        kept = 0
        if shadows is not None:
            shadows.drain(300)
            kept = len(shadows.pairs())
            shadows.close()
    return {"p50": statistics.median(times), "p99": statistics.quantiles(times, n=100)[98], "kept": kept}


# --------------------------------------------------------------------------- over HTTP

LIVE_MODEL, SHADOW_MODEL = "live-model", "shadow-model"
LIVE_ANSWER = "We ship to most countries; delivery takes three to five days."
SHADOW_ANSWER = "Yes, we ship there: it takes three to five days."
ADMIN_KEY = "sk-bench-admin"
UPSTREAM_KEY_ENV = "BENCH_UPSTREAM_KEY"
PRICE = {"input_per_mtok": 0.15, "cached_input_per_mtok": 0.075, "output_per_mtok": 0.6}
UNLIMITED = {"requests_per_minute": 100_000_000, "burst": 1_000_000}


def serve_upstream(answer_ms: float) -> None:
    """The fake OpenAI-compatible upstream's own process: both models answer after `answer_ms`.
    Prints its base URL, then serves until its standard input closes."""
    from tests.support.fake_providers import Behaviour, Script, delay, fake_server, ok

    def answer(body: Any) -> Behaviour:
        text = LIVE_ANSWER if body.get("model") == LIVE_MODEL else SHADOW_ANSWER
        return delay(answer_ms / 1000, ok(text, prompt_tokens=40, completion_tokens=14))

    with fake_server("openai", Script(responder=answer)) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()


def gateway_config(upstream: str, storage: Path, sample: float | None) -> dict[str, Any]:
    """The gateway's configuration: tenant `bench` (the in-process mode's key, blocklists and
    route), its live model on the fake upstream; with `sample`, the route copies that share of
    its answered requests to the shadow model there."""
    route: dict[str, Any] = {"model": "live", "fallbacks": []}
    if sample is not None:
        route["shadow"] = {"model": "shadow", "sample": sample, "budget_usd_per_day": 1000}
    model = {"provider": "openai", "base_url": upstream, "api_key_env": UPSTREAM_KEY_ENV, "price": PRICE}
    return {
        "storage_path": str(storage),
        "admin_api_keys": [{"id": "bench-admin", "sha256": hash_key(ADMIN_KEY)}],
        "models": {
            "live": {**model, "provider_model": LIVE_MODEL},
            "shadow": {**model, "provider_model": SHADOW_MODEL},
        },
        "tenants": {
            "bench": {
                "api_keys": [{"id": "k1", "sha256": hash_key(KEY)}],
                "routes": {"default": route},
                "rate_limit": UNLIMITED,
                "user_rate_limit": UNLIMITED,
                "input_blocklist": {"keywords": ["codename", "internal-only"], "patterns": [r"\b\d{3}-\d{2}-\d{4}\b"]},
                "output_blocklist": {"keywords": ["forbidden"], "patterns": [r"\b\d{3}-\d{2}-\d{4}\b"]},
            }
        },
    }


class Gateway:
    """`llm-gateway serve` in a process of its own, on a config and store in `folder`."""

    def __init__(self, folder: Path, upstream: str, sample: float | None) -> None:
        self.store = folder / "gateway.db"
        config = folder / "gateway.yaml"
        config.write_text(yaml.safe_dump(gateway_config(upstream, self.store, sample)))
        self.url = f"http://127.0.0.1:{free_port()}"
        self._log = (folder / "serve.log").open("w")
        command = [str(Path(sys.executable).parent / "llm-gateway"), "serve", "--host", "127.0.0.1"]
        command += ["--port", self.url.rsplit(":", 1)[1], "--config", str(config)]
        environment = {**os.environ, UPSTREAM_KEY_ENV: "sk-upstream"}
        self._process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=environment)
        self._folder = folder
        self.pid = self._process.pid

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"llm-gateway serve exited: {(self._folder / 'serve.log').read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError("llm-gateway serve did not answer /healthz")

    def shadow_counters(self) -> dict[str, float]:
        """The shadow worker's counters (`/metrics`): requests by outcome, drops by reason."""
        text = httpx.get(self.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10).text
        found: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("llm_gateway_shadow_"):
                name, _, value = line.rpartition(" ")
                kind = "dropped" if "dropped" in name else "requests"
                label = "outcome" if kind == "requests" else "reason"
                which = name.split(f'{label}="', 1)[1].split('"', 1)[0] if f'{label}="' in name else "?"
                found[f"{kind} {which}"] = found.get(f"{kind} {which}", 0.0) + float(value)
        return found

    def pairs(self, request_ids: set[str]) -> dict[str, int]:
        """The shadow pairs kept in the store for `request_ids`, by outcome."""
        with sqlite3.connect(f"file:{self.store}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT request_id, outcome FROM shadow_pairs").fetchall()
        kept: dict[str, int] = {}
        for request_id, outcome in rows:
            if request_id in request_ids:
                kept[outcome] = kept.get(outcome, 0) + 1
        return kept

    def stop(self) -> None:
        """SIGTERM (serve drains, then closes the shadow worker); killed if it lingers (a backlog of
        copies: not measured)."""
        self._process.terminate()
        try:
            self._process.wait(2)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()


@dataclass(frozen=True)
class Answered:
    """One request as the client saw it."""

    latency_ms: float  # from its scheduled arrival to the whole answer
    lag_ms: float  # from its scheduled arrival to its send: the client's own delay
    request_id: str
    failure: str | None


def request_body(question: str) -> dict[str, Any]:
    """The in-process mode's request: a system line and a short question."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    return {"model": "default", "messages": messages, "max_tokens": 16, "temperature": 0, "user": "user-42"}


async def _one(client: httpx.AsyncClient, question: str, due: float) -> Answered:
    loop = asyncio.get_running_loop()
    sent = loop.time()
    request_id, failure = "", None
    try:
        response = await client.post("/v1/chat/completions", json=request_body(question))
        request_id = response.headers.get("x-request-id", "")
        if response.status_code != 200:
            failure = f"HTTP {response.status_code}: {response.text[:200]}"
        elif response.json()["choices"][0]["message"]["content"] != LIVE_ANSWER:
            failure = f"not the live model's answer: {response.text[:200]}"
    except (httpx.HTTPError, ValueError, KeyError, IndexError) as error:
        failure = f"{type(error).__name__}: {error}"
    return Answered((loop.time() - due) * 1000, (sent - due) * 1000, request_id, failure)


async def _open_loop(url: str, gaps: list[float], questions: list[str]) -> list[Answered]:
    """Each request sent at its arrival time (gaps between arrivals, in seconds), whatever the
    ones before it are doing: as many connections as requests in flight."""
    headers = {"Authorization": f"Bearer {KEY}", "Cache-Control": "no-store"}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as client:
        loop = asyncio.get_running_loop()
        due = loop.time() + 0.05
        tasks = []
        for gap, question in zip(gaps, questions, strict=True):
            due += gap
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(_one(client, question, due)))
        return list(await asyncio.gather(*tasks))


def arrivals(rate: float, n: int, seed: int) -> list[float]:
    """Poisson arrivals: `n` exponential gaps at `rate` a second."""
    draw = random.Random(seed)
    return [draw.expovariate(rate) for _ in range(n)]


@dataclass
class Run:
    """One gateway's measured run."""

    arm: str
    round: int
    latencies: list[float]
    max_lag_ms: float
    pairs: dict[str, int]
    counters: dict[str, float]
    gateway_cpu_ms: float  # the gateway process's CPU per measured request
    others_cores: float  # cores busy with processes other than the gateway, the upstream and this one

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p99(self) -> float:
        return p99(self.latencies)


def p99(values: list[float]) -> float:
    """The 99th percentile, interpolated between the values measured (never past the largest)."""
    return statistics.quantiles(values, n=100, method="inclusive")[98]


_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user and system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy so far (all cores; not idle, not waiting on I/O)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) * _TICK_S


def cpu_snapshot(pids: list[int]) -> tuple[float, list[float], float]:
    """(wall clock, each of `pids`' CPU seconds, the machine's busy seconds)."""
    return time.monotonic(), [process_cpu_s(pid) for pid in pids], machine_busy_s()


def run_once(upstream: str, arm: str, sample: float | None, round_: int, args: argparse.Namespace) -> Run:
    """A fresh gateway (config, store), warmed up, then `args.requests` open-loop requests."""
    with tempfile.TemporaryDirectory(prefix="shadow-http-") as tmp:
        gateway = Gateway(Path(tmp), upstream, sample)
        try:
            gateway.wait_ready()
            warm = [f"Warm-up question {i}?" for i in range(args.warm_up)]
            answered = asyncio.run(_open_loop(gateway.url, arrivals(3 * args.rate, len(warm), 0), warm))
            failures = [a.failure for a in answered if a.failure]
            if not failures:
                gc.collect()
                questions = [f"Do you ship to country {i}?" for i in range(args.requests)]
                gaps = arrivals(args.rate, args.requests, args.seed + round_)
                pids = [gateway.pid, args.upstream_pid, os.getpid()]
                before = cpu_snapshot(pids)
                answered = asyncio.run(_open_loop(gateway.url, gaps, questions))
                after = cpu_snapshot(pids)
                failures = [a.failure for a in answered if a.failure]
            if failures:
                print(f"\n{arm}, round {round_}: {len(failures)} of {len(answered)} requests failed", file=sys.stderr)
                for failure in sorted(set(failures))[:20]:
                    print(f"  {failure}", file=sys.stderr)
                raise SystemExit(1)
            time.sleep(0.5)  # the copies in flight at the last answer come back
            ids = {a.request_id for a in answered}
            pairs, counters = gateway.pairs(ids), gateway.shadow_counters()
        finally:
            gateway.stop()
    used = [b - a for a, b in zip(before[1], after[1], strict=True)]
    others = (after[2] - before[2] - sum(used)) / (after[0] - before[0])
    latencies = [a.latency_ms for a in answered]
    lag = max(a.lag_ms for a in answered)
    return Run(arm, round_, latencies, lag, pairs, counters, used[0] * 1000 / len(answered), max(others, 0.0))


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.platform()}, {os.cpu_count()} CPUs ({cpu}), "
        f"Python {platform.python_version()}, load average {load}"
    )


def _pairs_cell(run: Run, sample: float | None) -> str:
    if sample is None:
        return "-"
    kept = sum(run.pairs.values())
    failed = sum(n for outcome, n in run.pairs.items() if outcome != "ok")
    dropped = sum(n for name, n in run.counters.items() if name.startswith("dropped"))
    return f"{kept}" + (f" ({failed} failed)" if failed else "") + (f", {dropped:.0f} dropped" if dropped else "")


def over_http(args: argparse.Namespace) -> int:
    """The HTTP mode: rounds of A, B and each shadowed share, side by side."""
    args.requests = args.requests or 450
    arms: dict[str, float | None] = {"without (A)": None, "without (B)": None}
    shadowed = {f"with {s:.0%}": s for s in args.samples}
    order = ["without (A)", *list(shadowed)[:1], "without (B)", *list(shadowed)[1:]]
    arms.update(shadowed)
    print(
        f"# llm-gateway serve over HTTP, live path with and without shadow copies: fake upstream answering in "
        f"{args.upstream_ms:g} ms, Poisson arrivals at {args.rate:g}/s, {args.requests} requests per run "
        f"(after {args.warm_up} uncounted), {args.rounds} rounds"
    )
    print(f"# {machine_line()}")
    print()
    upstream_process = subprocess.Popen(
        [sys.executable, __file__, "--upstream-serve", str(args.upstream_ms)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert upstream_process.stdout is not None and upstream_process.stdin is not None
    upstream = upstream_process.stdout.readline().strip()
    args.upstream_pid = upstream_process.pid
    if not upstream.startswith("http"):
        raise RuntimeError("the fake upstream did not start")
    runs: list[Run] = []
    print(
        "| round | run | p50 ms | p99 ms | max ms | p99 ÷ without (A) | client's max send lag ms "
        "| gateway CPU ms/request | other processes, cores | pairs kept |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    try:
        for round_ in range(1, args.rounds + 1):
            shift = (round_ - 1) % len(order)
            done: dict[str, Run] = {}
            for arm in order[shift:] + order[:shift]:
                done[arm] = run_once(upstream, arm, arms[arm], round_, args)
            base = done["without (A)"].p99
            for arm, sample in arms.items():
                run = done[arm]
                runs.append(run)
                print(
                    f"| {round_} | {arm} | {run.p50:.1f} | {run.p99:.1f} | {max(run.latencies):.1f} | "
                    f"{run.p99 / base:.2f} | {run.max_lag_ms:.1f} | {run.gateway_cpu_ms:.2f} | "
                    f"{run.others_cores:.2f} | {_pairs_cell(run, sample)} |",
                    flush=True,
                )
    finally:
        upstream_process.stdin.close()
        upstream_process.wait(10)
    print()
    print(f"Pooled over the {args.rounds} rounds ({args.rounds * args.requests} requests each):")
    print()
    print("| run | p50 ms | p99 ms | p99 ÷ without (A) | p99 ÷ without (A) per round | pairs kept |")
    print("|---|---|---|---|---|---|")
    pooled = {arm: [x for r in runs if r.arm == arm for x in r.latencies] for arm in arms}
    base_p99 = p99(pooled["without (A)"])
    for arm, latencies in pooled.items():
        mine_p99 = p99(latencies)
        mine = [r for r in runs if r.arm == arm]
        per_round = [r.p99 / next(a for a in runs if a.arm == "without (A)" and a.round == r.round).p99 for r in mine]
        kept = "-" if arms[arm] is None else str(sum(sum(r.pairs.values()) for r in mine))
        print(
            f"| {arm} | {statistics.median(latencies):.1f} | {mine_p99:.1f} | {mine_p99 / base_p99:.2f} | "
            f"{min(per_round):.2f} to {max(per_round):.2f} | {kept} |"
        )
    return 0


# --------------------------------------------------------------------------- in-process


def in_process(args: argparse.Namespace) -> None:
    """The in-process mode: the CPU-bound worst case."""
    requests = args.requests or 3000
    if args.one is not None:
        print(json.dumps(measure(requests, args.sample if args.one == "with" else None)))
        return
    print(
        f"# live path with and without shadow copies of {args.sample:.0%} of its requests, {requests} each, "
        f"each run in a process of its own, in turn, {platform.python_version()}"
    )
    print()
    print("| round | without p50 ms | with p50 ms | without p99 ms | with p99 ms | p99 ratio | pairs kept |")
    print("|---|---|---|---|---|---|---|")
    for round_ in range(1, args.rounds + 1):
        found = {}
        for one in ("without", "with"):  # a process each: the shadow worker's CPU is the shadowed process's alone
            command = [
                sys.executable,
                __file__,
                "--one",
                one,
                "--requests",
                str(requests),
                "--sample",
                str(args.sample),
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            found[one] = json.loads(done.stdout.strip().splitlines()[-1])
        a, b = found["without"], found["with"]
        cells = (a["p50"], b["p50"], a["p99"], b["p99"])
        print(
            f"| {round_} | "
            + " | ".join(f"{c:.3f}" for c in cells)
            + f" | {b['p99'] / a['p99']:.2f} | {b['kept']:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", action="store_true", help="through `llm-gateway serve` over HTTP, open-loop load")
    parser.add_argument("--requests", type=int, help="per run (3000 in-process, 450 over HTTP)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample", type=float, default=1.0, help="in-process: the share of requests shadowed (1.0)")
    parser.add_argument("--samples", type=float, nargs="+", default=[0.1, 1.0], help="--http: the shadowed shares")
    parser.add_argument("--rate", type=float, default=20.0, help="--http: Poisson arrivals a second (20)")
    parser.add_argument("--upstream-ms", type=float, default=150.0, help="--http: each model's answer time (150)")
    parser.add_argument("--warm-up", type=int, default=40, help="--http: uncounted requests before each run (40)")
    parser.add_argument("--seed", type=int, default=1, help="--http: the arrivals' seed (plus the round)")
    parser.add_argument("--one", choices=("with", "without"), help=argparse.SUPPRESS)  # a round's own process
    parser.add_argument("--upstream-serve", type=float, help=argparse.SUPPRESS)  # the fake upstream's own process
    args = parser.parse_args()
    if args.upstream_serve is not None:
        serve_upstream(args.upstream_serve)
    elif args.http:
        sys.exit(over_http(args))
    else:
        in_process(args)


if __name__ == "__main__":
    main()
