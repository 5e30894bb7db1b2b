"""The distillation workflow in the synthesized stack: a Standard state machine collect -> train
(SageMaker, .sync) -> student -> transform (.sync) -> evaluate -> register, and least privilege:
what each SageMaker role may read and write in the bucket, which roles the workflow may pass (to
SageMaker only), what the two functions reach. cdk-nag passes, or synthesis would have raised."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cdk import constants as c
from cdk.config import cdk_json_context
from tests.infrastructure.cfn import (
    actions,
    flatten,
    functions_by_folder,
    resource_refs,
    resources,
    role_statements,
    state_machine,
    state_machine_definition,
)
from tests.infrastructure.synth import Synthesized, synthesize

IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/llm-endpoint-gpu:2026-12"


@pytest.fixture(scope="module")
def template(dev: Synthesized) -> dict[str, Any]:
    return dev.to_json()


@pytest.fixture(scope="module")
def definition(template: dict[str, Any]) -> dict[str, Any]:
    return state_machine_definition(template, "distill")


def bucket_id(template: dict[str, Any]) -> str:
    return next(key for key in resources(template, "AWS::S3::Bucket") if key.startswith("BatchBucket"))


def role_policy(template: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    return [
        s
        for p in resources(template, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]


def s3_grants(statements: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Bucket resource -> the S3 actions granted on it."""
    found: dict[str, set[str]] = {}
    for statement in statements:
        for action in actions(statement):
            if action.startswith("s3:"):
                for ref in resource_refs(statement):
                    found.setdefault(ref, set()).add(action)
    return found


def job_role(template: dict[str, Any], name: str) -> str:
    (role_id,) = [k for k in resources(template, "AWS::IAM::Role") if k.startswith(f"Distill{name}")]
    return role_id


def test_the_workflow_is_standard_and_runs_collect_train_student_transform_evaluate_register(
    template: dict[str, Any], definition: dict[str, Any]
) -> None:
    _, machine = state_machine(template, "distill")
    assert machine["Properties"]["StateMachineType"] == "STANDARD"
    assert machine["Properties"]["LoggingConfiguration"]["IncludeExecutionData"] is False
    states = definition["States"]
    order, name = [], definition["StartAt"]
    while name is not None:
        order.append(name)
        state = states[name]
        name = state["Choices"][0]["Next"] if state["Type"] == "Choice" else state.get("Next")
    assert order == ["collect", "train", "student", "transform", "evaluate", "meets_bar", "register", "registered"]
    assert states["meets_bar"]["Choices"][0]["Variable"] == "$.evaluate.meets_bar"
    assert states["meets_bar"]["Default"] == "below_bar" and states["below_bar"]["Error"] == "StudentBelowBar"
    assert flatten(states["train"]["Resource"]).endswith(":states:::sagemaker:createTrainingJob.sync")
    assert flatten(states["transform"]["Resource"]).endswith(":states:::sagemaker:createTransformJob.sync")
    assert flatten(states["register"]["Resource"]).endswith(":states:::aws-sdk:sagemaker:createModelPackage")
    collect_id, _ = functions_by_folder(template)[c.DISTILL_COLLECT_FOLDER]
    assert flatten(states["collect"]["Resource"]) == f"<{collect_id}.Arn>"
    assert "Parameters" not in states["collect"] and "InputPath" not in states["collect"]  # the execution's input


def test_the_training_job_reads_the_collection_and_writes_the_runs_model_with_the_stage_settings(
    definition: dict[str, Any],
) -> None:
    train = definition["States"]["train"]["Parameters"]
    (channel,) = train["InputDataConfig"]
    assert channel["ChannelName"] == "train"
    source = channel["DataSource"]["S3DataSource"]
    assert (source["S3Uri.$"], source["S3DataType"]) == ("$.collect.data", "S3Prefix")
    assert train["OutputDataConfig"] == {"S3OutputPath.$": "$.collect.model"}
    assert train["TrainingJobName.$"] == "$.collect.job_name"
    assert train["HyperParameters"] == {"epochs": "4", "learning_rate": "0.001", "rank": "16", "batch": "8"}
    assert train["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"
    assert train["StoppingCondition"] == {"MaxRuntimeInSeconds": 4 * 3600}
    assert train["EnableNetworkIsolation"] is True
    image = flatten(train["AlgorithmSpecification"]["TrainingImage"])
    assert image.endswith(f"/{c.DISTILL_DEFAULT_REPOSITORY}:latest")
    transform = definition["States"]["transform"]["Parameters"]
    assert transform["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri.$"] == "$.collect.invocations"
    assert transform["TransformInput"]["SplitType"] == "Line" and transform["BatchStrategy"] == "SingleRecord"
    assert transform["TransformOutput"]["S3OutputPath.$"] == "$.collect.transform"
    register = definition["States"]["register"]["Parameters"]
    assert register["ModelApprovalStatus"] == "PendingManualApproval"
    assert register["ModelPackageGroupName"] == c.resource_name("dev", c.DISTILL_PACKAGE_GROUP)
    assert register["CustomerMetadataProperties.$"] == "$.evaluate.metadata"


def test_the_training_role_reads_only_the_data_and_writes_only_the_model(template: dict[str, Any]) -> None:
    bucket = bucket_id(template)
    statements = role_policy(template, job_role(template, "TrainingRole"))
    assert s3_grants(statements) == {
        f"<{bucket}.Arn>/{c.DISTILL_DATA}": {"s3:GetObject"},
        f"<{bucket}.Arn>/{c.DISTILL_MODEL}": {"s3:PutObject"},
        f"<{bucket}.Arn>": {"s3:ListBucket"},
    }
    (listing,) = [s for s in statements if "s3:ListBucket" in actions(s)]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [c.DISTILL_DATA]}}
    assert not [a for s in statements for a in actions(s) if a.startswith(("sagemaker:", "iam:", "dynamodb:"))]
    logs = {ref for s in statements if "logs:PutLogEvents" in actions(s) for ref in resource_refs(s)}
    assert all("/aws/sagemaker/TrainingJobs" in ref for ref in logs)


def test_the_students_role_reads_the_data_and_model_and_writes_only_the_eval(template: dict[str, Any]) -> None:
    bucket = bucket_id(template)
    statements = role_policy(template, job_role(template, "StudentRole"))
    assert s3_grants(statements) == {
        f"<{bucket}.Arn>/{c.DISTILL_DATA}": {"s3:GetObject"},
        f"<{bucket}.Arn>/{c.DISTILL_MODEL}": {"s3:GetObject"},
        f"<{bucket}.Arn>/{c.DISTILL_EVAL}": {"s3:PutObject"},
        f"<{bucket}.Arn>": {"s3:ListBucket"},
    }


def test_the_workflow_passes_only_the_two_job_roles_and_only_to_sagemaker(template: dict[str, Any]) -> None:
    machine_id, machine = state_machine(template, "distill")
    role = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    statements = role_policy(template, role)
    passes = [s for s in statements if "iam:PassRole" in actions(s)]
    assert passes and all(
        s["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}} for s in passes
    )
    passed = {ref for s in passes for ref in resource_refs(s)}
    assert passed == {f"<{job_role(template, 'TrainingRole')}.Arn>", f"<{job_role(template, 'StudentRole')}.Arn>"}
    # Nothing else passes a role: the chain's and the batch workflow's roles pass none
    for other_id, other in resources(template, "AWS::StepFunctions::StateMachine").items():
        if other_id != machine_id:
            other_role = other["Properties"]["RoleArn"]["Fn::GetAtt"][0]
            assert not [s for s in role_policy(template, other_role) if "iam:PassRole" in actions(s)]
    # Registration: model packages of the deployment's group only
    (register,) = [s for s in statements if "sagemaker:CreateModelPackage" in actions(s)]
    group = c.resource_name("dev", c.DISTILL_PACKAGE_GROUP)
    assert sorted(r.rsplit(":", 1)[1] for r in resource_refs(register)) == sorted(
        [f"model-package-group/{group}", f"model-package/{group}/*"]
    )
    assert not [s for s in statements if any(a.startswith("s3:") for a in actions(s))]


def test_the_collect_function_queries_the_trace_table_and_writes_only_the_collection(template: dict[str, Any]) -> None:
    functions = functions_by_folder(template)
    bucket = bucket_id(template)
    (traces,) = [k for k in resources(template, "AWS::DynamoDB::Table") if k.startswith("StoresTraces")]
    collect = role_statements(template, functions[c.DISTILL_COLLECT_FOLDER][1])
    dynamodb = [s for s in collect if any(a.startswith("dynamodb:") for a in actions(s))]
    assert [(actions(s), resource_refs(s)) for s in dynamodb] == [(["dynamodb:Query"], [f"<{traces}.Arn>"])]
    assert s3_grants(collect) == {f"<{bucket}.Arn>/{c.DISTILL_DATA}": {"s3:PutObject"}}
    assert not [s for s in collect if any(a.startswith(("secretsmanager:", "sagemaker:", "sqs:")) for a in actions(s))]
    evaluate = role_statements(template, functions[c.DISTILL_EVALUATE_FOLDER][1])
    assert s3_grants(evaluate) == {
        f"<{bucket}.Arn>/{c.DISTILL_DATA}": {"s3:GetObject"},
        f"<{bucket}.Arn>/{c.DISTILL_EVAL}": {"s3:GetObject", "s3:PutObject"},
    }
    assert not [s for s in evaluate if any(a.startswith(("dynamodb:", "secretsmanager:")) for a in actions(s))]
    # Only the collect function reads the trace table with a Query
    for folder, (_, properties) in functions.items():
        queries = [
            s
            for s in role_statements(template, properties)
            if "dynamodb:Query" in actions(s) and any(traces in r for r in resource_refs(s))
        ]
        assert bool(queries) == (folder == c.DISTILL_COLLECT_FOLDER), folder
    for folder in (c.DISTILL_COLLECT_FOLDER, c.DISTILL_EVALUATE_FOLDER):
        variables = functions[folder][1]["Environment"]["Variables"]
        assert variables[c.ENV_DISTILL_BUCKET] == {"Ref": bucket} and c.ENV_STORE not in variables


def test_the_workflow_and_its_package_group_are_outputs(template: dict[str, Any]) -> None:
    machine_id, _ = state_machine(template, "distill")
    assert template["Outputs"]["DistillWorkflowArn"]["Value"] == {"Ref": machine_id}
    (group,) = resources(template, "AWS::SageMaker::ModelPackageGroup").values()
    name = c.resource_name("dev", c.DISTILL_PACKAGE_GROUP)
    assert (
        group["Properties"]["ModelPackageGroupName"] == template["Outputs"]["DistillModelPackageGroup"]["Value"] == name
    )


def test_a_stage_names_its_training_image_and_instance_or_takes_the_self_hosted_image(tmp_path: Any) -> None:
    stages = cdk_json_context()[c.CONTEXT_STAGES]
    own = {"image_uri": IMAGE, "instance_type": "ml.p4d.24xlarge", "max_runtime_hours": 8, "epochs": 2}
    hosted = {"image_uri": IMAGE.replace("llm-endpoint-gpu", "hosted"), "environment": {}}
    stages = {**stages, "own": {**stages["dev"], "distill": own}, "hosted": {**stages["dev"], "self_hosted": hosted}}
    for stage, image, repository in (("own", IMAGE, "llm-endpoint-gpu"), ("hosted", hosted["image_uri"], "hosted")):
        found = synthesize(stage, outdir=tmp_path / stage, stages=stages).to_json()
        train = state_machine_definition(found, "distill")["States"]["train"]["Parameters"]
        assert train["AlgorithmSpecification"]["TrainingImage"] == image
        role = job_role(found, "TrainingRole")
        pulls = [s for s in role_policy(found, role) if "ecr:BatchGetImage" in actions(s)]
        assert [r.rsplit("/", 1)[1] for s in pulls for r in resource_refs(s)] == [repository]
        if stage == "own":
            assert train["ResourceConfig"]["InstanceType"] == "ml.p4d.24xlarge"
            assert train["StoppingCondition"] == {"MaxRuntimeInSeconds": 8 * 3600}
            assert json.loads(json.dumps(train["HyperParameters"]))["epochs"] == "2"
