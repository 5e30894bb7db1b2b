"""Batch jobs on AWS: the `batch_submit` and `batch_work` functions.

- `batch_submit` is triggered by S3 `ObjectCreated` under `batches/in/<tenant>/`: per record it
  creates the job of that object version (the tenant from the key prefix, checked against the
  configuration) and starts the job's Standard workflow execution, named after the job. S3
  delivers events at least once: Powertools idempotency (bucket, key, version id) answers a
  repeated event from its record, the job table's conditional create never makes a second job,
  and an execution name is used once.
- `batch_work` is the workflow's one task: it does what the job needs next within the function's
  time (`BatchRunner.step`: prepare, dispatch, collect provider batches, complete) and tells the
  workflow whether the job is finished and how long to wait before the next look. A timeout or a
  crash only repeats the task: every line move is conditional.
"""

from __future__ import annotations

import time
import urllib.parse
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from ..batch.runner import BatchRejected, BatchRunner, poll_delay_s
from .observability import logger, metrics
from .runtime import deps, settings

DEADLINE_MARGIN_MS = 60_000  # stop taking new lines this long before the function's timeout


class ObjectCreated(BaseModel):
    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    version: str | None = None


class WorkInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job_id: str
    attempt: int = Field(default=0, ge=0)


@cache
def runner() -> BatchRunner:
    from ..adapters.aws.batch import DynamoBatchJobs, S3Objects, default_s3_client
    from ..adapters.aws.dynamodb import default_client

    current = settings()
    if not (current.batch_table and current.batch_bucket):
        raise RuntimeError("batch functions need BATCH_TABLE and BATCH_BUCKET")
    return BatchRunner(
        deps(),
        DynamoBatchJobs(current.batch_table, default_client()),
        S3Objects(current.batch_bucket, default_s3_client()),
    )


@cache
def _idempotency() -> tuple[DynamoDBPersistenceLayer, IdempotencyConfig]:
    table = settings().idempotency_table
    if not table:
        raise RuntimeError("batch_submit needs IDEMPOTENCY_TABLE")
    config = IdempotencyConfig(event_key_jmespath="[bucket, key, version]", expires_after_seconds=7 * 24 * 3600)
    return DynamoDBPersistenceLayer(table_name=table), config


def submit_object(record: dict[str, Any]) -> dict[str, Any]:
    """Create the job of one uploaded object version and start its workflow (once)."""
    created = ObjectCreated.model_validate(record)
    if created.bucket != settings().batch_bucket:
        raise BatchRejected(f"bucket {created.bucket} is not this deployment's batch bucket")
    job, new = runner().submit(created.key, created.version)
    metrics.add_metric(name="BatchJobsCreated" if new else "BatchJobsFound", unit="Count", value=1)
    if job.status == "running":
        _start(job.job_id)
    return {"job_id": job.job_id, "created": new, "status": job.status}


def _start(job_id: str) -> None:
    import json

    import boto3

    client = boto3.client("stepfunctions")
    try:
        client.start_execution(
            stateMachineArn=settings().batch_state_machine_arn, name=job_id, input=json.dumps({"job_id": job_id})
        )
    except client.exceptions.ExecutionAlreadyExists:
        logger.info("the job's workflow already ran or runs", extra={"job_id": job_id})


@logger.inject_lambda_context
@metrics.log_metrics
def submit_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    persistence, config = _idempotency()
    config.register_lambda_context(context)
    once = idempotent_function(data_keyword_argument="record", persistence_store=persistence, config=config)(
        submit_object
    )
    outcomes = []
    metrics.add_metric(name="BatchEventRecords", unit="Count", value=len(event.get("Records", [])))
    for raw in event.get("Records", []):
        s3 = raw.get("s3", {})
        record = {
            "bucket": s3.get("bucket", {}).get("name", ""),
            "key": urllib.parse.unquote_plus(s3.get("object", {}).get("key", "")),  # S3 events URL-encode keys
            "version": s3.get("object", {}).get("versionId"),
        }
        try:
            outcomes.append(once(record=record))
        except BatchRejected as exc:  # not a batch this deployment runs: say so, do not retry
            logger.warning("batch file refused", extra={"key": record["key"], "reason": str(exc)})
            metrics.add_metric(name="BatchFilesRefused", unit="Count", value=1)
            outcomes.append({"key": record["key"], "refused": str(exc)})
    return {"jobs": outcomes}


@logger.inject_lambda_context
@metrics.log_metrics
def work_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    work = WorkInput.model_validate(event)
    remaining_ms = context.get_remaining_time_in_millis() - DEADLINE_MARGIN_MS
    deadline = time.monotonic() + max(remaining_ms, 5_000) / 1000
    job, waiting = runner().step(work.job_id, deadline)
    metrics.add_metric(name="BatchWorkSteps", unit="Count", value=1)
    attempt = work.attempt + 1 if waiting else 0
    return {
        "job_id": job.job_id,
        "status": job.status,
        "done": job.status != "running",
        "attempt": attempt,
        "wait_s": int(poll_delay_s(work.attempt, settings().batch_poll_s)) if waiting else 0,
    }
