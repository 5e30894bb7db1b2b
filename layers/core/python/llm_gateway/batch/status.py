"""Batch status for a tenant: `GET /v1/batches` and `GET /v1/batches/{id}` answers, as the OpenAI
Batch API words them. The gateway's HTTP app and the REST API's `batch_status` function both
answer from here, so the two runtimes give the same objects and the same 404s."""

from __future__ import annotations

from typing import Any

from ..errors import NotFound
from ..ports import BatchJobs
from .runner import batch_object


def tenant_batches(jobs: BatchJobs, tenant: str) -> dict[str, Any]:
    """The tenant's jobs, newest first (the store's first 100), as an OpenAI list of batches."""
    return {"object": "list", "data": [batch_object(jobs, job) for job in jobs.jobs(tenant)], "has_more": False}


def tenant_batch(jobs: BatchJobs, tenant: str, job_id: str) -> dict[str, Any]:
    """One of the tenant's jobs as an OpenAI batch; `NotFound` for an unknown id and for another
    tenant's job alike (a caller learns nothing about other tenants' jobs)."""
    job = jobs.job(job_id)
    if job is None or job.tenant != tenant:
        raise NotFound(f"No batch found with id '{job_id}'.")
    return batch_object(jobs, job)
