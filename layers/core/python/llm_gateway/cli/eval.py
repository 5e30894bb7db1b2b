"""`llm-gateway eval`: eval suites through the gateway's chain (docs/experiments.md).

`eval run SUITE.jsonl (--model M | --route R) [--config FILE] --out DIR [--tenant T] [--judge J]
[--limit N]` runs each case as the tenant (the configuration's first, unless named), caches
bypassed, scores it and writes `DIR/report.json` (with `pass_rate`) and `DIR/report.md`. SUITE is a
path or the name of a shipped suite (`humaneval`, `extraction`). With `--batch-bucket BUCKET` (a
deployment's batch bucket) the suite runs as one batch job of that deployment instead
(`experiments.batch_eval`): uploaded under `batches/in/<tenant>/evals/`, waited for (`--wait`,
`--poll-s`), its results scored here.

`eval compare RUN_A RUN_B [--alpha 0.05] [--json]` (each a run's folder or its report.json) says
whether B is worse than A, better, or no evidence either way; exit 1 when worse (for CI).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .store_location import load_local_config, report_folder


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    evals = commands.add_parser("eval", help="run an eval suite through the gateway, or compare two runs")
    actions = evals.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="run a suite on a model or route and write its report", parents=parents)
    run.add_argument("suite", help="a suite's JSONL file, or a shipped suite: humaneval, extraction")
    target = run.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", help="a model of the tenant to answer")
    target.add_argument("--route", help="a route of the tenant to answer")
    run.add_argument("--out", type=Path, required=True, help="the folder for report.json and report.md")
    run.add_argument("--tenant", help="run as this tenant (the configuration's first by default)")
    run.add_argument("--judge", help="the model that grades `judge` cases")
    run.add_argument("--limit", type=int, help="only the first N cases")
    run.add_argument(
        "--batch-bucket",
        help="run it as a batch job of a deployment (the stack's BatchBucket output), with the environment's AWS "
        "credentials, and wait for its results",
    )
    run.add_argument("--wait", type=float, default=86_400.0, help="how long to wait for the batch, in seconds (1 day)")
    run.add_argument("--poll-s", type=float, default=10.0, help="how often to look for the batch's results (10 s)")
    compare = actions.add_parser("compare", help="is run B worse than run A? (exit 1 when it is)")
    compare.add_argument("run_a", type=Path, help="the baseline run's folder or report.json")
    compare.add_argument("run_b", type=Path, help="the candidate run's folder or report.json")
    compare.add_argument("--alpha", type=float, default=0.05, help="the test's false-positive rate (0.05)")
    compare.add_argument("--json", action="store_true", help="machine-readable output")


def evaluate(args: argparse.Namespace) -> int:
    return run(args) if args.action == "run" else compare(args)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..adapters.local.wiring import local_deps
    from ..experiments.evals import Gateway, SuiteError, load_suite, report, run_suite
    from .main import chain_config

    config = load_local_config(args.config)
    tenant = args.tenant or next(iter(config.tenants), None)
    if tenant is None or tenant not in config.tenants:
        raise ConfigError(f"tenant {tenant} is not in this configuration")
    target = args.model or args.route
    policy = config.tenants[tenant]
    if target not in (policy.routes if args.route else policy.allowed_models):
        where = "a route of tenant" if args.route else "a model (allowed_models) of tenant"
        raise ConfigError(f"{target} is not {where} {tenant}")
    if args.judge and args.judge not in policy.allowed_models and args.judge not in policy.routes:
        raise ConfigError(f"judge {args.judge} is neither a route nor a model (allowed_models) of tenant {tenant}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit is at least 1")
    try:
        cases = load_suite(args.suite)[: args.limit]
    except SuiteError as exc:
        raise ConfigError(str(exc)) from None
    if any(c.scorer == "judge" for c in cases) and not args.judge:
        raise ConfigError("the suite has cases a judge scores: name the judge model (--judge)")
    report_folder(args.out, ("report.json", "report.md"))
    if args.batch_bucket:
        return _run_in_batch(args, tenant, str(target), cases)
    if not (policy.api_keys or policy.demo):
        raise ConfigError(f"tenant {tenant} has no API key to run as")
    columns = (TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with contextlib.ExitStack() as stack, Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        gateway = Gateway(local_deps(chain_config(config, stack), stack), tenant)
        task = bar.add_task("eval", total=len(cases))
        results = run_suite(cases, gateway, str(target), args.judge, lambda: bar.advance(task))
    found = report(results, suite=args.suite, target=target, tenant=tenant, judge=args.judge)
    return _written(args.out, found)


def write_run(out: Path, found: dict[str, Any]) -> None:
    """A run's `report.json` and `report.md` in `out`."""
    from ..experiments.evals import render

    (out / "report.json").write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render(found), encoding="utf-8")


def _written(out: Path, found: dict[str, Any]) -> int:
    write_run(out, found)
    print(
        f"pass_rate={found['pass_rate']:.4f} ({found['passed']} of {found['cases']}) cost_usd={found['cost_usd']:.6g} "
        f"report {out / 'report.json'}"
    )
    return 0


def _run_in_batch(args: argparse.Namespace, tenant: str, target: str, cases: list[Any]) -> int:
    """The suite as one batch file of the deployment's bucket; its results scored when the job is done."""
    import time

    import boto3

    from ..batch.runner import job_id_for, output_keys
    from ..experiments.batch_eval import batch_file, batch_key, batch_results
    from ..experiments.evals import report

    if args.judge:
        raise ConfigError("a judge runs after each answer: run judged suites online (without --batch-bucket)")
    if args.poll_s <= 0 or args.wait <= 0:
        raise ConfigError("--poll-s and --wait are positive")
    from ..batch.format import MAX_LINES

    if len(cases) > MAX_LINES:
        raise ConfigError(f"a batch holds at most {MAX_LINES} requests; the suite has {len(cases)}: use --limit")
    try:
        data = batch_file(cases, target)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    s3 = boto3.client("s3")
    key = batch_key(tenant, args.suite, target, time.time())
    put = s3.put_object(Bucket=args.batch_bucket, Key=key, Body=data, ContentType="application/jsonl")
    version = put.get("VersionId")
    if not version:
        raise ConfigError(f"bucket {args.batch_bucket} keeps no object versions: it is not a deployment's batch bucket")
    job_id = job_id_for(tenant, key, version)
    print(f"batch {job_id}: {len(cases)} cases in s3://{args.batch_bucket}/{key}", file=sys.stderr)
    results_key, errors_key = output_keys(tenant, job_id)
    deadline = time.monotonic() + args.wait
    while True:
        try:
            results = s3.get_object(Bucket=args.batch_bucket, Key=results_key)["Body"].read()
            errors = s3.get_object(Bucket=args.batch_bucket, Key=errors_key)["Body"].read()
            break
        except s3.exceptions.NoSuchKey:
            if time.monotonic() > deadline:
                print(f"batch {job_id} has not finished in {args.wait:g} s; GET /v1/batches/{job_id}", file=sys.stderr)
                return 2
            time.sleep(args.poll_s)
    try:
        scored = batch_results(cases, results, errors)
    except ValueError as exc:
        raise ConfigError(f"batch {job_id}: {exc}") from None
    found = report(scored, suite=args.suite, target=target, tenant=tenant, judge=None)
    return _written(args.out, {**found, "latency_ms": {}, "batch": {"job_id": job_id, "input": key}})


MAX_REPORT_BYTES = 512 * 2**20  # a run of the largest suite with its answers is well under this


def read_run(path: Path) -> dict[str, Any]:
    file = path / "report.json" if path.is_dir() else path
    try:
        if file.stat().st_size > MAX_REPORT_BYTES:
            raise ConfigError(f"{file}: larger than a run's report can be ({MAX_REPORT_BYTES // 2**20} MiB)")
        found = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{file}: not a run's report ({exc})") from None
    if not isinstance(found, dict) or not isinstance(found.get("results"), list):
        raise ConfigError(f"{file}: not a run's report (no results)")
    return found


def compare(args: argparse.Namespace) -> int:
    from ..experiments.evals import compare as paired

    if not 0 < args.alpha < 1:
        raise ConfigError("--alpha is between 0 and 1")
    try:
        found = paired(read_run(args.run_a), read_run(args.run_b), args.alpha)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot compare these runs: {exc}") from None
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        low, high = found["interval"]
        print(
            f"verdict={found['verdict']}\n"
            f"# B {found['pass_rate_b']:.1%} against A {found['pass_rate_a']:.1%} on {found['cases']} cases: "
            f"difference {found['difference']:+.1%} ({found['confidence']:.0%} interval {low:+.1%} to {high:+.1%}); "
            f"A passed and B failed {found['a_passed_b_failed']}, B passed and A failed {found['b_passed_a_failed']}; "
            f"McNemar p = {found['p_value']:.3g}"
        )
    return 1 if found["verdict"] == "worse" else 0
