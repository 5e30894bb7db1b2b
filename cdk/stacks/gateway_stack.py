"""The gateway stack: composes the constructs, builds nothing itself."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from cdk import constants as c
from cdk.config import StageConfig
from cdk.constructs.alarms import GatewayAlarms
from cdk.constructs.api import GatewayApi
from cdk.constructs.batch import BatchJobs
from cdk.constructs.dashboard import GatewayDashboard
from cdk.constructs.distill import DistillWorkflow
from cdk.constructs.functions import ChainFunctions
from cdk.constructs.layers import GatewayLayers
from cdk.constructs.rollouts import RolloutGates
from cdk.constructs.self_hosted import SelfHostedEndpoint
from cdk.constructs.storage import GatewayStores
from cdk.constructs.streaming import StreamingEndpoint
from cdk.constructs.workflow import GatewayWorkflow
from llm_gateway.pipeline import FAILED, FINISH, STEPS


class GatewayStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, description=f"llm-gateway ({stage.name})", **kwargs)
        self.layers = GatewayLayers(self, "Layers", stage=stage)
        self.stores = GatewayStores(self, "Stores", stage=stage)
        self.functions = ChainFunctions(self, "Chain", stage=stage, layers=self.layers, stores=self.stores)
        self.workflow = GatewayWorkflow(self, "Workflow", stage=stage, functions=self.functions.by_step)
        self.batch = BatchJobs(self, "Batch", stage=stage, layers=self.layers, stores=self.stores, chain=self.functions)
        self.api = GatewayApi(
            self,
            "Api",
            stage=stage,
            state_machine=self.workflow.state_machine,
            layers=self.layers,
            batch_status=self.batch.status,
        )
        self.streaming = (
            StreamingEndpoint(
                self,
                "Streaming",
                stage=stage,
                layers=self.layers,
                stores=self.stores,
                environment=self.functions.environment,
            )
            if stage.streaming
            else None
        )
        self.alarms = GatewayAlarms(self, "Alarms", stage=stage)
        self.rollout_gates = RolloutGates(
            self,
            "RolloutGates",
            stage=stage,
            layers=self.layers,
            stores=self.stores,
            environment=self.functions.environment,
            alarms=self.alarms.alarms,
        )
        self.distill = DistillWorkflow(
            self,
            "Distill",
            stage=stage,
            layers=self.layers,
            stores=self.stores,
            bucket=self.batch.bucket,
            environment=self.functions.environment,
        )
        # Every function the stack builds (the authorizer's is inside `GatewayApi`), by its folder.
        functions: dict[str, lambda_.IFunction] = {
            **{step.handler: self.functions.by_step[step.name] for step in (*STEPS, FINISH, FAILED)},
            c.REVIEW_INGEST_FOLDER: self.functions.review_ingest,
            c.BATCH_SUBMIT_FOLDER: self.batch.submit,
            c.BATCH_WORK_FOLDER: self.batch.work,
            c.BATCH_STATUS_FOLDER: self.batch.status,
            c.ROLLOUT_GATES_FOLDER: self.rollout_gates.function,
            c.SHADOW_FOLDER: self.functions.shadow,
            c.DISTILL_COLLECT_FOLDER: self.distill.collect,
            c.DISTILL_EVALUATE_FOLDER: self.distill.evaluate,
            **({c.STREAM_FOLDER: self.streaming.function} if self.streaming is not None else {}),
        }
        self.dashboard = GatewayDashboard(
            self,
            "Dashboard",
            stage=stage,
            alarms=self.alarms.alarms.values(),
            state_machines={
                "chain": self.workflow.state_machine,
                "batch": self.batch.state_machine,
                "distill": self.distill.state_machine,
            },
            functions=functions,
        )
        self.self_hosted = (
            SelfHostedEndpoint(self, "SelfHosted", stage=stage, config=stage.self_hosted)
            if stage.self_hosted is not None
            else None
        )
        if self.self_hosted is not None:
            # The functions that call models: the invoke step, the streaming function, the batch
            # worker, the shadow copies' function.
            callers = [self.functions.by_step["invoke"], self.batch.work, self.functions.shadow]
            if self.streaming is not None:
                callers.append(self.streaming.function)
            for caller in callers:
                self.self_hosted.grant_invoke(caller)
            cdk.CfnOutput(
                self,
                "SelfHostedEndpointName",
                value=self.self_hosted.endpoint_name,
                description="the `endpoint` of a sagemaker model in the gateway YAML",
            )
        cdk.CfnOutput(self, "ApiBaseUrl", value=f"{self.api.api.url}v1", description="OpenAI base URL")
        if self.streaming is not None:
            cdk.CfnOutput(self, "StreamingUrl", value=self.streaming.url.url, description="OpenAI base URL: <url>v1")
        cdk.CfnOutput(self, "AlertsTopicArn", value=self.alarms.topic.topic_arn, description="subscribe to the alarms")
        cdk.CfnOutput(
            self, "DashboardName", value=self.dashboard.dashboard.dashboard_name, description="the CloudWatch dashboard"
        )
        cdk.CfnOutput(self, "MomentoSecretArn", value=self.stores.momento_secret.secret_arn)
        cdk.CfnOutput(self, "ProviderKeysSecretArn", value=self.stores.provider_keys.secret_arn)
        cdk.CfnOutput(self, "StateMachineArn", value=self.workflow.state_machine.state_machine_arn)
        cdk.CfnOutput(
            self,
            "RolloutTable",
            value=self.stores.rollouts.table_name,
            description="llm-gateway rollout ... --table <this>",
        )
        cdk.CfnOutput(
            self,
            "ShadowTable",
            value=self.stores.shadow_pairs.table_name,
            description="llm-gateway shadow report --table <this>",
        )
        cdk.CfnOutput(self, "BatchBucket", value=self.batch.bucket.bucket_name, description="batches/in/<tenant>/")
        cdk.CfnOutput(
            self,
            "DistillWorkflowArn",
            value=self.distill.state_machine.state_machine_arn,
            description='start-execution --name <run_id> --input {"tenant", "route", "since", "run_id"}',
        )
        cdk.CfnOutput(
            self,
            "DistillModelPackageGroup",
            value=self.distill.package_group_name,
            description="the registered students (PendingManualApproval until an operator approves one)",
        )
        if stage.gateway_store == "aws" and not stage.momento_endpoint:
            cdk.Annotations.of(self).add_warning_v2(
                "llm-gateway:momentoEndpoint",
                f"stage {stage.name} has no momento_endpoint (cdk.json): with GATEWAY_STORE=aws the functions "
                "refuse to start until it is set",
            )
