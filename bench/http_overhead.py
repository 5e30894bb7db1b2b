"""End-to-end over loopback HTTP: direct to a fake OpenAI backend, through LiteLLM, through llm-gateway.

Drives the side-by-side harness (`litellm_overhead/run_anchor.py`: fake backend on CPU 0, each
gateway pinned to CPU 1, load generator on CPU 0) with llm-gateway as the extra gateway, so all
three are measured in the same run. llm-gateway runs its full chain (auth, size checks, rate
limit, blocklists, routing, provider call through the openai SDK, moderation, usage and audit
records in SQLite) with the response cache turned off, because the harness repeats one request
and LiteLLM runs with its cache off.

    python bench/http_overhead.py --harness ../shared/tools/litellm_overhead \
        --litellm-venv /tmp/litellm-venv/venv [--runs 1] [--duration 15]

The harness needs a virtual environment with `litellm[proxy]`, aiohttp and uvloop (its README).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from llm_gateway.config import hash_key

ROOT = Path(__file__).resolve().parents[1]
GATEWAY_PORT = 18003
KEY = "sk-bench-http-overhead"


def write_config(out_dir: Path, backend_port: int) -> Path:
    config = out_dir / "gateway.yaml"
    config.write_text(
        f"""# llm-gateway in front of the harness's fake OpenAI backend; cache off (see bench/http_overhead.py)
cache: {{enabled: false}}
storage_path: {out_dir / "gateway.db"}
models:
  fake:
    provider: openai
    base_url: http://127.0.0.1:{backend_port}/v1
    api_key_env: BENCH_UPSTREAM_KEY
    price: {{input_per_mtok: 0.15, cached_input_per_mtok: 0.075, output_per_mtok: 0.6}}
tenants:
  bench:
    api_keys: [{{id: k1, sha256: {hash_key(KEY)}}}]
    routes: {{fake: {{model: fake}}}}
    rate_limit: {{requests_per_minute: 100000000, burst: 1000000}}
    output_blocklist: {{keywords: [forbidden]}}
"""
    )
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harness", type=Path, default=ROOT.parent / "shared" / "tools" / "litellm_overhead")
    parser.add_argument("--litellm-venv", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results" / "http")
    parser.add_argument("loadgen_args", nargs="*", help="passed to the harness's loadgen.py after --")
    args = parser.parse_args()

    out_dir = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    backend_port = 18001
    config = write_config(out_dir, backend_port)
    gateway = Path(sys.executable).parent / "llm-gateway"
    extra_cmd = f"env BENCH_UPSTREAM_KEY=dummy {gateway} serve --host 127.0.0.1 --port {GATEWAY_PORT} --config {config}"
    python = args.litellm_venv / "bin" / "python"
    command = [
        str(python),
        str(args.harness / "run_anchor.py"),
        "--venv",
        str(args.litellm_venv),
        "--runs",
        str(args.runs),
        "--duration",
        str(args.duration),
        "--backend-port",
        str(backend_port),
        "--out-dir",
        str(out_dir),
        "--extra-name",
        "llm-gateway",
        "--extra-cmd",
        extra_cmd,
        "--extra-base",
        f"http://127.0.0.1:{GATEWAY_PORT}/v1",
        "--extra-ready",
        f"http://127.0.0.1:{GATEWAY_PORT}/healthz",
        "--extra-auth",
        KEY,
        "--extra-model",
        "fake",
    ]
    if args.loadgen_args:
        command += ["--", *args.loadgen_args]
    subprocess.run(command, check=True)
    runs = [str(out_dir / f"run{i}.json") for i in range(1, args.runs + 1)]
    subprocess.run([str(python), str(args.harness / "make_results.py"), *runs], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
