"""Cold-start import time of every Lambda function, from its real bundle.

Synthesizes the dev stage with the layers built for this machine (the same feature sets and
pruning as Lambda's, wheels for this CPU and Python), then for each function runs fresh
`python -I -S` processes with only its bundle (and what Lambda's runtime provides) on sys.path, and
times, in each process:
- `import`: importing the handler module (the stream function: its app's modules; building its app
  reads the stage's secrets, which needs AWS);
- `model`: for the functions that embed, loading the embedding model and embedding one text (what
  their first request pays; it is part of their cold start target);
- `first-event SDKs`: importing what a feature imports on the first event (boto3, the provider
  SDKs, Momento), reported apart: paid on the first request that uses them.

Prints best and median over `--runs`. Targets: import ≤ 250 ms for chain functions, import + model
≤ 600 ms for the embedding functions.

    .venv/bin/python bench/lambda_cold_start.py [--runs 5] [--outdir /tmp/cold-start-cdk]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "core" / "python")]

from cdk import constants as c  # noqa: E402
from cdk import lambda_bundles as bundles  # noqa: E402
from cdk.assembly import FunctionBundle, function_bundles, run_isolated  # noqa: E402

IMPORT_TARGET_MS = 250
EMBEDDING_TARGET_MS = 600
DEPLOYED = {c.ENV_MOMENTO_ENDPOINT: "cell-1.example.momentohq.com", "AWS_REGION": "eu-west-1"}
STREAM_MODULES = "import uvicorn, starlette\nfrom llm_gateway.aws.streaming_app import streaming_app\n"
FIRST_EVENT = {
    "base": "import boto3\nboto3.client('dynamodb', region_name='eu-west-1')\n",
    "providers": "import openai, anthropic\n",
    "momento": "import momento\n",
    "embedding": "",
    "web": "",
}

_TIMED = """
import time, json
t0 = time.perf_counter()
{handler}
t1 = time.perf_counter()
{model}
t2 = time.perf_counter()
{first_event}
t3 = time.perf_counter()
print("@@" + json.dumps([t1 - t0, t2 - t1, t3 - t2]))
"""
_MODEL = (
    "from llm_gateway.semantic.embeddings import default_embedder\n"
    "default_embedder().embed_one('How do I reset my password?')\n"
)


def synthesize(outdir: Path) -> dict[str, FunctionBundle]:
    from cdk.app import build_app

    app, _ = build_app({c.CONTEXT_STAGE: "dev", c.CONTEXT_BUNDLE_FOR_THIS_MACHINE: "true"}, outdir=str(outdir))
    app.synth()
    return function_bundles(outdir, c.stack_name("dev"))


def measure(bundle: FunctionBundle, runtime: str, runs: int) -> list[list[float]]:
    features = bundles.features_of(bundle.folder)
    handler = STREAM_MODULES if bundle.folder == c.STREAM_FOLDER else f"import {bundle.handler.rsplit('.', 1)[0]}"
    code = _TIMED.format(
        handler=handler,
        model=_MODEL if "embedding" in features else "",
        first_event="".join(FIRST_EVENT[f] for f in ("base", *sorted(features))),
    )
    samples = []
    for _ in range(runs):
        done = run_isolated(bundle, code, extra_path=[runtime], env=DEPLOYED)
        marker = [line for line in done.stdout.splitlines() if line.startswith("@@")]
        if done.returncode != 0 or not marker:
            raise RuntimeError(f"{bundle.folder}: {done.stderr[-2000:]}")
        samples.append([1000 * x for x in json.loads(marker[-1][2:])])
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--outdir", type=Path, default=None)
    args = parser.parse_args()
    outdir = args.outdir or Path(tempfile.mkdtemp(prefix="cold-start-cdk-"))
    found = synthesize(outdir)
    runtime = str(bundles.build_runtime_provided(bundles.Target.this_machine(), outdir / "runtime-provided"))
    print("| function | import ms (best / median) | model ms (best) | import + model vs target | first-event SDKs ms |")
    print("|---|---|---|---|---|")
    for folder in sorted(found):
        samples = measure(found[folder], runtime, args.runs)
        imports = [s[0] for s in samples]
        model = min(s[1] for s in samples)
        embeds = "embedding" in bundles.features_of(folder)
        total = min(s[0] + s[1] for s in samples)
        target = EMBEDDING_TARGET_MS if embeds else IMPORT_TARGET_MS
        verdict = f"{total:.0f} ≤ {target}: {'met' if total <= target else 'NOT met'}"
        print(
            f"| {folder} | {min(imports):.0f} / {statistics.median(imports):.0f} | "
            f"{model:.0f} | {verdict} | {min(s[2] for s in samples):.0f} |"
        )


if __name__ == "__main__":
    main()
