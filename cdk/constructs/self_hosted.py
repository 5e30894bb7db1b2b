"""The self-hosted model: a SageMaker real-time endpoint running `model_server`, autoscaled.

Model (the stage's image, optional model data, `MODEL_SERVER_*` environment) → endpoint
configuration (one variant, `AllTraffic`) → endpoint, and target-tracking autoscaling of the
variant's instance count on invocations per instance. The functions that call models get
`InvokeEndpoint` and `InvokeEndpointWithResponseStream` on this endpoint only; the gateway YAML
names it as a model's `endpoint` (provider `sagemaker`).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_applicationautoscaling as autoscaling
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from cdk import constants as c
from cdk.config import SelfHostedConfig, StageConfig
from cdk.constructs.common import acknowledge

VARIANT = "AllTraffic"


def ecr_repository_arn(image_uri: str) -> str:
    """arn:aws:ecr:<region>:<account>:repository/<name> of an ECR image URI."""
    registry, _, rest = image_uri.partition("/")
    account, _, _, region = registry.split(".")[:4]
    name = rest.split("@")[0].rsplit(":", 1)[0]
    return f"arn:{cdk.Aws.PARTITION}:ecr:{region}:{account}:repository/{name}"


def container_role(
    scope: Construct, construct_id: str, *, repository_arn: str, namespace: str, log_group: str, log_streams: str = "*"
) -> iam.Role:
    """A SageMaker execution role that pulls one image repository and writes its container's logs
    (`log_group`, streams named `log_streams`) and metrics (`namespace`): an endpoint's, a
    training or transform job's. What it reads and writes in S3 is granted by its owner."""
    role = iam.Role(scope, construct_id, assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
            resources=[repository_arn],
        )
    )
    # These two actions have no resource to scope them to.
    role.add_to_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": namespace}},
        )
    )
    group = f"arn:{cdk.Aws.PARTITION}:logs:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}:log-group:{log_group}"
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            resources=[group, f"{group}:log-stream:{log_streams}"],
        )
    )
    acknowledge(
        role,
        "IAM5",
        "ECR authorization tokens and CloudWatch metrics have no resource ARN (metrics are limited to "
        f"SageMaker's namespace); SageMaker names the log streams of the {log_group} log group itself.",
        [
            "Resource::*",
            "Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:"
            f"{log_group}:log-stream:{log_streams}",
        ],
    )
    return role


class SelfHostedEndpoint(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig, config: SelfHostedConfig) -> None:
        super().__init__(scope, construct_id)
        self.endpoint_name = config.endpoint_name or f"{c.PROJECT}-{stage.name}-self-hosted"
        self.role = self._role(config)
        container: dict[str, object] = {"image": config.image_uri, "environment": dict(config.environment)}
        if config.model_data_url:
            container["modelDataUrl"] = config.model_data_url
        model = sagemaker.CfnModel(self, "Model", execution_role_arn=self.role.role_arn, primary_container=container)
        model.node.add_dependency(self.role)
        endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "Config",
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT,
                    model_name=model.attr_model_name,
                    initial_instance_count=config.min_instances,
                    instance_type=config.instance_type,
                    container_startup_health_check_timeout_in_seconds=config.startup_timeout_s,
                    model_data_download_timeout_in_seconds=config.startup_timeout_s,
                )
            ],
        )
        self.endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_config_name=endpoint_config.attr_endpoint_config_name,
            endpoint_name=self.endpoint_name,
        )
        self.endpoint_arn = cdk.Stack.of(self).format_arn(
            service="sagemaker", resource="endpoint", resource_name=self.endpoint_name.lower()
        )
        target = autoscaling.ScalableTarget(
            self,
            "Scaling",
            service_namespace=autoscaling.ServiceNamespace.SAGEMAKER,
            resource_id=f"endpoint/{self.endpoint_name}/variant/{VARIANT}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=config.min_instances,
            max_capacity=config.max_instances,
        )
        target.node.add_dependency(self.endpoint)
        target.scale_to_track_metric(
            "InvocationsPerInstance",
            target_value=config.invocations_per_instance,
            predefined_metric=autoscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
            scale_in_cooldown=cdk.Duration.seconds(config.scale_in_cooldown_s),
            scale_out_cooldown=cdk.Duration.seconds(config.scale_out_cooldown_s),
        )

    def _role(self, config: SelfHostedConfig) -> iam.Role:
        """What the container needs: pull its image, read its model data, write its logs and metrics."""
        role = container_role(
            self,
            "Role",
            repository_arn=ecr_repository_arn(config.image_uri),
            namespace="/aws/sagemaker/Endpoints",
            log_group=f"/aws/sagemaker/Endpoints/{self.endpoint_name}",
        )
        if config.model_data_url:
            bucket, _, key = config.model_data_url.removeprefix("s3://").partition("/")
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:GetObject"], resources=[f"arn:{cdk.Aws.PARTITION}:s3:::{bucket}/{key}"]
                )
            )
        return role

    def grant_invoke(self, grantee: iam.IGrantable) -> None:
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"],
            resource_arns=[self.endpoint_arn],
        )
