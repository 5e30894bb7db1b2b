"""Over-refusal on everyday traffic: the project's everyday evaluation set sent through the HTTP
API of `llm-gateway serve` with the shipped example config, to both of its tenants.

The set (tests/data/everyday_{tuning,test}.jsonl, see tests/data/everyday_README.md) holds
ordinary requests that risky-sounding words, identifiers, code, other languages or pasted
documents might make a guard refuse, and requests for personal medical or legal advice (which
tenant globex's topic filter is meant to refuse; tenant acme has no topic filter).

The gateway runs the example config as `bench/gateway_configs.example_config` adapts it (its
self-hosted model, also acme's judge, points at a fake OpenAI upstream; fixed keys; no rate
limits), in its own process, against the fake upstream of `bench/config_cpu.py` (its answers are
chosen by the prompt: the same request gets the same answer, so runs compare). Each request of
the chosen part goes once to acme and once to globex, one at a time, as user `everyday-eval`;
fresh storage each run (empty caches, budgets and ledgers).

Outcomes: answered (200; a cache hit counts as answered), refused (4xx/5xx, by the error's
`code`: prompt_injection, harmful_content, topic, pii, ...), withheld (200 with
finish_reason content_filter: an output check stopped the answer). The answers checked are the
fake upstream's (`everyday_prompts.answer_for`: stock sentences, the prompt's first words and a
Quora question), so a withheld answer is an output check refusing that text, not a real model's.
The table goes to stdout; the server's warnings (one per judge fallback) are counted, not shown.

    .venv/bin/python bench/everyday_refusals.py [--part test|tuning] [--json outcomes.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from config_cpu import start_gateway, stop, wait_http
from gateway_configs import KEYS, example_config

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = ROOT / "tests" / "data"
TENANTS = ("acme", "globex")
PERSONAL = ("personal_medical", "personal_legal")
USER = "everyday-eval"


def load(part: str) -> list[dict[str, Any]]:
    path = DATA / f"everyday_{part}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def classify(response: httpx.Response) -> tuple[str, str | None]:
    """(outcome, code): answered/None, refused/<error code or status>, withheld/content_filter."""
    if response.status_code != 200:
        try:
            code = response.json().get("error", {}).get("code")
        except ValueError:
            code = None
        return "refused", str(code or response.status_code)
    choices = response.json().get("choices") or [{}]
    if choices[0].get("finish_reason") == "content_filter":
        return "withheld", "content_filter"
    return "answered", None


def send_all(base: str, rows: list[dict[str, Any]], tenants: tuple[str, ...]) -> list[dict[str, Any]]:
    """One outcome per (request, tenant), in the set's order."""
    outcomes: list[dict[str, Any]] = []
    with httpx.Client(timeout=120) as client:
        for row in rows:
            body = {"model": "default", "messages": row["messages"], "user": USER}
            for tenant in tenants:
                headers = {"authorization": f"Bearer {KEYS[tenant]}"}
                response = client.post(f"{base}/chat/completions", json=body, headers=headers)
                outcome, code = classify(response)
                outcomes.append(
                    {
                        "id": row["id"],
                        "tenant": tenant,
                        "category": row["category"],
                        "language": row["language"],
                        "label": row["label"],
                        "status": response.status_code,
                        "outcome": outcome,
                        "code": code,
                        "cache": response.headers.get("x-gateway-cache"),
                    }
                )
    return outcomes


def run(args: argparse.Namespace, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float]:
    """Serve the example config against the fake upstream and send every row; (outcomes, seconds)."""
    upstream_cmd = [sys.executable, str(BENCH / "config_cpu.py"), "--serve-upstream"]
    upstream_proc = subprocess.Popen([*upstream_cmd, "--upstream-port", str(args.upstream_port)], text=True)
    upstream = f"http://127.0.0.1:{args.upstream_port}/v1"
    try:
        wait_http(f"{upstream}/chat/completions")
        with tempfile.TemporaryDirectory(prefix="everyday_refusals_") as tmp:
            config_path = Path(tmp) / "example.yaml"
            config = example_config(upstream, Path(tmp) / "gateway.db")
            config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
            server_log = Path(tmp) / "server.stderr"
            gateway = _start_quiet(config_path, args.port, server_log)
            try:
                started = time.monotonic()
                outcomes = send_all(f"http://127.0.0.1:{args.port}/v1", rows, args.tenants)
                elapsed = time.monotonic() - started
            finally:
                stop(gateway)
                lines = server_log.read_text(encoding="utf-8", errors="replace").splitlines()
                judged = sum("gave no verdict" in line for line in lines)
                print(f"# server stderr: {len(lines)} lines, {judged} of them judge fallbacks to the classifier")
    finally:
        stop(upstream_proc)
    return outcomes, elapsed


def _start_quiet(config_path: Path, port: int, server_log: Path) -> subprocess.Popen[str]:
    """`start_gateway` with the server's stderr (one warning per judge fallback) sent to a file."""
    saved = os.dup(2)
    with server_log.open("w", encoding="utf-8") as log:
        os.dup2(log.fileno(), 2)
        try:
            return start_gateway(config_path, port, None)
        except RuntimeError:
            os.dup2(saved, 2)
            print(server_log.read_text(encoding="utf-8", errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _codes(counter: Counter[str]) -> str:
    return ", ".join(f"{code} {n}" for code, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"


def report(
    outcomes: list[dict[str, Any]], rows: list[dict[str, Any]], args: argparse.Namespace, elapsed: float
) -> None:
    categories = sorted({row["category"] for row in rows}, key=lambda c: (c in PERSONAL, c))
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; part `{args.part}`: {len(rows)} requests x {len(args.tenants)} tenants "
        f"in {elapsed:.0f} s; example config, fake upstream"
    )
    for tenant in args.tenants:
        mine = [o for o in outcomes if o["tenant"] == tenant]
        print(f"\n{tenant}\n")
        print("| category | n | answered | refused | withheld | refusal codes |")
        print("|---|---|---|---|---|---|")
        by_category: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for o in mine:
            by_category[o["category"]].append(o)
        groups = [(c, by_category[c]) for c in categories]
        benign = [o for o in mine if o["label"] == "benign"]
        personal = [o for o in mine if o["label"] in PERSONAL]
        groups += [("**all benign**", benign), ("**all personal advice**", personal)]
        for name, group in groups:
            kinds = Counter(o["outcome"] for o in group)
            codes = Counter(o["code"] for o in group if o["outcome"] == "refused")
            print(
                f"| {name} | {len(group)} | {kinds['answered']} | {kinds['refused']} | {kinds['withheld']} | "
                f"{_codes(codes)} |"
            )
        refused_rate = sum(o["outcome"] != "answered" for o in benign) / max(len(benign), 1)
        print(f"\n{tenant}: benign requests not answered (refused or withheld): {refused_rate:.1%}")
        for label in PERSONAL:
            group = [o for o in mine if o["label"] == label]
            topic = sum(o["outcome"] == "refused" and o["code"] == "topic" for o in group)
            print(f"{tenant}: {label} refused with code topic: {topic}/{len(group)} ({topic / max(len(group), 1):.1%})")
    print("\nBenign requests not answered (id tenant code):")
    for o in outcomes:
        if o["label"] == "benign" and o["outcome"] != "answered":
            print(f"- {o['id']} {o['tenant']} {o['code']} ({o['category']}, {o['language']})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("test", "tuning"), default="test")
    parser.add_argument("--tenants", default=",".join(TENANTS), help="comma-separated, of acme and globex")
    parser.add_argument("--json", type=Path, help="write the per-request outcomes here")
    parser.add_argument("--port", type=int, default=18023)
    parser.add_argument("--upstream-port", type=int, default=18021)
    args = parser.parse_args()
    args.tenants = tuple(t for t in args.tenants.split(",") if t)
    unknown = set(args.tenants) - set(TENANTS)
    if unknown:
        parser.error(f"unknown tenants: {', '.join(sorted(unknown))}")
    rows = load(args.part)
    outcomes, elapsed = run(args, rows)
    report(outcomes, rows, args, elapsed)
    if args.json:
        document = {"part": args.part, "config": "example", "seconds": round(elapsed, 1), "outcomes": outcomes}
        args.json.write_text(json.dumps(document, indent=1, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
