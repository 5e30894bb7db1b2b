"""The `batch_status` function answers the REST API's proxy events from the job table on DynamoDB:
the caller's tenant (from the authorizer's key digest) sees its own jobs as OpenAI batch objects,
and nothing of another tenant's."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from llm_gateway.adapters.aws.batch import DynamoBatchJobs, batch_jobs_key_schema
from llm_gateway.aws import batch_status, runtime
from llm_gateway.ports import BatchJob, BatchLine
from tests.integration.test_handlers import EVENTS, FakeLambdaContext, event, load_handler
from tests.support.moto_server import moto_server

ACME_DIGEST = "24180b61f1fb779a0c8b55727cfac504753209445bfc449ebc08b2a18f51a2bb"  # sk-test-acme
GLOBEX_DIGEST = "0e9dea070f74f0c01e91d44b60c29f2a7ef20125fb2aaff45cbee0bea6e4c8fe"  # sk-test-globex


def _job(job_id: str, tenant: str, created_at: float, lines: list[int | None]) -> tuple[BatchJob, list[BatchLine]]:
    """A running job whose lines are done with these statuses (None: not answered yet)."""
    job = BatchJob(
        job_id=job_id,
        tenant=tenant,
        source=f"batches/in/{tenant}/{job_id}.jsonl",
        version="v1",
        created_at=created_at,
        updated_at=created_at,
        requests=len(lines),
        invalid=0,
    )
    return job, [
        BatchLine(job_id=job_id, index=i, line=i + 1, custom_id=f"c{i}", state="new" if s is None else "done", status=s)
        for i, s in enumerate(lines)
    ]


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> Iterator[DynamoBatchJobs]:
    """The job table on moto's server, with acme's two jobs and globex's one; the function's
    environment points at it."""
    with moto_server() as moto:
        dynamodb = moto.client("dynamodb")
        name = f"jobs-{uuid.uuid4().hex[:8]}"
        dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **batch_jobs_key_schema())
        jobs = DynamoBatchJobs(name, dynamodb)
        jobs.create(*_job("batch_acme_old", "acme", 1_790_000_000.0, [200, 200, 400]))
        jobs.create(*_job("batch_acme_new", "acme", 1_790_000_100.0, [200, None]))
        jobs.create(*_job("batch_globex", "globex", 1_790_000_050.0, [200]))
        for key, value in {
            **moto.environment(),
            "GATEWAY_CONFIG_PATH": str(EVENTS / "config.yaml"),
            "BATCH_TABLE": name,
            "POWERTOOLS_TRACE_DISABLED": "true",
        }.items():
            monkeypatch.setenv(key, value)
        runtime.settings.cache_clear()
        batch_status.job_table.cache_clear()
        batch_status.key_owners.cache_clear()
        yield jobs
        batch_status.job_table.cache_clear()
        batch_status.key_owners.cache_clear()
        runtime.settings.cache_clear()


def get(batch_id: str | None, digest: str | None = ACME_DIGEST) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Run the handler on the recorded proxy event for `GET /v1/batches[/{batch_id}]`."""
    proxy = copy.deepcopy(event("batch_status"))
    if batch_id is None:
        proxy["resource"] = proxy["requestContext"]["resourcePath"] = "/v1/batches"
        proxy["path"], proxy["pathParameters"] = "/v1/batches", None
    else:
        proxy["path"], proxy["pathParameters"] = f"/v1/batches/{batch_id}", {"batch_id": batch_id}
    if digest is None:
        del proxy["requestContext"]["authorizer"]["api_key_sha256"]
    else:
        proxy["requestContext"]["authorizer"]["api_key_sha256"] = digest
    response = load_handler("batch_status").lambda_handler(proxy, FakeLambdaContext())
    assert response["isBase64Encoded"] is False
    return response["statusCode"], response["headers"], json.loads(response["body"])


def test_the_owner_lists_its_jobs_newest_first_as_openai_batches(table: DynamoBatchJobs) -> None:
    status, headers, body = get(None)
    assert status == 200 and headers["content-type"] == "application/json"
    assert body["object"] == "list" and body["has_more"] is False
    assert [b["id"] for b in body["data"]] == ["batch_acme_new", "batch_acme_old"]
    assert {b["object"] for b in body["data"]} == {"batch"}
    # globex sees its own job only
    _, _, theirs = get(None, GLOBEX_DIGEST)
    assert [b["id"] for b in theirs["data"]] == ["batch_globex"]


def test_the_owner_gets_one_job_with_its_request_counts(table: DynamoBatchJobs) -> None:
    status, _, batch = get("batch_acme_old")
    assert status == 200
    assert batch["id"] == "batch_acme_old" and batch["status"] == "in_progress"
    assert batch["endpoint"] == "/v1/chat/completions"
    assert batch["input_file"] == "batches/in/acme/batch_acme_old.jsonl"
    assert batch["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    assert batch["created_at"] == 1_790_000_000 and batch["completed_at"] is None


@pytest.mark.parametrize("batch_id", ["batch_globex", "batch_nowhere"])
def test_another_tenants_job_is_as_unknown_as_a_missing_one(table: DynamoBatchJobs, batch_id: str) -> None:
    status, headers, body = get(batch_id)
    assert status == 404 and headers["content-type"] == "application/json"
    assert body == {
        "error": {
            "message": f"No batch found with id '{batch_id}'.",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_found",
        }
    }


@pytest.mark.parametrize("digest", [None, "0" * 64])
def test_a_key_of_no_tenant_is_refused_with_401(table: DynamoBatchJobs, digest: str | None) -> None:
    status, _, body = get("batch_acme_old", digest)
    assert status == 401
    assert body["error"]["type"] == "authentication_error" and body["error"]["code"] == "invalid_api_key"
    status, _, body = get(None, digest)
    assert status == 401 and "data" not in body
