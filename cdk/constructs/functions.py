"""The Lambda functions of the chain: one per step folder under functions/, all alike."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as lambda_event_sources
from constructs import Construct

from cdk import constants as c
from cdk.config import StageConfig
from cdk.constructs.common import RUNTIME, acknowledge, architecture, log_group
from cdk.constructs.layers import GatewayLayers
from cdk.constructs.storage import GatewayStores
from llm_gateway.pipeline import FAILED, FINISH, REST_INVOKE_POLICY, STEPS, Step

_LAMBDA_LOG_LEVEL = {
    "DEBUG": lambda_.ApplicationLogLevel.DEBUG,
    "INFO": lambda_.ApplicationLogLevel.INFO,
    "WARNING": lambda_.ApplicationLogLevel.WARN,
    "ERROR": lambda_.ApplicationLogLevel.ERROR,
}


def function_code(folder: str, entry: str = "handler.py") -> lambda_.Code:
    """The asset of one function: its folder under functions/ and nothing else."""
    path = c.ROOT / c.FUNCTIONS_DIR / folder
    if not (path / entry).is_file():
        raise FileNotFoundError(f"{c.FUNCTIONS_DIR}/{folder}/{entry} is missing: every function ships from its folder")
    return lambda_.Code.from_asset(str(path), exclude=list(c.ASSET_EXCLUDES))


def powertools_environment(stage: StageConfig) -> dict[str, str]:
    return {
        "POWERTOOLS_SERVICE_NAME": c.POWERTOOLS_SERVICE_NAME,
        "POWERTOOLS_METRICS_NAMESPACE": c.POWERTOOLS_METRICS_NAMESPACE,
        "POWERTOOLS_LOG_LEVEL": stage.log_level,
    }


def gateway_function(
    scope: Construct,
    construct_id: str,
    *,
    stage: StageConfig,
    name: str,
    code: lambda_.Code,
    layers: GatewayLayers,
    environment: Mapping[str, str],
    extra_layers: Sequence[lambda_.ILayerVersion] = (),
    handler: str = c.HANDLER,
    timeout_s: int = c.STEP_TIMEOUT_S,
    memory_mb: int | None = None,
    reserved_concurrency: int | None = None,
) -> lambda_.Function:
    """A Python 3.12 function with X-Ray tracing, JSON logs in its own log group, Powertools env, and
    the layers its folder's features need (`GatewayLayers.for_function`) plus `extra_layers`."""
    function = lambda_.Function(
        scope,
        construct_id,
        function_name=c.resource_name(stage.name, name),
        runtime=RUNTIME,
        architecture=architecture(stage),
        code=code,
        handler=handler,
        layers=layers.for_function(name, extra_layers),
        environment={**powertools_environment(stage), **readable(name, environment)},
        timeout=cdk.Duration.seconds(timeout_s),
        memory_size=memory_mb or stage.memory_mb,
        reserved_concurrent_executions=reserved_concurrency,
        tracing=lambda_.Tracing.ACTIVE,
        logging_format=lambda_.LoggingFormat.JSON,
        application_log_level_v2=_LAMBDA_LOG_LEVEL[stage.log_level],
        system_log_level_v2=lambda_.SystemLogLevel.WARN,
        log_group=log_group(scope, f"{construct_id}Logs", stage),
    )
    acknowledge(
        function,
        "L1",
        "Python 3.12 is pinned on purpose: the deps layers' wheels are built for CPython 3.12.",
    )
    acknowledge(
        function,
        "IAM4",
        "AWSLambdaBasicExecutionRole is the AWS managed policy that only lets a function write its logs.",
        findings=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"],
    )
    acknowledge(
        function,
        "IAM5",
        "Active tracing: xray:PutTraceSegments and xray:PutTelemetryRecords take no resource ARN.",
        findings=["Resource::*"],
    )
    return function


# Secrets a function reads as soon as it builds its dependencies, by the environment variable naming
# them. (The Momento key is read when a Momento client is first built: only by the functions granted
# it, but every AWS-store function's settings name it.)
_SECRET_VARIABLES = {
    c.ENV_PROVIDER_KEYS_SECRET: c.PROVIDER_KEYS,
    c.ENV_PSEUDONYM_SECRET: c.PSEUDONYMS,
}


# Tables a function uses as soon as it is named to it, by the variable naming them, and the
# accesses that let it (a routing function names the rollout table: it reads it on every request).
_TABLE_VARIABLES = {
    c.ENV_ROLLOUT_TABLE: frozenset({c.ROLLOUTS, c.ROLLOUT_GATES}),
    c.ENV_SHADOW_QUEUE_URL: frozenset({c.SHADOW}),  # a finishing function sends sampled copies to it
    c.ENV_SHADOW_TABLE: frozenset({c.SHADOW_PAIRS}),
}


def readable(folder: str, environment: Mapping[str, str]) -> dict[str, str]:
    """`environment` without the secrets and tables `FUNCTION_ACCESS` does not let the function
    read: it would read them (at its cold start, or on every request) and fail with AccessDenied."""
    access = c.FUNCTION_ACCESS.get(folder, frozenset())
    return {
        k: v
        for k, v in environment.items()
        if (k not in _SECRET_VARIABLES or _SECRET_VARIABLES[k] in access)
        and (k not in _TABLE_VARIABLES or _TABLE_VARIABLES[k] & access)
    }


def step_timeout_s(step: Step) -> int:
    """The invoke step runs up to the REST chain's invoke deadline (`REST_INVOKE_POLICY`: 29 s less
    the other steps) plus a margin for building its dependencies and pricing the answer."""
    if step.name == "invoke":
        return math.ceil(REST_INVOKE_POLICY.deadline_s) + c.INVOKE_TIMEOUT_MARGIN_S
    return c.STEP_TIMEOUT_S


class ChainFunctions(Construct):
    """One function per step of `llm_gateway.pipeline` (the steps, finish and the failure step)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        layers: GatewayLayers,
        stores: GatewayStores,
    ) -> None:
        super().__init__(scope, construct_id)
        self.environment = {
            c.ENV_CONFIG_PATH: c.CONFIG_PATH_IN_LAMBDA,
            c.ENV_STORE: stage.gateway_store,
            c.ENV_MOMENTO_ENDPOINT: stage.momento_endpoint,
            c.ENV_MOMENTO_CACHE: stage.momento_cache_name,
            c.ENV_MODEL_DIR: c.MODEL_DIR_IN_LAMBDA,
            **stores.environment,
        }
        self.by_step: dict[str, lambda_.Function] = {}
        for step in (*STEPS, FINISH, FAILED):
            function = gateway_function(
                self,
                _pascal(step.handler),
                stage=stage,
                name=step.handler,
                code=function_code(step.handler),
                layers=layers,
                environment=self.environment,
                timeout_s=step_timeout_s(step),
                reserved_concurrency=stage.reserved_concurrency,
            )
            stores.grant(function, c.FUNCTION_ACCESS.get(step.handler, frozenset()))
            self.by_step[step.name] = function
        self.review_ingest = gateway_function(
            self,
            "ReviewIngest",
            stage=stage,
            name=c.REVIEW_INGEST_FOLDER,
            code=function_code(c.REVIEW_INGEST_FOLDER),
            layers=layers,
            environment=self.environment,
        )
        # The table itself only (`grant` would add its indexes): items are put, never read here.
        self.review_ingest.add_to_role_policy(
            iam.PolicyStatement(actions=["dynamodb:PutItem"], resources=[stores.review_table.table_arn])
        )
        self.review_ingest.add_event_source(
            lambda_event_sources.SqsEventSource(stores.review_queue, batch_size=10, report_batch_item_failures=True)
        )
        self.shadow = gateway_function(
            self,
            "Shadow",
            stage=stage,
            name=c.SHADOW_FOLDER,
            code=function_code(c.SHADOW_FOLDER),
            layers=layers,
            environment=self.environment,
            timeout_s=c.SHADOW_TIMEOUT_S,
            reserved_concurrency=c.SHADOW_CONCURRENCY,
        )
        stores.grant(self.shadow, c.FUNCTION_ACCESS[c.SHADOW_FOLDER])
        self.shadow.add_event_source(
            lambda_event_sources.SqsEventSource(
                stores.shadow_queue, batch_size=c.SHADOW_BATCH, report_batch_item_failures=True
            )
        )


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
