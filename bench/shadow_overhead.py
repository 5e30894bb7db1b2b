"""Does shadow traffic slow the user's answer? Two runners side by side in one process, one
request of each in turn, over the same plain no-store request: one whose route copies every
answered request to a shadow model (`shadow.sample: 1.0`; the copy is answered, priced, compared
with the live answer by the embedding scorer and stored by the shadow worker thread), one without
a shadow. Both answer with the zero-latency `echo` model; the shadow worker runs meanwhile.
Prints the live path's p50/p99 of each (the goal: p99 unchanged within noise).

    python bench/shadow_overhead.py [--requests 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from llm_gateway.experiments.shadow import ShadowRunner
from llm_gateway.runner import InProcessRunner
from llm_gateway.semantic.embeddings import default_embedder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chain_overhead import CONFIG, _timed, bench_runner, make_state

SHADOWED = CONFIG.replace(
    "routes: {default: {model: echo, fallbacks: []}}",
    "routes: {default: {model: echo, fallbacks: [], shadow: {model: echo, sample: 1.0, budget_usd_per_day: 1000}}}",
)


def runner(folder: Path, shadowed: bool) -> tuple[InProcessRunner, ShadowRunner | None]:
    path = folder / ("shadowed.db" if shadowed else "plain.db")
    shadows = ShadowRunner(path) if shadowed else None
    return bench_runner(path, SHADOWED if shadowed else CONFIG, shadows=shadows), shadows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    assert "shadow:" in SHADOWED
    default_embedder()  # loaded before timing (serve loads it at start)
    print(
        f"# live path with and without a shadow copy of every request, {args.requests} each, "
        f"{platform.python_version()}"
    )
    print()
    print("| round | without p50 ms | with p50 ms | without p99 ms | with p99 ms | p99 ratio | pairs kept |")
    print("|---|---|---|---|---|---|---|")
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            plain, _ = runner(Path(tmp), False)
            shadowed, shadows = runner(Path(tmp), True)
            assert shadows is not None
            for i in range(200):  # warm-up, not counted
                for chain in (plain, shadowed):
                    _timed(chain, make_state(f"warm-up {i}", "no-store"))
            shadows.drain(120)
            gc.collect()
            times: dict[bool, list[float]] = {False: [], True: []}
            for i in range(args.requests):
                for kind, chain in ((False, plain), (True, shadowed)):
                    times[kind].append(_timed(chain, make_state(f"Do you ship to country {i}?", "no-store"))[0])
            shadows.drain(300)
            kept = len(shadows.pairs())
            shadows.close()
            p50 = {k: statistics.median(v) for k, v in times.items()}
            p99 = {k: statistics.quantiles(v, n=100)[98] for k, v in times.items()}
            cells = (p50[False], p50[True], p99[False], p99[True])
            print(
                f"| {round_} | " + " | ".join(f"{c:.3f}" for c in cells) + f" | {p99[True] / p99[False]:.2f} | {kept} |"
            )


if __name__ == "__main__":
    main()
