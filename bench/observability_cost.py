"""What metrics and traces cost the chain: two runners side by side in one process, one request
of each in turn (so the machine's drift falls on both alike), over the same plain no-store
request: one with the in-process metrics (`InMemoryMetrics`, what `/metrics` renders) and the
SQLite trace store, one with `NullMetrics` and no traces. Each has its own SQLite file. Prints the
p50/p99 of each and the difference (the goal: at most 0.2 ms p50).

    python bench/observability_cost.py [--requests 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from llm_gateway.adapters.local.traces import SqliteTraceStore
from llm_gateway.observability import InMemoryMetrics, NullMetrics
from llm_gateway.runner import InProcessRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chain_overhead import _timed, bench_runner, make_state

GOAL_MS = 0.2


def runner(folder: Path, observed: bool) -> InProcessRunner:
    path = folder / ("observed.db" if observed else "bare.db")
    if not observed:
        return bench_runner(path, metrics=NullMetrics())
    return bench_runner(path, metrics=InMemoryMetrics(), traces=SqliteTraceStore(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"# metrics and traces on vs off, {args.requests} requests each per round, {platform.python_version()}")
    print()
    print("| round | off p50 ms | on p50 ms | on - off p50 ms | off p99 ms | on p99 ms |")
    print("|---|---|---|---|---|---|")
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            runners = {False: runner(Path(tmp), False), True: runner(Path(tmp), True)}
            times: dict[bool, list[float]] = {False: [], True: []}
            for i in range(300):  # warm-up, not counted
                for chain in runners.values():
                    _timed(chain, make_state(f"warm-up {i}", "no-store"))
            gc.collect()
            for i in range(args.requests):
                for observed, chain in runners.items():
                    times[observed].append(_timed(chain, make_state(f"Do you ship to country {i}?", "no-store"))[1])
            off, on = (statistics.median(times[k]) for k in (False, True))
            p99 = {k: statistics.quantiles(v, n=100)[98] for k, v in times.items()}
            verdict = "" if on - off <= GOAL_MS else " (over the goal)"
            print(
                f"| {round_} | {off:.3f} | {on:.3f} | {on - off:+.3f}{verdict} | {p99[False]:.3f} | {p99[True]:.3f} |"
            )


if __name__ == "__main__":
    main()
