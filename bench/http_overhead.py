"""End to end over loopback HTTP: direct to a fake OpenAI backend, through LiteLLM, through llm-gateway.

Drives the side-by-side harness (`litellm_overhead/run_anchor.py`: fake backend on CPU 0, each
gateway pinned to CPU 1, load generator on CPU 0) with llm-gateway as the extra gateway, so all
three are measured in the same run. The harness repeats one request (a system line and a short
question) for every request.

- `--gateway-config minimal` (default) with `--litellm-config litellm-minimal` (default): the
  full chain (auth, size checks, rate limit, output blocklist, routing, provider call through the
  openai SDK, usage and audit records in SQLite) with the response cache off, against LiteLLM
  with its cache off;
- `--gateway-config example --litellm-config litellm-comparable`: the shipped example config
  (tenant acme: injection, PII, harmful content, compression, exact and semantic cache) against
  LiteLLM with its in-memory cache and content-filter guardrails (`gateway_configs`). As the
  harness repeats one request, every request after the first is an exact cache hit on both
  sides (the guards still run on every request on llm-gateway's side); `bench/config_cpu.py`
  compares them under varied traffic.

    python bench/http_overhead.py --litellm-venv /tmp/litellm-venv [--runs 1] [--duration 15] \
        [--gateway-config example --litellm-config litellm-comparable]

The harness needs a virtual environment with `litellm[proxy]`, aiohttp and uvloop (its README).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_configs import GATEWAY_CONFIGS, KEYS, LITELLM_VARIANTS, UPSTREAM_KEY_ENV, litellm_config

ROOT = Path(__file__).resolve().parents[1]
GATEWAY_PORT = 18003


def write_configs(out_dir: Path, backend_port: int, gateway: str, litellm: str) -> tuple[Path, Path]:
    upstream = f"http://127.0.0.1:{backend_port}/v1"
    ours, theirs = out_dir / f"gateway-{gateway}.yaml", out_dir / f"{litellm}.yaml"
    ours.write_text(yaml.safe_dump(GATEWAY_CONFIGS[gateway](upstream, out_dir / f"gateway-{gateway}.db")))
    theirs.write_text(yaml.safe_dump(litellm_config(upstream, litellm)))
    return ours, theirs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harness", type=Path, default=ROOT.parent / "shared" / "tools" / "litellm_overhead")
    parser.add_argument("--litellm-venv", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results" / "http")
    parser.add_argument("--gateway-config", choices=sorted(GATEWAY_CONFIGS), default="minimal")
    parser.add_argument("--litellm-config", choices=sorted(LITELLM_VARIANTS), default="litellm-minimal")
    parser.add_argument("loadgen_args", nargs="*", help="passed to the harness's loadgen.py after --")
    args = parser.parse_args()

    out_dir = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    backend_port = 18001
    for stale in out_dir.glob("gateway-*.db*"):  # a fresh cache and ledger for every run
        stale.unlink()
    config, litellm = write_configs(out_dir, backend_port, args.gateway_config, args.litellm_config)
    gateway = Path(sys.executable).parent / "llm-gateway"
    extra_cmd = f"env {UPSTREAM_KEY_ENV}=dummy {gateway} serve --host 127.0.0.1 --port {GATEWAY_PORT} --config {config}"
    python = args.litellm_venv / "bin" / "python"
    command = [
        str(python),
        str(args.harness / "run_anchor.py"),
        "--venv",
        str(args.litellm_venv),
        "--config",
        str(litellm),
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
        KEYS["acme"],
        "--extra-model",
        "default",
    ]
    if args.loadgen_args:
        command += ["--", *args.loadgen_args]
    subprocess.run(command, check=True)
    runs = [str(out_dir / f"run{i}.json") for i in range(1, args.runs + 1)]
    subprocess.run([str(python), str(args.harness / "make_results.py"), *runs], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
