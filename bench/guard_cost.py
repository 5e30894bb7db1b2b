"""The input guard's cost on real requests: the everyday set's test part (tests/data/everyday_test.jsonl:
short questions, code, pasted documents up to ~2,700 characters, 19 languages) through `guard_step`
with each example tenant's policies, one request at a time, in this process.

Two figures per request: the guard layers alone (injection, PII, topics, copyright, harmful
content, with the sentence embedding they share — the one the semantic cache then reuses), and
the whole guard step as configured (adds the tenant's prompt compression). The harmful-content
judge (a model call on the ~4 % of requests tier 2 is unsure about) is left out of both. Reported as p50 per
length bucket and as milliseconds per 1,000 characters of the request's user text. Each request
is new to the classifiers (their memos are cleared between requests), as real traffic is.

    .venv/bin/python bench/guard_cost.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from bench.guard import _deps
from llm_gateway.config import EXAMPLE_CONFIG, Compression, hash_key, load_config
from llm_gateway.contracts import CallerContext, ChatCompletionRequest, GatewayState
from llm_gateway.guard.injection import load_injection_classifier
from llm_gateway.guard.step import guard_step
from llm_gateway.guard.text_classifier import TextMemo
from llm_gateway.moderation.harmful import load_harmful_classifier
from llm_gateway.semantic.embeddings import default_embedder

TEST_PART = Path(__file__).resolve().parents[1] / "tests" / "data" / "everyday_test.jsonl"
BUCKETS = ((0, 200), (200, 700), (700, 10_000))
KEY = "bench-key"


def forget() -> None:
    """Clear what the classifiers and the embedder remember of recent texts."""
    for classifier in (load_injection_classifier(), load_harmful_classifier()):
        for value in vars(classifier).values():
            if isinstance(value, TextMemo):
                value.clear()
    default_embedder()._recent.clear()  # the bench measures requests it has not seen


def timed(deps: Any, messages: list[dict[str, str]]) -> float:
    state = GatewayState(
        request_id=uuid.uuid4().hex,
        received_at=time.time(),
        request=ChatCompletionRequest.model_validate({"model": "default", "messages": messages}),
        caller=CallerContext(api_key_sha256=hash_key(KEY), client_ip="198.51.100.7"),
    )
    forget()
    started = time.perf_counter()
    guard_step(state, deps)
    return (time.perf_counter() - started) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="times each request is sent (the median counts)")
    args = parser.parse_args()
    rows = [json.loads(line) for line in TEST_PART.read_text(encoding="utf-8").splitlines() if line.strip()]
    config = load_config(EXAMPLE_CONFIG)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, {len(rows)} requests\n")
    print("| tenant | measured | length (chars) | n | p50 ms | p50 ms per 1,000 chars |")
    print("|---|---|---|---|---|---|")
    for tenant in ("acme", "globex"):
        for label, compression in (("guard layers", Compression(enabled=False)), ("whole guard step", None)):
            # The judge model is a model call on ~4 % of requests, not guard work: left out here.
            guards = config.tenants[tenant].guards
            update: dict[str, Any] = {
                "guards": guards.model_copy(update={"harmful": guards.harmful.model_copy(update={"judge_model": None})})
            }
            if compression is not None:
                update["compression"] = compression
            tenants = {tenant: config.tenants[tenant].model_copy(update=update)}
            deps = _deps(config.model_copy(update={"tenants": tenants}), tenant, KEY)
            timed(deps, rows[0]["messages"])  # load the models once
            samples = []
            for row in rows:
                chars = sum(len(m["content"]) for m in row["messages"] if m["role"] == "user")
                ms = statistics.median(timed(deps, row["messages"]) for _ in range(args.rounds))
                samples.append((chars, ms))
            for low, high in BUCKETS:
                inside = [(c, ms) for c, ms in samples if low <= c < high]
                p50 = statistics.median(ms for _, ms in inside)
                per_k = statistics.median(ms * 1000 / max(c, 1) for c, ms in inside)
                print(f"| {tenant} | {label} | {low}-{high} | {len(inside)} | {p50:.2f} | {per_k:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
