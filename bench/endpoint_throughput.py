"""Aggregate throughput of the local model endpoint (`python -m model_server`, the packaged
SmolLM2-135M-Instruct on llama.cpp): the `tokens_per_second` a self-hosted model's configuration
gives `llm-gateway cost-report`.

Starts the endpoint on a free loopback port, warms it, then sends `--requests` story prompts
`--concurrency` at a time (the endpoint decodes up to MODEL_SERVER_SLOTS of them together) and
prints prompt and completion tokens per second of wall time.

    python bench/endpoint_throughput.py [--concurrency 8] [--requests 16] [--max-tokens 200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

SUBJECTS = ("cat", "robot", "farmer", "sailor", "child", "baker", "pilot", "dragon")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=200)
    args = parser.parse_args()
    command = [sys.executable, "-m", "model_server", "--host", "127.0.0.1", "--port", "0"]
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}  # as `serve` runs it
    endpoint = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert endpoint.stdout is not None
        url = next(line.split()[1] for line in endpoint.stdout if line.startswith("ready "))

        def ask(number: int) -> tuple[int, int]:
            subject = SUBJECTS[number % len(SUBJECTS)]
            body = {
                "messages": [
                    {"role": "user", "content": f"Write a short story about a {subject} who learns to paint."}
                ],
                "max_tokens": args.max_tokens,
                "temperature": 0.7,
                "seed": number,
            }
            usage = httpx.post(f"{url}/invocations", json=body, timeout=600).raise_for_status().json()["usage"]
            return usage["prompt_tokens"], usage["completion_tokens"]

        ask(0)  # load and warm
        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            usages = list(pool.map(ask, range(args.requests)))
        elapsed = time.perf_counter() - started
    finally:
        endpoint.terminate()
        endpoint.wait(timeout=30)
    prompt, completion = sum(u[0] for u in usages), sum(u[1] for u in usages)
    print("| requests | concurrency | prompt tokens | completion tokens | seconds | completion tok/s | all tok/s |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {len(usages)} | {args.concurrency} | {prompt} | {completion} | {elapsed:.1f} "
        f"| {completion / elapsed:.1f} | {(prompt + completion) / elapsed:.1f} |"
    )


if __name__ == "__main__":
    main()
