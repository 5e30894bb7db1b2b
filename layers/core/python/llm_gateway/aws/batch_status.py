"""The `batch_status` function: `GET /v1/batches` and `GET /v1/batches/{batch_id}` on the REST API,
a Lambda proxy integration behind the same TOKEN authorizer as the chat completions.

The authorizer puts the bearer key's SHA-256 digest in the request's authorizer context
(`api_key_sha256`); the key's tenant comes from the gateway configuration
(`GatewayConfig.key_owners`, the map the guard step authenticates with), and only that tenant's
jobs are read (`llm_gateway.batch.status`, the gateway HTTP app's answers): another tenant's job
is a 404, as if it did not exist. Errors have the OpenAI shape. The function reads the job table
and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from ..batch.status import tenant_batch, tenant_batches
from ..config import load_config
from ..errors import AuthenticationFailed, GatewayError, to_http
from ..ports import BatchJobs
from .observability import logger, metrics
from .runtime import settings

BATCH_ID = "batch_id"  # the path parameter of GET /v1/batches/{batch_id}


class AuthorizerContext(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    api_key_sha256: str | None = None


class RequestContext(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    authorizer: AuthorizerContext = Field(default_factory=AuthorizerContext)


class BatchStatusRequest(BaseModel):
    """What the function reads of an API Gateway (REST) proxy event."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    path_parameters: dict[str, str] | None = Field(default=None, alias="pathParameters")
    request_context: RequestContext = Field(alias="requestContext")

    @property
    def batch_id(self) -> str | None:
        return (self.path_parameters or {}).get(BATCH_ID)


def answer(request: BatchStatusRequest, jobs: BatchJobs, key_owners: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """The proxy integration's response: the caller's tenant's batches, one batch, or an OpenAI error."""
    digest = request.request_context.authorizer.api_key_sha256
    owner = key_owners.get(digest) if digest else None
    try:
        if owner is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        tenant, batch_id = owner[0], request.batch_id
        body = tenant_batches(jobs, tenant) if batch_id is None else tenant_batch(jobs, tenant, batch_id)
    except GatewayError as error:
        status, headers, raw = to_http(error)
        return _response(status, raw.decode(), headers)
    return _response(200, json.dumps(body, ensure_ascii=False, separators=(",", ":")))


def _response(status: int, body: str, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json", **(headers or {})},
        "body": body,
        "isBase64Encoded": False,
    }


@cache
def job_table() -> BatchJobs:
    from ..adapters.aws.batch import DynamoBatchJobs
    from ..adapters.aws.dynamodb import default_client

    table = settings().batch_table
    if not table:
        raise RuntimeError("batch_status needs BATCH_TABLE")
    return DynamoBatchJobs(table, default_client())


@cache
def key_owners() -> dict[str, tuple[str, str]]:
    return load_config(settings().config_path).key_owners()


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = BatchStatusRequest.model_validate(event)  # pydantic directly, as `handler.step_handler`
    response = answer(request, job_table(), key_owners())
    metrics.add_metric(name="BatchStatusRequests", unit=MetricUnit.Count, value=1)
    return response
