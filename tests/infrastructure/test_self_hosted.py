"""A stage with `self_hosted`: the SageMaker model, endpoint and autoscaling, what its role may do,
and which functions may invoke it (cdk-nag passes, or synthesis would raise)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from cdk import constants as c
from cdk.config import SelfHostedConfig, cdk_json_context
from tests.infrastructure.cfn import actions, flatten, functions_by_folder, resources, role_statements
from tests.infrastructure.synth import synthesize

IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/llm-endpoint:2026-11"
SELF_HOSTED = {
    "image_uri": IMAGE,
    "model_data_url": "s3://acme-models/llama-3.2-1b/model.tar.gz",
    "instance_type": "ml.p5.48xlarge",
    "min_instances": 1,
    "max_instances": 4,
    "invocations_per_instance": 900,
    "environment": {"MODEL_SERVER_ENGINE": "torch", "MODEL_SERVER_QUANTIZATION": "int8"},
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    stages = cdk_json_context()[c.CONTEXT_STAGES]
    stages = {**stages, "gpu": {**stages["dev"], "self_hosted": SELF_HOSTED}}
    return synthesize("gpu", outdir=tmp_path_factory.mktemp("cdk-gpu"), stages=stages).to_json()


def only(template: dict[str, Any], type_: str) -> dict[str, Any]:
    (resource,) = resources(template, type_).values()
    return resource["Properties"]  # type: ignore[no-any-return]


def test_the_model_runs_the_image_with_its_data_and_settings(template: dict[str, Any]) -> None:
    container = only(template, "AWS::SageMaker::Model")["PrimaryContainer"]
    assert container["Image"] == IMAGE
    assert container["ModelDataUrl"] == SELF_HOSTED["model_data_url"]
    assert container["Environment"] == SELF_HOSTED["environment"]
    (variant,) = only(template, "AWS::SageMaker::EndpointConfig")["ProductionVariants"]
    assert (variant["VariantName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        "AllTraffic",
        "ml.p5.48xlarge",
        1,
    )
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 900
    assert only(template, "AWS::SageMaker::Endpoint")["EndpointName"] == "llm-gateway-gpu-self-hosted"


def test_the_variant_scales_on_invocations_per_instance(template: dict[str, Any]) -> None:
    target = only(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert target["ResourceId"] == "endpoint/llm-gateway-gpu-self-hosted/variant/AllTraffic"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    tracking = only(template, "AWS::ApplicationAutoScaling::ScalingPolicy")["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert tracking["TargetValue"] == 900


def test_the_endpoint_role_pulls_its_repository_and_reads_its_model_data_only(template: dict[str, Any]) -> None:
    (role_id,) = [
        k
        for k, r in resources(template, "AWS::IAM::Role").items()
        if "sagemaker.amazonaws.com" in flatten(r["Properties"]["AssumeRolePolicyDocument"])
        and k.startswith("SelfHosted")  # the distillation workflow's job roles are tested with it
    ]
    policies = [
        p for p in resources(template, "AWS::IAM::Policy").values() if role_id in flatten(p["Properties"]["Roles"])
    ]
    statements = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    by_action = {a: flatten(s["Resource"]) for s in statements for a in actions(s)}
    assert by_action["ecr:BatchGetImage"].endswith(":ecr:eu-west-1:123456789012:repository/llm-endpoint")
    assert by_action["s3:GetObject"].endswith(":s3:::acme-models/llama-3.2-1b/model.tar.gz")
    assert "/aws/sagemaker/Endpoints/llm-gateway-gpu-self-hosted" in by_action["logs:PutLogEvents"]
    assert not any(a.startswith(("s3:Put", "sagemaker:")) for a in by_action)


def test_only_the_functions_that_call_models_may_invoke_the_endpoint(template: dict[str, Any]) -> None:
    invoking = set()
    for folder, (_, properties) in functions_by_folder(template, "gpu").items():
        for statement in role_statements(template, properties):
            if "sagemaker:InvokeEndpoint" in actions(statement):
                assert "sagemaker:InvokeEndpointWithResponseStream" in actions(statement)
                assert flatten(statement["Resource"]).endswith(":endpoint/llm-gateway-gpu-self-hosted")
                invoking.add(folder)
    assert invoking == {"invoke", c.STREAM_FOLDER, c.BATCH_WORK_FOLDER, c.SHADOW_FOLDER}  # the shadow copies too


def test_a_stage_without_self_hosted_has_no_endpoint(dev: Any) -> None:
    assert not resources(dev.to_json(), "AWS::SageMaker::Endpoint")


@pytest.mark.parametrize(
    ("field", "value"),
    [("image_uri", "docker.io/llm-endpoint:1"), ("max_instances", 0), ("model_data_url", "https://x/y.tar.gz")],
)
def test_bad_self_hosted_settings_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        SelfHostedConfig.model_validate({**SELF_HOSTED, field: value})
