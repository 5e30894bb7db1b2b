"""Batch jobs: the bucket, its notification, the three functions and the Standard workflow.

S3 `ObjectCreated` under `batches/in/` (`.jsonl`) -> `batch_submit` (one job per object version,
Powertools idempotency) -> Standard state machine: `work` (the `batch_work` function: the job's
next step within its time) -> done? -> succeed, else wait `$.wait_s` (backoff while a provider
batch runs) -> `work` again. Results and errors go to `batches/out/<tenant>/<job>/`. The
`batch_status` function answers `GET /v1/batches[/{batch_id}]` on the REST API from the job table.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from cdk import constants as c
from cdk.config import StageConfig
from cdk.constructs.common import acknowledge, removal_policy
from cdk.constructs.functions import ChainFunctions, function_code, gateway_function
from cdk.constructs.layers import GatewayLayers
from cdk.constructs.storage import GatewayStores
from cdk.constructs.workflow import retry_lambda_faults, state_machine


class BatchJobs(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        layers: GatewayLayers,
        stores: GatewayStores,
        chain: ChainFunctions,
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = self._bucket(stage)
        environment = {
            **chain.environment,
            c.ENV_BATCH_TABLE: stores.batch_jobs.table_name,
            c.ENV_BATCH_BUCKET: self.bucket.bucket_name,
        }
        # The worker runs the whole chain in-process, line by line: the chain's stores and models.
        self.work = gateway_function(
            self,
            "Work",
            stage=stage,
            name=c.BATCH_WORK_FOLDER,
            code=function_code(c.BATCH_WORK_FOLDER),
            layers=layers,
            environment=environment,
            timeout_s=c.BATCH_WORK_TIMEOUT_S,
            memory_mb=max(stage.memory_mb, 1024),
        )
        stores.grant(self.work, c.FUNCTION_ACCESS[c.BATCH_WORK_FOLDER])
        self._grant_objects(self.work, ["s3:GetObject", "s3:GetObjectVersion"], c.BATCH_IN_PREFIX)
        self._grant_objects(self.work, ["s3:PutObject"], c.BATCH_OUT_PREFIX)
        self.state_machine = self._workflow(stage)

        self.submit = gateway_function(
            self,
            "Submit",
            stage=stage,
            name=c.BATCH_SUBMIT_FOLDER,
            code=function_code(c.BATCH_SUBMIT_FOLDER),
            layers=layers,
            environment={
                **environment,
                c.ENV_IDEMPOTENCY_TABLE: stores.idempotency.table_name,
                c.ENV_BATCH_STATE_MACHINE: self.state_machine.state_machine_arn,
            },
            timeout_s=c.BATCH_SUBMIT_TIMEOUT_S,
        )
        stores.grant(self.submit, c.FUNCTION_ACCESS[c.BATCH_SUBMIT_FOLDER])
        self._grant_objects(self.submit, ["s3:GetObject", "s3:GetObjectVersion"], c.BATCH_IN_PREFIX)
        self.state_machine.grant_start_execution(self.submit)
        self.bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.LambdaDestination(self.submit),
            s3.NotificationKeyFilter(prefix=c.BATCH_IN_PREFIX, suffix=".jsonl"),
        )
        # GET /v1/batches[/{batch_id}] on the REST API (`GatewayApi` routes to it): reads the job
        # table, nothing else. The chain's environment names the stores; only the job table is granted.
        self.status = gateway_function(
            self,
            "Status",
            stage=stage,
            name=c.BATCH_STATUS_FOLDER,
            code=function_code(c.BATCH_STATUS_FOLDER),
            layers=layers,
            environment={**chain.environment, c.ENV_BATCH_TABLE: stores.batch_jobs.table_name},
        )
        stores.grant(self.status, c.FUNCTION_ACCESS[c.BATCH_STATUS_FOLDER])
        handler = cdk.Stack.of(self).node.try_find_child(c.CDK_NOTIFICATIONS_HANDLER)
        if handler is not None:
            acknowledge(
                handler,
                "IAM4",
                "CDK's bucket-notification handler (it only configures this stack's bucket notifications) uses "
                "AWSLambdaBasicExecutionRole, which only lets it write its logs.",
                findings=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"],
            )

    def _grant_objects(self, function: lambda_.Function, actions: list[str], prefix: str) -> None:
        """Object actions under one prefix of the bucket, nothing else (no listing, no bucket actions)."""
        resource = self.bucket.arn_for_objects(f"{prefix}*")
        function.add_to_role_policy(iam.PolicyStatement(actions=actions, resources=[resource]))
        stack = cdk.Stack.of(self)
        bucket_id = stack.get_logical_id(self.bucket.node.default_child)  # type: ignore[arg-type]
        acknowledge(
            function,
            "IAM5",
            f"Objects under the bucket's {prefix} prefix only: the batch files this function reads or writes.",
            findings=[f"Resource::<{bucket_id}.Arn>/{prefix}*"],
        )

    def _bucket(self, stage: StageConfig) -> s3.Bucket:
        """Encrypted, private, TLS only, versioned (an object version is a job's identity), with
        lifecycle: inputs kept 30 days, outputs 90, old versions 7."""
        bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            removal_policy=removal_policy(stage),
            lifecycle_rules=[
                s3.LifecycleRule(prefix=c.BATCH_IN_PREFIX, expiration=cdk.Duration.days(c.BATCH_IN_DAYS)),
                s3.LifecycleRule(prefix=c.BATCH_OUT_PREFIX, expiration=cdk.Duration.days(c.BATCH_OUT_DAYS)),
                s3.LifecycleRule(
                    noncurrent_version_expiration=cdk.Duration.days(7),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
                ),
            ],
        )
        acknowledge(
            bucket,
            "S1",
            "Batch files are written and read by the gateway's functions only (their roles are the only grants); "
            "object-level access is recorded by CloudTrail data events where the account enables them.",
        )
        return bucket

    def _workflow(self, stage: StageConfig) -> sfn.StateMachine:
        work = tasks.LambdaInvoke(
            self,
            "WorkTask",
            state_name="work",
            lambda_function=self.work,
            payload=sfn.TaskInput.from_object({"job_id.$": "$.job_id", "attempt.$": "$.attempt"}),
            payload_response_only=True,
            retry_on_service_exceptions=False,
        )
        retry_lambda_faults(work)
        # A function that ran out of time or failed: the job resumes where it stopped.
        work.add_retry(
            errors=[sfn.Errors.TIMEOUT, sfn.Errors.TASKS_FAILED],
            interval=cdk.Duration.seconds(10),
            max_attempts=5,
            backoff_rate=2,
        )
        start = sfn.Pass(self, "Start", state_name="start", parameters={"job_id.$": "$.job_id", "attempt": 0})
        wait = sfn.Wait(self, "Wait", state_name="wait", time=sfn.WaitTime.seconds_path("$.wait_s"))
        done = sfn.Succeed(self, "Done", state_name="done")
        finished = sfn.Choice(self, "Finished", state_name="finished")
        start.next(work).next(finished.when(sfn.Condition.boolean_equals("$.done", True), done).otherwise(wait))
        wait.next(work)
        machine = state_machine(
            self,
            stage,
            name="batch",
            kind=sfn.StateMachineType.STANDARD,
            start=start,
            timeout=cdk.Duration.hours(c.BATCH_WORKFLOW_HOURS),
        )
        stack = cdk.Stack.of(self)
        acknowledge(
            machine,
            "IAM5",
            "CDK grants lambda:InvokeFunction on the batch_work function and its versions (<function ARN>:*); "
            "the X-Ray and log-delivery actions take no resource ARN.",
            findings=[
                f"Resource::<{stack.get_logical_id(self.work.node.default_child)}.Arn>:*",  # type: ignore[arg-type]
                "Resource::*",
            ],
        )
        return machine
