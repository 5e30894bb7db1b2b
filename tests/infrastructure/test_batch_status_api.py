"""The REST API's batch routes: `GET /v1/batches` and `GET /v1/batches/{batch_id}` behind the chat
completions' authorizer, proxied to the batch_status function, which may only read the job table."""

from __future__ import annotations

from typing import Any

import pytest

from cdk import constants as c
from llm_gateway.aws import batch_status
from tests.infrastructure.cfn import (
    actions,
    api_methods,
    flatten,
    functions_by_folder,
    resource_refs,
    resources,
    role_statements,
)
from tests.infrastructure.synth import Synthesized

BATCHES = "/" + "/".join(c.BATCHES_PATH)
ONE_BATCH = f"{BATCHES}/{{{c.BATCH_ID_PARAMETER}}}"
XRAY_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


@pytest.fixture(scope="module")
def template(dev: Synthesized) -> dict[str, Any]:
    return dev.to_json()


def test_the_names_the_function_reads_are_the_ones_the_api_sends() -> None:
    assert c.BATCH_ID_PARAMETER == batch_status.BATCH_ID
    assert c.AUTHORIZER_CONTEXT_KEY in batch_status.AuthorizerContext.model_fields


def test_both_batch_routes_are_gets_behind_the_authorizer_proxied_to_batch_status(template: dict[str, Any]) -> None:
    methods = api_methods(template)
    assert set(methods) == {("POST", "/" + "/".join(c.API_PATH)), ("GET", BATCHES), ("GET", ONE_BATCH)}
    (authorizer_id,) = resources(template, "AWS::ApiGateway::Authorizer")
    status_id, _ = functions_by_folder(template)[c.BATCH_STATUS_FOLDER]
    for path in (BATCHES, ONE_BATCH):
        method = methods[("GET", path)]
        assert method["AuthorizationType"] == "CUSTOM", path
        assert method["AuthorizerId"] == {"Ref": authorizer_id}, path
        integration = method["Integration"]
        assert (integration["Type"], integration["IntegrationHttpMethod"]) == ("AWS_PROXY", "POST"), path
        assert flatten(integration["Uri"]).endswith(f"/functions/<{status_id}.Arn>/invocations"), path
    assert methods[("GET", ONE_BATCH)]["RequestParameters"] == {f"method.request.path.{c.BATCH_ID_PARAMETER}": True}


def test_api_gateway_may_invoke_batch_status_through_the_two_routes_only(template: dict[str, Any]) -> None:
    status_id, _ = functions_by_folder(template)[c.BATCH_STATUS_FOLDER]
    permissions = [
        p["Properties"]
        for p in resources(template, "AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Fn::GetAtt": [status_id, "Arn"]}
    ]
    assert {p["Principal"] for p in permissions} == {"apigateway.amazonaws.com"}
    # Each source ARN is <api>/<the deployed stage>/GET/<route>: no test-invoke-stage permission
    api_id = next(iter(resources(template, "AWS::ApiGateway::RestApi")))
    stage_ref = resources(template, "AWS::ApiGateway::Stage").popitem()[0]
    sources = sorted(flatten(p["SourceArn"]) for p in permissions)
    assert [s.rsplit(":", 1)[1] for s in sources] == [
        f"<{api_id}>/<{stage_ref}>/GET{BATCHES}",
        f"<{api_id}>/<{stage_ref}>/GET{BATCHES}/*",
    ]


def test_the_batch_status_role_only_reads_the_job_table(template: dict[str, Any]) -> None:
    _, properties = functions_by_folder(template)[c.BATCH_STATUS_FOLDER]
    jobs = next(key for key in resources(template, "AWS::DynamoDB::Table") if key.startswith("StoresBatchJobs"))
    statements = role_statements(template, properties)
    assert {s["Effect"] for s in statements} == {"Allow"}
    granted = {action for s in statements for action in actions(s)}
    assert granted == set(c.BATCH_JOB_READ_ACTIONS) | XRAY_ACTIONS
    assert set(c.BATCH_JOB_READ_ACTIONS) == {"dynamodb:GetItem", "dynamodb:Query"}  # no write, no scan
    (table_statement,) = [s for s in statements if any(a.startswith("dynamodb:") for a in actions(s))]
    assert sorted(resource_refs(table_statement)) == sorted([f"<{jobs}.Arn>", f"<{jobs}.Arn>/index/by_tenant"])
    # The job table is where its environment says; no bucket, workflow or secret to reach
    variables = properties["Environment"]["Variables"]
    assert variables[c.ENV_BATCH_TABLE] == {"Ref": jobs}
    assert c.ENV_BATCH_BUCKET not in variables and c.ENV_BATCH_STATE_MACHINE not in variables
    assert properties["Handler"] == c.HANDLER
