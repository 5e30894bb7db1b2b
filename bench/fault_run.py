"""A fault run: many concurrent requests against failing upstreams, every outcome classified.

    .venv/bin/python bench/fault_run.py [--requests 200] [--concurrency 8] [--seed 1]

Three wires (OpenAI, Anthropic, the SageMaker endpoint contract), each with a failing upstream and
a healthy one; routes with and without a fallback to the healthy one. Each request draws a fault
(429, 500, timeout, hang mid-stream, cut, malformed JSON, empty choices, wrong content type, no
finish reason, or none), a wire, a route and streamed or not, and goes through the real HTTP app
with the openai SDK, concurrently. Every answer is classified:

- `answer`: HTTP 200 with a complete answer (text and a finish reason);
- `broken 200`: HTTP 200 whose answer is empty or cut with a normal finish (must be 0);
- `documented error`: a status the README documents (429, 503, 504) with an OpenAI error body, or
  a stream that ends with its error event;
- `undocumented`: anything else, e.g. a 500 (must be 0);
and its audit row looked up (`audit rows` must equal the requests). Prints a table per fault.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm_gateway.adapters.local.memory import MemoryRateLimiter
from llm_gateway.adapters.local.sqlite import SqliteStore
from llm_gateway.config import hash_key, parse_config
from llm_gateway.deps import Deps
from llm_gateway.http.app import create_app
from llm_gateway.providers.base import default_registry
from llm_gateway.runner import InProcessRunner
from tests.support.fake_providers import Behaviour, Ok, Script, fake_server, upstream_faults
from tests.support.servers import serve

KEY = "sk-bench-faults"
WIRES = ("openai", "anthropic", "sagemaker")
TIMEOUT_S = 0.5
HEALTHY = Ok(text="The healthy model answers in full.", prompt_tokens=12, completion_tokens=7)
FAULTS: dict[str, Behaviour] = {
    "none": Ok(text="The first model answers in full.", prompt_tokens=10, completion_tokens=7),
    **upstream_faults(TIMEOUT_S, retry_after=0),
}
DOCUMENTED = {429, 503, 504}


def _responder(body: Any) -> Behaviour:
    """The fault named in the request's last message (`fault=<name>`)."""
    text = str(body)
    name = text.split("fault=", 1)[1].split(maxsplit=1)[0].strip("'\",}]") if "fault=" in text else "none"
    return FAULTS.get(name, FAULTS["none"])


def _config(servers: dict[str, tuple[str, str]]) -> str:
    models, routes = "", ""
    for wire, (broken, healthy) in servers.items():
        for name, url, timeout in ((f"broken-{wire}", broken, TIMEOUT_S), (f"healthy-{wire}", healthy, 30)):
            where = f"endpoint: {url}" if wire == "sagemaker" else f"base_url: {url}"
            key = "" if wire == "sagemaker" else f", api_key_env: BENCH_{wire.upper()}_KEY, provider_model: m"
            price = "{input_per_mtok: 1.0, output_per_mtok: 2.0}"
            models += f"  {name}: {{provider: {wire}, {where}{key}, timeout_s: {timeout}, price: {price}}}\n"
        routes += f"      {wire}-fallback: {{model: broken-{wire}, fallbacks: [healthy-{wire}]}}\n"
        routes += f"      {wire}-alone: {{model: broken-{wire}}}\n"
    return (
        f"models:\n{models}tenants:\n  acme:\n    api_keys: [{{id: k1, sha256: {hash_key(KEY)}}}]\n"
        f"    routes:\n{routes}    rate_limit: {{requests_per_minute: 600000, burst: 100000}}\n"
    )


def _ask(url: str, route: str, prompt: str, streamed: bool) -> tuple[str, str]:
    """(class, request id) of one request."""
    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=30)
    messages: Any = [{"role": "user", "content": prompt}]
    raw_api = client.chat.completions.with_raw_response
    try:
        if not streamed:
            raw = raw_api.create(model=route, messages=messages, max_tokens=32)
            choice = raw.parse().choices[0]
            complete = bool(choice.message.content) and choice.finish_reason in ("stop", "length")
            return ("answer" if complete else "broken 200"), raw.headers["x-request-id"]
        raw_stream = raw_api.create(model=route, messages=messages, max_tokens=32, stream=True)
    except openai.APIStatusError as refused:
        body = refused.body if isinstance(refused.body, dict) else {}
        shaped = isinstance(body.get("type", body.get("error")), (str, dict))
        kind = "documented error" if refused.status_code in DOCUMENTED and shaped else "undocumented"
        return kind, refused.response.headers.get("x-request-id", "")
    request_id = raw_stream.headers["x-request-id"]
    text, finishes = "", []
    try:
        for chunk in raw_stream.parse():
            for choice in chunk.choices:
                text += choice.delta.content or ""
                if choice.finish_reason:
                    finishes.append(choice.finish_reason)
    except openai.APIError:  # the stream's error event
        return "documented error", request_id
    return ("answer" if text and finishes else "broken 200"), request_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    for wire in WIRES:
        os.environ[f"BENCH_{wire.upper()}_KEY"] = f"sk-upstream-{wire}"
    plan = [
        (rng.choice(list(FAULTS)), rng.choice(WIRES), rng.choice(("fallback", "alone")), rng.random() < 0.5)
        for _ in range(args.requests)
    ]
    with tempfile.TemporaryDirectory() as work:
        fakes = {
            (wire, role): fake_server(wire, Script(responder=_responder if role == "broken" else lambda b: HEALTHY))  # type: ignore[arg-type]
            for wire in WIRES
            for role in ("broken", "healthy")
        }
        started = {key: fake.__enter__() for key, fake in fakes.items()}
        try:
            servers = {w: (started[(w, "broken")].base_url, started[(w, "healthy")].base_url) for w in WIRES}
            store = SqliteStore(Path(work) / "gateway.db")
            deps = Deps(
                config=parse_config(_config(servers)),
                cache=store,
                limiter=MemoryRateLimiter(),
                usage=store,
                audit=store,
                providers=default_registry(),
                sleep=lambda s: time.sleep(min(s, 0.05)),
            )
            with serve(create_app(InProcessRunner(deps))) as url:
                t0 = time.monotonic()
                with ThreadPoolExecutor(args.concurrency) as pool:
                    results = list(
                        pool.map(
                            lambda p: _ask(url + "/v1", f"{p[1]}-{p[2]}", f"Check fault={p[0]} on {p[1]}", p[3]),
                            plan,
                        )
                    )
                elapsed = time.monotonic() - t0
            audited = {str(row[0]) for row in store.query("SELECT request_id FROM audit")}
        finally:
            for fake in fakes.values():
                fake.__exit__(None, None, None)
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for (name, _wire, _route, _streamed), (kind, request_id) in zip(plan, results, strict=True):
        table[name][kind] += 1
        table[name]["audit rows"] += request_id in audited
        table[name]["requests"] += 1
    columns = ("requests", "answer", "documented error", "broken 200", "undocumented", "audit rows")
    print(f"# Fault run: {args.requests} requests, concurrency {args.concurrency}, {elapsed:.1f} s\n")
    print("| fault | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    total: Counter[str] = Counter()
    for name in FAULTS:
        total.update(table[name])
        print(f"| {name} | " + " | ".join(str(table[name][c]) for c in columns) + " |")
    print("| **all** | " + " | ".join(f"**{total[c]}**" for c in columns) + " |")


if __name__ == "__main__":
    main()
