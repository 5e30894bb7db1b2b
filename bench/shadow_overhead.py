"""Does shadow traffic slow the user's answer? Two runners over the same plain no-store request,
each in a process of its own, one after the other, three times (a process shares its CPU with
its shadow worker, so the runner without a shadow must not share it): one whose route copies a
share of its answered requests to a shadow model (`--sample`, 1.0 by default: every one; the copy
is answered, priced, compared with the live answer by the embedding scorer and stored by the
shadow worker thread while the live requests go on), one without. Both answer with the
zero-latency `echo` model. Prints the live path's p50/p99 of each (the goal: p99 unchanged within
noise).

    python bench/shadow_overhead.py [--requests 3000] [--rounds 3] [--sample 1.0]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from llm_gateway.experiments.shadow import ShadowRunner
from llm_gateway.runner import InProcessRunner
from llm_gateway.semantic.embeddings import default_embedder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chain_overhead import CONFIG, _timed, bench_runner, make_state

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample", type=float, default=1.0, help="the share of requests shadowed (1.0)")
    parser.add_argument("--one", choices=("with", "without"), help=argparse.SUPPRESS)  # a round's own process
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.requests, args.sample if args.one == "with" else None)))
        return
    print(
        f"# live path with and without shadow copies of {args.sample:.0%} of its requests, {args.requests} each, "
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
                str(args.requests),
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


if __name__ == "__main__":
    main()
