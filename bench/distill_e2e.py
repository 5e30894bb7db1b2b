"""Distillation end to end on this machine's CPU (`tests/support/distill_pipeline.py`): support
emails answered by a deterministic teacher through `llm-gateway serve`, then `distill collect`,
`distill train` (LoRA on the packaged SmolLM2-135M), `distill eval` (teacher, student and the
untuned packaged model on the held-out newest fifth) and `distill register --route`, and `serve`
again answering new emails by the student's name. Prints each step's time and the eval's table.

    .venv/bin/python bench/distill_e2e.py [--requests 300] [--epochs 2] [--split 70,10,20] [--out /tmp/distill-e2e]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from tests.support.distill_pipeline import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="the teacher's traffic (300)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--split", default="70,10,20", help="distill collect --split (70,10,20)")
    parser.add_argument("--out", type=Path, help="keep the run's files here (default: a temporary folder)")
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="distill-e2e-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        found = run(folder, requests=args.requests, epochs=args.epochs, split=args.split)
    finally:
        if args.out is None:
            shutil.rmtree(folder, ignore_errors=True)
    timings, evaluated, examples = found["timings_s"], found["eval"], found["collect"]["examples"]
    print("| step | seconds |\n|---|---|")
    for step, seconds in timings.items():
        print(f"| {step} | {seconds:.0f} |")
    print(
        f"\nexamples: train {examples['train']}, validation {examples['validation']}, test {examples['test']}; "
        f"training: {found['train']['epochs']} epoch(s), validation loss {found['train']['validation_loss']}\n"
    )
    print("| run | model | pass rate on the held-out split | cost (USD) | p50 latency (ms) |\n|---|---|---|---|---|")
    for name, scored in evaluated["runs"].items():
        p50 = scored["latency_ms"].get("p50", 0.0)
        print(
            f"| {name} | {scored['target']} | {scored['pass_rate']:.1%} ({scored['passed']}/{scored['cases']}) | "
            f"{scored['cost_usd']:.6f} | {p50:.0f} |"
        )
    registered = found["register"]
    said = "; ".join((registered["out"] + registered["err"]).strip().splitlines())
    print(
        f"\nquality ratio {evaluated['quality_ratio']} (bar {evaluated['bar']}), cost ratio {evaluated['cost_ratio']}; "
        f"register exited {registered['exit']}: {said}"
    )
    for missed in found["student_misses"]:
        print(f"the student missed: {missed['answer']!r} ({missed['detail']})")
    served = found.get("served")
    if served:
        print(f"through serve by name: {served['right']}/{served['asked']} new emails answered with the teacher's JSON")


if __name__ == "__main__":
    main()
