"""`llm-gateway batch submit | status | results`: batch jobs on the embedded default, with a local
folder (`bucket/`, next to the store file) as the bucket and the same job logic as on AWS.

`submit FILE --tenant T` puts the file under `batches/in/<tenant>/`, creates its job and runs it
with a progress bar. Submitting the same file again finds the same job (one job per object
version) and resumes it if it was interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .store_location import load_local_config, note_if_new

if TYPE_CHECKING:
    from ..adapters.local.batch import FolderObjects, SqliteBatchJobs
    from ..batch.runner import BatchRunner
    from ..config import GatewayConfig
    from ..ports import BatchJob, BatchJobs


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    batch_cmd = commands.add_parser(
        "batch", help="batch jobs: submit a JSONL file, see status, get results", parents=parents
    )
    batch_cmd.add_argument("action", choices=["submit", "status", "results"])
    batch_cmd.add_argument("target", nargs="?", help="submit: the JSONL file; status/results: the job id")
    batch_cmd.add_argument("--tenant", help="submit: the tenant the file runs for; status: only its jobs")
    batch_cmd.add_argument("--errors", action="store_true", help="results: print the errors file instead")
    batch_cmd.add_argument("--parallel", type=int, default=4, help="lines answered at once (no provider batch API)")
    batch_cmd.add_argument(
        "--table", help="status: a deployment's batch job table (DynamoDB) instead of the local store"
    )


def run(args: argparse.Namespace) -> int:
    from ..adapters.local.batch import FolderObjects, SqliteBatchJobs
    from ..adapters.local.wiring import local_deps
    from ..batch.runner import BatchRejected, BatchRunner
    from .main import deployment_table_client, start_local_endpoints

    if args.table:
        if args.action != "status":
            raise ConfigError("--table works with status; a deployment's files are in its bucket under batches/out/")
        from ..adapters.aws.batch import DynamoBatchJobs

        return _status(DynamoBatchJobs(args.table, deployment_table_client()), args.target, args.tenant)
    if args.action == "results" and not args.target:
        raise ConfigError("batch results needs a job id: llm-gateway batch results JOB [--errors]")
    config = load_local_config(args.config)
    # What submit needs is checked before anything starts: the model endpoint takes seconds.
    source, data = _submission(args, config) if args.action == "submit" else (None, b"")
    with contextlib.ExitStack() as stack:
        if source is None:
            note_if_new(config.storage_path)
        jobs = SqliteBatchJobs(config.storage_path)
        stack.callback(jobs.close)
        objects = FolderObjects(Path(config.storage_path).parent / "bucket")
        if args.action == "status":
            return _status(jobs, args.target, args.tenant)
        if source is None:
            return _results(jobs, objects, args.target, args.errors)
        config, _ = start_local_endpoints(config, stack)
        key = f"batches/in/{args.tenant}/{source.name}"
        runner = BatchRunner(local_deps(config, stack), jobs, objects, parallel=args.parallel)
        objects.put(key, data)
        try:
            job, created = runner.submit(key)
        except BatchRejected as exc:
            raise ConfigError(str(exc)) from exc
        print(f"{'created' if created else 'found'} job {job.job_id} ({job.requests} requests, {job.invalid} invalid)")
        if job.status == "failed":
            print(f"the job failed: {job.message}", file=sys.stderr)
            return 1
        job = _run_with_progress(runner, job.job_id)
        counts = runner.counts(job.job_id)
        print(f"{job.status}: {counts.answered} answered, {counts.failed} errors")
        if job.results_key and job.errors_key:
            print(f"results: {objects.root / job.results_key}")
            print(f"errors:  {objects.root / job.errors_key}")
    return 0


def _submission(args: argparse.Namespace, config: GatewayConfig) -> tuple[Path, bytes]:
    """The file `batch submit` names and its bytes, once the file reads and the tenant exists."""
    if not args.target or not args.tenant:
        raise ConfigError("batch submit needs the JSONL file and --tenant: llm-gateway batch submit FILE --tenant T")
    if args.tenant not in config.tenants:
        raise ConfigError(f"no tenant '{args.tenant}' in the configuration")
    source = Path(args.target)
    try:
        return source, source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror}") from exc


def _run_with_progress(runner: BatchRunner, job_id: str) -> BatchJob:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as progress:
        total = runner.counts(job_id).total
        task = progress.add_task(job_id, total=total)

        def advance(done: int, lines: int) -> None:
            progress.update(task, completed=done, total=lines)

        runner.on_progress = advance
        advance(runner.counts(job_id).done, total)
        return runner.run(job_id)


def _status(jobs: BatchJobs, job_id: str | None, tenant: str | None) -> int:
    selected = [jobs.job(job_id)] if job_id else jobs.jobs(tenant)
    if job_id and selected[0] is None:
        raise ConfigError(f"no batch job {job_id}")
    for job in selected:
        assert job is not None
        states: dict[str, int] = {}
        for line in jobs.lines(job.job_id):
            states[line.state] = states.get(line.state, 0) + 1
        progress = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        print(f"{job.job_id} {job.tenant} {job.status} {job.source}: {progress or job.message}")
    return 0


def _results(jobs: SqliteBatchJobs, objects: FolderObjects, job_id: str, errors: bool) -> int:
    job = jobs.job(job_id)
    if job is None:
        raise ConfigError(f"no batch job {job_id}")
    key = job.errors_key if errors else job.results_key
    if job.status != "completed" or key is None:
        raise ConfigError(f"job {job.job_id} is {job.status}: no output yet")
    data, _ = objects.get(key)
    sys.stdout.write(data.decode("utf-8"))
    return 0
