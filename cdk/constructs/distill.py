"""Distillation on AWS: a tenant's traffic into a student model, as a Standard workflow.

collect (the `distill_collect` function: the tenant's traces -> distill/<tenant>/<run_id>/data/)
-> train (a SageMaker training job, `.sync`, on the GPU image's `train`: the same training code as
`llm-gateway distill train`; its model to .../model/) -> student (a SageMaker model of that output
on the same image's `serve`) -> transform (a batch transform, `.sync`, of the test split's
endpoint requests, to .../eval/transform/) -> evaluate (the `distill_evaluate` function: the
answers scored against the teacher's, .../eval/report.json) -> a student that meets its tenant's
bar is registered as a model package (PendingManualApproval) in the deployment's group; one that
does not ends the execution as failed (`StudentBelowBar`).

Least privilege: the training role reads `distill/*/data/*` and writes `distill/*/model/*`; the
student's role (its model, so the transform) reads the data and the model and writes
`distill/*/eval/*`; both pull only the GPU image's repository. The workflow passes only those two
roles, only to SageMaker. distill_collect queries the trace table and writes `distill/*/data/*`;
distill_evaluate reads the data and eval files and writes `distill/*/eval/*`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from cdk import constants as c
from cdk.config import StageConfig
from cdk.constructs.common import acknowledge
from cdk.constructs.functions import function_code, gateway_function
from cdk.constructs.layers import GatewayLayers
from cdk.constructs.self_hosted import container_role, ecr_repository_arn
from cdk.constructs.storage import GatewayStores
from cdk.constructs.workflow import retry_lambda_faults, state_machine

CONTENT_TYPE = "application/json"  # one endpoint request (and answer) per transform record
BELOW_BAR = "StudentBelowBar"


class RunLocation(tasks.S3Location):
    """An S3 location the run names at run time (a JSONPath into the state). CDK's
    `S3Location.from_json_expression` would grant the job's role s3:GetObject, s3:ListBucket and
    s3:PutObject on `*`; the roles here hold their own grants, by the run's key patterns."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def bind(self, task: Construct, *, for_reading: bool | None = None, for_writing: bool | None = None) -> Any:
        return tasks.S3LocationConfig(uri=sfn.JsonPath.string_at(self._path))


def _instance(instance_type: str) -> ec2.InstanceType:
    """The tasks render `ml.<type>` themselves."""
    return ec2.InstanceType(instance_type.removeprefix("ml."))


class DistillWorkflow(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        layers: GatewayLayers,
        stores: GatewayStores,
        bucket: s3.Bucket,
        environment: Mapping[str, str],
    ) -> None:
        super().__init__(scope, construct_id)
        self._bucket = bucket
        stack = cdk.Stack.of(self)
        self._bucket_id = stack.get_logical_id(bucket.node.default_child)  # type: ignore[arg-type]
        self.image_uri, repository_arn = self._image(stage)
        self.package_group_name = c.resource_name(stage.name, c.DISTILL_PACKAGE_GROUP)
        sagemaker.CfnModelPackageGroup(
            self,
            "Students",
            model_package_group_name=self.package_group_name,
            model_package_group_description=f"{c.PROJECT} {stage.name}: distilled students, approved by an operator",
        )
        shared = {
            c.ENV_CONFIG_PATH: environment[c.ENV_CONFIG_PATH],
            c.ENV_MODEL_DIR: environment[c.ENV_MODEL_DIR],
            c.ENV_DISTILL_BUCKET: bucket.bucket_name,
        }
        self.collect = self._function(
            stage, layers, "Collect", c.DISTILL_COLLECT_FOLDER, {**shared, c.ENV_TRACE_TABLE: stores.traces.table_name}
        )
        stores.grant(self.collect, c.FUNCTION_ACCESS[c.DISTILL_COLLECT_FOLDER])
        self._grant_objects(self.collect, ["s3:PutObject"], c.DISTILL_DATA, "the collection it writes")
        self.evaluate = self._function(stage, layers, "Evaluate", c.DISTILL_EVALUATE_FOLDER, shared)
        self._grant_objects(self.evaluate, ["s3:GetObject"], c.DISTILL_DATA, "the test split it scores on")
        self._grant_objects(
            self.evaluate, ["s3:GetObject", "s3:PutObject"], c.DISTILL_EVAL, "the transform's answers, its report"
        )
        self.training_role = self._job_role(
            "TrainingRole", repository_arn, "TrainingJobs", reads=[c.DISTILL_DATA], writes=c.DISTILL_MODEL
        )
        self.student_role = self._job_role(
            "StudentRole",
            repository_arn,
            "TransformJobs",
            reads=[c.DISTILL_DATA, c.DISTILL_MODEL],
            writes=c.DISTILL_EVAL,
        )
        self.state_machine = self._workflow(stage)

    # ------------------------------------------------------------------------- pieces

    def _image(self, stage: StageConfig) -> tuple[str, str]:
        """The GPU image (its URI and its repository's ARN): the stage's `distill.image_uri`, the
        self-hosted model's, or the deployment's `llm-gateway-model-server-gpu` repository."""
        named = stage.distill.image_uri or (stage.self_hosted.image_uri if stage.self_hosted else None)
        if named is not None:
            return named, ecr_repository_arn(named)
        stack = cdk.Stack.of(self)
        uri = f"{stack.account}.dkr.ecr.{stack.region}.{stack.url_suffix}/{c.DISTILL_DEFAULT_REPOSITORY}:latest"
        arn = stack.format_arn(service="ecr", resource="repository", resource_name=c.DISTILL_DEFAULT_REPOSITORY)
        return uri, arn

    def _function(
        self, stage: StageConfig, layers: GatewayLayers, construct_id: str, folder: str, environment: dict[str, str]
    ) -> lambda_.Function:
        return gateway_function(
            self,
            construct_id,
            stage=stage,
            name=folder,
            code=function_code(folder),
            layers=layers,
            environment=environment,
            timeout_s=c.DISTILL_TIMEOUT_S,
            memory_mb=max(stage.memory_mb, c.DISTILL_MEMORY_MB),
        )

    def _objects(self, pattern: str) -> str:
        return self._bucket.arn_for_objects(pattern)

    def _grant_objects(self, grantee: lambda_.Function, actions: list[str], pattern: str, what: str) -> None:
        """Object actions on one key pattern of the bucket, nothing else (no listing, no bucket actions)."""
        iam.Grant.add_to_principal(grantee=grantee, actions=actions, resource_arns=[self._objects(pattern)])
        acknowledge(
            grantee,
            "IAM5",
            f"Objects under the bucket's {pattern} keys only: {what} (one folder per tenant and run).",
            findings=[f"Resource::<{self._bucket_id}.Arn>/{pattern}"],
        )

    def _job_role(
        self, construct_id: str, repository_arn: str, jobs: str, *, reads: list[str], writes: str
    ) -> iam.Role:
        """A SageMaker job's execution role: the GPU image, the job kind's logs and metrics, `reads`
        (listing only their keys) and `writes` in the bucket."""
        role = container_role(
            self,
            construct_id,
            repository_arn=repository_arn,
            namespace=f"/aws/sagemaker/{jobs}",
            log_group=f"/aws/sagemaker/{jobs}",
            log_streams=f"{c.DISTILL_JOB_PREFIX}*",
        )
        role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=[self._objects(p) for p in reads]))
        role.add_to_policy(iam.PolicyStatement(actions=["s3:PutObject"], resources=[self._objects(writes)]))
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self._bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": reads}},
            )
        )
        acknowledge(
            role,
            "IAM5",
            "The run's files: one folder per tenant and run under distill/, read and written by key pattern "
            "(SageMaker lists the channel's keys, only under those patterns).",
            findings=[f"Resource::<{self._bucket_id}.Arn>/{p}" for p in (*reads, writes)],
        )
        return role

    # ------------------------------------------------------------------------- the workflow

    def _workflow(self, stage: StageConfig) -> sfn.StateMachine:
        config = stage.distill
        collect = tasks.LambdaInvoke(
            self,
            "CollectTask",
            state_name="collect",
            lambda_function=self.collect,
            payload_response_only=True,  # no payload: the function gets the execution's input as it is
            retry_on_service_exceptions=False,
            result_path="$.collect",
        )
        retry_lambda_faults(collect)
        train = tasks.SageMakerCreateTrainingJob(
            self,
            "Train",
            state_name="train",
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            training_job_name=sfn.JsonPath.string_at("$.collect.job_name"),
            role=self.training_role,
            algorithm_specification=tasks.AlgorithmSpecification(
                training_image=tasks.DockerImage.from_registry(self.image_uri),
                training_input_mode=tasks.InputMode.FILE,
            ),
            hyperparameters=config.hyperparameters(),
            input_data_config=[
                tasks.Channel(
                    channel_name="train",
                    data_source=tasks.DataSource(
                        s3_data_source=tasks.S3DataSource(
                            s3_location=RunLocation("$.collect.data"),
                            s3_data_type=tasks.S3DataType.S3_PREFIX,
                        )
                    ),
                )
            ],
            output_data_config=tasks.OutputDataConfig(s3_output_location=RunLocation("$.collect.model")),
            resource_config=tasks.ResourceConfig(
                instance_count=1,
                instance_type=_instance(config.instance_type),
                volume_size=cdk.Size.gibibytes(config.volume_gb),
            ),
            stopping_condition=tasks.StoppingCondition(max_runtime=cdk.Duration.hours(config.max_runtime_hours)),
            enable_network_isolation=True,  # the base model is in the image; nothing to fetch
            result_selector={"model_data.$": "$.ModelArtifacts.S3ModelArtifacts", "job.$": "$.TrainingJobName"},
            result_path="$.train",
        )
        student = tasks.SageMakerCreateModel(
            self,
            "Student",
            state_name="student",
            model_name=sfn.JsonPath.string_at("$.collect.job_name"),
            role=self.student_role,
            primary_container=tasks.ContainerDefinition(
                image=tasks.DockerImage.from_registry(self.image_uri),
                model_s3_location=RunLocation("$.train.model_data"),
            ),
            enable_network_isolation=True,
            result_path=sfn.JsonPath.DISCARD,
        )
        transform = tasks.SageMakerCreateTransformJob(
            self,
            "Transform",
            state_name="transform",
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            transform_job_name=sfn.JsonPath.string_at("$.collect.job_name"),
            model_name=sfn.JsonPath.string_at("$.collect.job_name"),
            role=self.student_role,
            batch_strategy=tasks.BatchStrategy.SINGLE_RECORD,  # one endpoint request per line
            transform_input=tasks.TransformInput(
                transform_data_source=tasks.TransformDataSource(
                    s3_data_source=tasks.TransformS3DataSource(
                        s3_uri=sfn.JsonPath.string_at("$.collect.invocations"),
                        s3_data_type=tasks.S3DataType.S3_PREFIX,
                    )
                ),
                content_type=CONTENT_TYPE,
                split_type=tasks.SplitType.LINE,
            ),
            transform_output=tasks.TransformOutput(
                s3_output_path=sfn.JsonPath.string_at("$.collect.transform"),
                accept=CONTENT_TYPE,
                assemble_with=tasks.AssembleWith.LINE,
            ),
            transform_resources=tasks.TransformResources(
                instance_count=1, instance_type=_instance(config.transform_instance_type)
            ),
            result_path=sfn.JsonPath.DISCARD,
        )
        evaluate = tasks.LambdaInvoke(
            self,
            "EvaluateTask",
            state_name="evaluate",
            lambda_function=self.evaluate,
            payload=sfn.TaskInput.from_object(
                {
                    "tenant.$": "$.collect.tenant",
                    "route.$": "$.collect.route",
                    "run_id.$": "$.collect.run_id",
                    "model_data.$": "$.train.model_data",
                }
            ),
            payload_response_only=True,
            retry_on_service_exceptions=False,
            result_path="$.evaluate",
        )
        retry_lambda_faults(evaluate)
        register = tasks.CallAwsService(
            self,
            "Register",
            state_name="register",
            service="sagemaker",
            action="createModelPackage",
            iam_action="sagemaker:CreateModelPackage",
            iam_resources=list(self._package_arns()),
            parameters={
                "ModelPackageGroupName": self.package_group_name,
                "ModelPackageDescription": sfn.JsonPath.string_at("$.evaluate.description"),
                "ModelApprovalStatus": "PendingManualApproval",
                "InferenceSpecification": {
                    "Containers": [
                        {"Image": self.image_uri, "ModelDataUrl": sfn.JsonPath.string_at("$.train.model_data")}
                    ],
                    "SupportedContentTypes": [CONTENT_TYPE],
                    "SupportedResponseMIMETypes": [CONTENT_TYPE],
                },
                "CustomerMetadataProperties": sfn.JsonPath.object_at("$.evaluate.metadata"),
            },
            result_selector={"model_package_arn.$": "$.ModelPackageArn"},
            result_path="$.register",
        )
        below_bar = sfn.Fail(
            self,
            "BelowBar",
            state_name="below_bar",
            error=BELOW_BAR,
            cause="the student's quality ratio on the test split is below its tenant's training.min_quality_ratio "
            "(eval/report.json): not registered",
        )
        meets_bar = sfn.Choice(self, "MeetsBar", state_name="meets_bar")
        registered = sfn.Succeed(self, "Registered", state_name="registered")
        collect.next(train).next(student).next(transform).next(evaluate).next(
            meets_bar.when(
                sfn.Condition.boolean_equals("$.evaluate.meets_bar", True), register.next(registered)
            ).otherwise(below_bar)
        )
        machine = state_machine(
            self,
            stage,
            name="distill",
            kind=sfn.StateMachineType.STANDARD,
            start=collect,
            timeout=cdk.Duration.hours(c.DISTILL_WORKFLOW_HOURS),
        )
        self._acknowledge(machine)
        return machine

    def _package_arns(self) -> tuple[str, str]:
        """The model package group's ARN and its packages' (SageMaker lower-cases them)."""
        stack = cdk.Stack.of(self)
        group = stack.format_arn(
            service="sagemaker", resource="model-package-group", resource_name=self.package_group_name.lower()
        )
        packages = stack.format_arn(
            service="sagemaker", resource="model-package", resource_name=f"{self.package_group_name.lower()}/*"
        )
        return group, packages

    def _acknowledge(self, machine: sfn.StateMachine) -> None:
        stack = cdk.Stack.of(self)
        functions = (self.collect, self.evaluate)
        acknowledge(
            machine,
            "IAM5",
            "CDK grants lambda:InvokeFunction on the two distillation functions and their versions "
            "(<function ARN>:*); SageMaker's training, model and transform jobs are named at run time (by the "
            "tenant and run, distill-...) and their tags listed; the run's model packages are created in the "
            "deployment's group only; the X-Ray and log-delivery actions take no resource ARN.",
            findings=[
                *(
                    f"Resource::<{stack.get_logical_id(f.node.default_child)}.Arn>:*"  # type: ignore[arg-type]
                    for f in functions
                ),
                "Resource::*",
                *(
                    "Resource::"
                    + _as_finding(stack, stack.format_arn(service="sagemaker", resource=r, resource_name=n))
                    for r, n in (
                        ("training-job", "*"),
                        ("model", "*"),
                        ("transform-job", "*"),
                        ("model-package", f"{self.package_group_name.lower()}/*"),
                    )
                ),
            ],
        )


def _as_finding(stack: cdk.Stack, arn: str) -> str:
    """An ARN as cdk-nag names it in a finding: references as <Name> (the account, and the
    partition and region where the stage leaves them to the deployment)."""
    resolved = stack.resolve(arn)
    if isinstance(resolved, str):
        return resolved
    _, parts = resolved["Fn::Join"]
    return "".join(part if isinstance(part, str) else f"<{part['Ref']}>" for part in parts)
