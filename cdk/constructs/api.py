"""The REST API: `POST /v1/chat/completions` -> Step Functions StartSyncExecution, and
`GET /v1/batches[/{batch_id}]` -> the `batch_status` function (Lambda proxy integration).

A TOKEN Lambda authorizer turns the bearer key into its SHA-256 digest (the key itself goes no
further); a request validator checks the body against `ChatCompletionRequest`'s schema; mapping
templates (`cdk.api_mapping`) build the execution input and turn its output into the HTTP answer.
The batch routes take the same authorizer; their function reads the digest from its context.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cdk import api_mapping
from cdk import constants as c
from cdk.config import StageConfig
from cdk.constructs.common import acknowledge, log_group
from cdk.constructs.functions import function_code, gateway_function
from cdk.constructs.layers import GatewayLayers
from cdk.draft4 import to_draft4
from llm_gateway.contracts import ChatCompletionRequest

JSON = "application/json"


def request_schema() -> dict[str, Any]:
    """The body API Gateway accepts: `ChatCompletionRequest` in draft 4, without `stream: true`
    (Step Functions cannot stream: streaming clients use the streaming function's URL)."""
    schema = to_draft4(ChatCompletionRequest.model_json_schema())
    schema["properties"]["stream"] = {**schema["properties"]["stream"], "enum": [False]}
    return schema


class GatewayApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        state_machine: sfn.IStateMachine,
        layers: GatewayLayers,
        batch_status: lambda_.IFunction,
    ) -> None:
        super().__init__(scope, construct_id)
        self.api = apigateway.RestApi(
            self,
            "RestApi",
            rest_api_name=c.resource_name(stage.name, "api"),
            description=f"{c.PROJECT} {stage.name}: OpenAI-compatible chat completions",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            # The account's role for execution logs. Retained on delete (CDK's default): it is one setting
            # per account and region, which other stages' APIs may rely on.
            cloud_watch_role=True,
            deploy_options=apigateway.StageOptions(
                stage_name=stage.name,
                throttling_rate_limit=stage.throttle_rate_limit,
                throttling_burst_limit=stage.throttle_burst_limit,
                logging_level=apigateway.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # would log prompts and answers
                metrics_enabled=True,
                tracing_enabled=True,
                access_log_destination=apigateway.LogGroupLogDestination(log_group(self, "AccessLogs", stage)),
                access_log_format=_access_log_format(),
            ),
        )
        self.authorizer = self._authorizer(stage, layers)
        for response_type, (status, template) in api_mapping.GATEWAY_RESPONSES.items():
            self.api.add_gateway_response(
                f"{response_type.title().replace('_', '')}Response",
                type=getattr(apigateway.ResponseType, response_type),
                status_code=status or None,
                templates={JSON: template},
            )

        self.validator = self.api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        resource = self.api.root
        for part in c.API_PATH:
            resource = resource.add_resource(part)
        self.chat_completions = resource.add_method(
            "POST",
            self._start_sync_execution(state_machine),
            authorizer=self.authorizer,
            authorization_type=apigateway.AuthorizationType.CUSTOM,
            request_validator=self.validator,
            request_models={JSON: self._request_model()},
            method_responses=[
                apigateway.MethodResponse(
                    status_code=str(status),
                    response_models={JSON: apigateway.Model.EMPTY_MODEL},
                    response_parameters={f"method.response.header.{h}": False for h in api_mapping.ANSWER_HEADERS},
                )
                for status in api_mapping.ANSWER_STATUSES
            ],
        )
        self.list_batches, self.get_batch = self._batch_routes(batch_status)
        self._acknowledge_findings()

    def _authorizer(self, stage: StageConfig, layers: GatewayLayers) -> apigateway.TokenAuthorizer:
        function = gateway_function(
            self,
            "AuthorizerFunction",
            stage=stage,
            name=c.AUTHORIZER_FOLDER,
            code=function_code(c.AUTHORIZER_FOLDER),
            layers=layers,
            environment={},
            timeout_s=c.AUTHORIZER_TIMEOUT_S,
            memory_mb=c.AUTHORIZER_MEMORY_MB,
        )
        return apigateway.TokenAuthorizer(
            self,
            "Authorizer",
            handler=function,
            identity_source=apigateway.IdentitySource.header(c.AUTHORIZER_HEADER),
            validation_regex=c.AUTHORIZER_HEADER_PATTERN,
            results_cache_ttl=cdk.Duration.seconds(c.AUTHORIZER_CACHE_TTL_S),
        )

    def _batch_routes(self, function: lambda_.IFunction) -> tuple[apigateway.Method, apigateway.Method]:
        """`GET /v1/batches` and `GET /v1/batches/{batch_id}`: the same authorizer, a Lambda proxy
        integration to the batch_status function (it may be invoked by these two methods only)."""
        integration = apigateway.LambdaIntegration(function, proxy=True, allow_test_invoke=False)
        batches = self.api.root.resource_for_path("/".join(c.BATCHES_PATH))
        one = batches.add_resource(f"{{{c.BATCH_ID_PARAMETER}}}")
        methods = tuple(
            resource.add_method(
                "GET",
                integration,
                authorizer=self.authorizer,
                authorization_type=apigateway.AuthorizationType.CUSTOM,
                request_validator=self.validator,
                request_parameters=parameters,
            )
            for resource, parameters in (
                (batches, None),
                (one, {f"method.request.path.{c.BATCH_ID_PARAMETER}": True}),
            )
        )
        return methods[0], methods[1]

    def _request_model(self) -> apigateway.Model:
        model = self.api.add_model(
            "ChatCompletionRequest",
            model_name="ChatCompletionRequest",
            content_type=JSON,
            # Replaced below: the real schema is plain JSON, not the JsonSchema struct.
            schema=apigateway.JsonSchema(
                schema=apigateway.JsonSchemaVersion.DRAFT4, type=apigateway.JsonSchemaType.OBJECT
            ),
        )
        cfn_model = model.node.default_child
        assert isinstance(cfn_model, apigateway.CfnModel)
        cfn_model.add_property_override("Schema", request_schema())
        return model

    def _start_sync_execution(self, state_machine: sfn.IStateMachine) -> apigateway.AwsIntegration:
        role = iam.Role(self, "StartSyncExecutionRole", assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"))
        state_machine.grant_start_sync_execution(role)
        request = api_mapping.REQUEST_TEMPLATE.replace(api_mapping.STATE_MACHINE_ARN, state_machine.state_machine_arn)
        return apigateway.AwsIntegration(
            service="states",
            action="StartSyncExecution",
            integration_http_method="POST",
            options=apigateway.IntegrationOptions(
                credentials_role=role,
                passthrough_behavior=apigateway.PassthroughBehavior.NEVER,
                request_templates={JSON: request},
                integration_responses=[
                    apigateway.IntegrationResponse(
                        status_code="200", response_templates={JSON: api_mapping.RESPONSE_TEMPLATE}
                    ),
                    apigateway.IntegrationResponse(
                        status_code="500",
                        selection_pattern=r"[45]\d{2}",
                        response_templates={JSON: api_mapping.SERVICE_ERROR_TEMPLATE},
                    ),
                ],
            ),
        )

    def _acknowledge_findings(self) -> None:
        acknowledge(
            self.api,
            "COG4",
            "Callers authenticate with OpenAI-style API keys (Authorization: Bearer), checked by a Lambda "
            "TOKEN authorizer and the guard step against the tenants' key digests; there is no user pool.",
        )
        acknowledge(
            self.api,
            "APIG3",
            "No WAF web ACL in this stack: throttling is per stage and per tenant (guard rate limits); an "
            "operator who fronts the API with WAF associates the ACL with the stage outside this stack.",
        )
        acknowledge(
            self.api,
            "IAM4",
            "API Gateway's account-level CloudWatch role uses the AWS managed policy made for it "
            "(AmazonAPIGatewayPushToCloudWatchLogs), which CDK attaches for execution logging.",
            findings=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"],
        )


def _access_log_format() -> apigateway.AccessLogFormat:
    """JSON access logs without the caller's IP or identity: the audit log pseudonymises those."""
    fields = {
        "requestId": apigateway.AccessLogField.context_request_id(),
        "requestTime": apigateway.AccessLogField.context_request_time(),
        "httpMethod": apigateway.AccessLogField.context_http_method(),
        "resourcePath": apigateway.AccessLogField.context_resource_path(),
        "status": apigateway.AccessLogField.context_status(),
        "responseLength": apigateway.AccessLogField.context_response_length(),
        "responseLatency": apigateway.AccessLogField.context_response_latency(),
        "integrationLatency": apigateway.AccessLogField.context_integration_latency(),
        "error": apigateway.AccessLogField.context_error_message(),
        "authorizerError": apigateway.AccessLogField.context_authorizer_error(),
    }
    quoted = [f'"{key}":"{value}"' for key, value in fields.items()]
    return apigateway.AccessLogFormat.custom("{" + ",".join(quoted) + "}")
