"""Local AWS for end-to-end tests: moto's server, with Lambda code run in real subprocesses.

moto executes Step Functions state machines (JSONPath) when told to, and calls Lambda through its
own HTTP API, but it can only run Lambda code in Docker, which this machine lacks. The launcher
replaces that one method: the uploaded zip (and the function's layers) are unpacked and the
handler runs in a fresh Python process with the function's environment, the way Lambda would run
it. Everything else — CloudFormation, S3, DynamoDB, IAM, Step Functions — is moto's.

Known gaps worked around here, not hidden: no StartSyncExecution (the API front polls
DescribeExecution), executions must be named, JSONata is not supported (the app uses JSONPath).
moto's Step Functions forwards a SageMaker task to moto's SageMaker but refuses `.sync` before the
call: `SageMakerJobs` submits the job and waits for it as Step Functions does (Describe... until it
ends). moto runs no container: a job is `Completed` as soon as it is created, and writes nothing.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from moto.awslambda import models as lambda_models

from cdk.assembly import FunctionBundle
from tests.support.moto_server import MotoServer
from tests.support.servers import free_port

REGION = "eu-west-1"
ACCOUNT = "123456789012"

# In an isolated runtime (`python -I -S`), sys.path comes from the harness, not PYTHONPATH.
_ISOLATED_PATH = "import os, sys\nsys.path[:0] = os.environ['LOCAL_AWS_SYS_PATH'].split(os.pathsep)\n"
# The subprocess that plays the Lambda runtime: import the handler, call it, print one JSON line.
_RUNTIME = r"""
import importlib, json, sys, traceback
event = json.loads(sys.stdin.read())
module_name, _, function_name = sys.argv[1].rpartition(".")
class Context:
    function_name = sys.argv[2]
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = sys.argv[3]
    aws_request_id = sys.argv[4]
    log_group_name = "/aws/lambda/" + sys.argv[2]
    log_stream_name = "local"
    def get_remaining_time_in_millis(self):
        return 30000
try:
    handler = getattr(importlib.import_module(module_name), function_name)
    result = {"ok": handler(event, Context())}
except Exception as exc:
    result = {"error": {"errorMessage": str(exc), "errorType": type(exc).__name__,
                        "stackTrace": traceback.format_exc().splitlines()}}
sys.stdout.write("\n@@RESULT@@" + json.dumps(result) + "\n")
"""


class SubprocessLambdas:
    """Runs moto's Lambda functions as local processes; records every invocation for assertions."""

    def __init__(
        self,
        workdir: Path,
        env_overrides: dict[str, str] | None = None,
        bundles: Mapping[str, FunctionBundle] | None = None,
        runtime_provided: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.env_overrides = dict(env_overrides or {})
        # moto's CloudFormation drops a function's `Layers`: `bundles` (function name -> its bundle
        # as the assembly stages it, `cdk.assembly`) gives each function its code and layers. With
        # `runtime_provided` (what Lambda's runtime has: boto3...) as well, a handler runs in
        # `python -I -S` with only those on sys.path, as on Lambda; otherwise this interpreter's
        # site-packages stay visible too.
        self.bundles = dict(bundles or {})
        self.runtime_provided = runtime_provided
        self.invocations: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._unpacked: dict[str, Path] = {}

    def _unpack(self, name: str, code: bytes) -> Path:
        key = f"{name}-{hash(code)}"
        with self._lock:
            target = self._unpacked.get(key)
            if target is None:
                target = Path(tempfile.mkdtemp(prefix=f"{name[:40]}-", dir=self.workdir))
                with zipfile.ZipFile(io.BytesIO(code)) as archive:
                    archive.extractall(target)
                self._unpacked[key] = target
        return target

    def run(self, function: Any, event: Any) -> tuple[str, bool, str]:
        """moto's `_invoke_lambda` contract: (payload, errored, logs)."""
        code_dir = self._unpack(function.function_name, function.code_bytes)
        paths = [str(code_dir)]
        bundle = self.bundles.get(function.function_name)
        layer_dirs = [path for _, path in bundle.layers] if bundle is not None else []
        paths += [str(path / "python") for path in layer_dirs if (path / "python").is_dir()]
        env = {
            **os.environ,
            **{k: _in_layers(str(v), layer_dirs) for k, v in (function.environment_vars or {}).items()},
            **self.env_overrides,
            "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")]),
            "AWS_LAMBDA_FUNCTION_NAME": function.function_name,
            "AWS_REGION": function.region,
            "AWS_DEFAULT_REGION": function.region,
        }
        request_id = base64.b32encode(os.urandom(10)).decode().lower()
        isolated: list[str] = []
        runtime = _RUNTIME
        if self.runtime_provided is not None and bundle is not None:
            isolated = ["-I", "-S"]
            env["LOCAL_AWS_SYS_PATH"] = os.pathsep.join([*paths, self.runtime_provided])
            runtime = _ISOLATED_PATH + _RUNTIME
        done = subprocess.run(
            [
                sys.executable,
                *isolated,
                "-c",
                runtime,
                function.handler,
                function.function_name,
                function.function_arn,
                request_id,
            ],
            input=json.dumps(event),
            capture_output=True,
            text=True,
            env=env,
            cwd=code_dir,
            timeout=120,
            check=False,
        )
        logs = done.stderr + done.stdout.split("\n@@RESULT@@")[0]
        marker = done.stdout.rpartition("\n@@RESULT@@")[2].strip()
        if not marker:
            result: dict[str, Any] = {
                "error": {"errorMessage": f"runtime exited {done.returncode}", "errorType": "Runtime.ExitError"}
            }
        else:
            result = json.loads(marker)
        with self._lock:
            self.invocations.append((function.function_name, event, result))
        if "error" in result:
            return json.dumps(result["error"]), True, logs
        return json.dumps(result["ok"]), False, logs


def _in_layers(value: str, layer_dirs: list[Path]) -> str:
    """Lambda mounts layers at /opt: a `/opt/...` path in the environment becomes the unpacked
    layer folder that holds it (the value is kept when none does)."""
    if not value.startswith("/opt/"):
        return value
    relative = value.removeprefix("/opt/")
    for layer_dir in reversed(layer_dirs):  # later layers win, as in Lambda
        if (layer_dir / relative).exists():
            return str(layer_dir / relative)
    return value


def _sagemaker_jobs() -> Any:
    """A SageMaker task service for moto's Step Functions that runs `.sync` (RUN_JOB): the create
    call goes to moto's SageMaker as moto sends it, then the job is described until it ends."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import ResourceCondition
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_callback import (
        StateTaskServiceCallback,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_unsupported import (
        StateTaskServiceUnsupported,
    )
    from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for

    describe = {  # create action -> (describe action, name parameter, status field)
        "createTrainingJob": ("describe_training_job", "TrainingJobName", "TrainingJobStatus"),
        "createTransformJob": ("describe_transform_job", "TransformJobName", "TransformJobStatus"),
    }

    class SageMakerJobs(StateTaskServiceUnsupported):  # type: ignore[misc]
        def __init__(self) -> None:
            patterns = {ResourceCondition.WaitForTaskToken, ResourceCondition.Sync}
            StateTaskServiceCallback.__init__(self, supported_integration_patterns=patterns)

        def _build_sync_resolver(
            self, env: Any, resource_runtime_part: Any, normalised_parameters: dict[str, Any], state_credentials: Any
        ) -> Any:
            action, key, status = describe[self.resource.api_action]
            client = boto_client_for(
                service="sagemaker", region=resource_runtime_part.region, state_credentials=state_credentials
            )
            env.stack.pop()  # the create call's answer: the task's output is the job's description
            name = normalised_parameters[key]

            def resolve() -> dict[str, Any] | None:
                found = getattr(client, action)(**{key: name})
                found.pop("ResponseMetadata", None)
                if found[status] in ("Failed", "Stopped"):
                    raise RuntimeError(f"SageMaker job {name}: {found[status]}")
                return json.loads(json.dumps(found, default=str)) if found[status] == "Completed" else None

            return resolve

    return SageMakerJobs


class LocalAws:
    """A running moto server with Step Functions execution on and subprocess Lambdas."""

    def __init__(self, moto: MotoServer, lambdas: SubprocessLambdas) -> None:
        self.moto = moto
        self.url = moto.url
        self.lambdas = lambdas

    def client(self, service: str) -> Any:
        return self.moto.client(service, region=REGION)


@contextmanager
def local_aws(
    workdir: Path,
    env_overrides: dict[str, str] | None = None,
    bundles: Mapping[str, FunctionBundle] | None = None,
    runtime_provided: str | None = None,
) -> Iterator[LocalAws]:
    """Start moto's server on a free loopback port; Step Functions executes, Lambda runs locally
    (in its bundle, isolated when `runtime_provided` is given: see `SubprocessLambdas`)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_factory

    moto = MotoServer(free_port())
    lambdas = SubprocessLambdas(workdir, env_overrides, bundles, runtime_provided)
    original = lambda_models.LambdaFunction._invoke_lambda
    original_service_for = state_task_factory.state_task_service_for
    saved_port = os.environ.get("MOTO_PORT")
    sagemaker_jobs = _sagemaker_jobs()

    def invoke(self: Any, event: Any = None) -> tuple[str, bool, str]:
        return lambdas.run(self, event if event is not None else {})

    def service_for(service_name: str) -> Any:
        return sagemaker_jobs() if service_name == "sagemaker" else original_service_for(service_name)

    lambda_models.LambdaFunction._invoke_lambda = invoke  # type: ignore[method-assign]
    state_task_factory.state_task_service_for = service_for
    try:
        with moto:
            # Step Functions calls Lambda through boto3 at localhost:MOTO_PORT: point it at this server.
            os.environ["MOTO_PORT"] = moto.url.rsplit(":", 1)[1]
            # Handlers' boto3 clients (DynamoDB adapters) reach the same server.
            lambdas.env_overrides = {**moto.environment(REGION), **lambdas.env_overrides}
            moto.configure({"stepfunctions": {"execute_state_machine": True}})
            yield LocalAws(moto, lambdas)
    finally:
        lambda_models.LambdaFunction._invoke_lambda = original  # type: ignore[method-assign]
        state_task_factory.state_task_service_for = original_service_for
        if saved_port is None:
            os.environ.pop("MOTO_PORT", None)
        else:
            os.environ["MOTO_PORT"] = saved_port


# --------------------------------------------------------------------------- deploying a cloud assembly

ASSET_BUCKET = f"cdk-hnb659fds-assets-{ACCOUNT}-{REGION}"


def _zip_dir(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(directory))
    return buffer.getvalue()


# Resource types moto's CloudFormation cannot take as synthesized (it crashes or rejects the stack):
# the streaming Function URL (not on the REST path) and Secrets Manager secrets (their ARNs are
# substituted; the test sets what the functions read from them through the environment).
# moto's CloudFormation leaves CloudWatch alarms out, so a dashboard that names them cannot be made
_DROPPED_TYPES = (
    "AWS::Lambda::Url",
    "AWS::SecretsManager::Secret",
    "AWS::CDK::Metadata",
    "AWS::CloudWatch::Dashboard",
    "AWS::CloudWatch::Alarm",  # moto's CloudFormation does not make them; references get stand-ins
)
# What a reference to a dropped resource becomes: its `Ref` and its `Arn`.
_STAND_INS = {
    "AWS::SecretsManager::Secret": lambda k: (f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{k}-AbCdEf",) * 2,
    "AWS::CloudWatch::Alarm": lambda k: (k, f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{k}"),
}


def _substitute(value: Any, replacements: dict[str, tuple[str, str]]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"Ref"} and value["Ref"] in replacements:
            return replacements[value["Ref"]][0]
        attribute = value.get("Fn::GetAtt") if set(value) == {"Fn::GetAtt"} else None
        if isinstance(attribute, list) and attribute[0] in replacements and attribute[1] == "Arn":
            return replacements[attribute[0]][1]
        return {k: _substitute(v, replacements) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, replacements) for v in value]
    return value


def prepare_template(template: dict[str, Any]) -> dict[str, Any]:
    """What moto's CloudFormation is given: the synthesized template minus deploy-time machinery.

    Dropped: the bootstrap-version rule and parameter (there is no bootstrap stack), custom
    resources (their providers are Node.js Lambdas that only matter at deploy time), and the
    types in `_DROPPED_TYPES`, with references to dropped secrets and alarms replaced by stand-in
    names and ARNs (`_STAND_INS`) and outputs that name a dropped resource left out. KMS keys'
    tags take the shape moto reads.
    """
    prepared = json.loads(json.dumps(template))
    prepared.pop("Rules", None)
    prepared.get("Parameters", {}).pop("BootstrapVersion", None)
    if not prepared.get("Parameters"):
        prepared.pop("Parameters", None)
    resources = prepared["Resources"]
    dropped = [k for k, v in resources.items() if v["Type"].startswith("Custom::") or v["Type"] in _DROPPED_TYPES]
    stand_ins = {k: _STAND_INS[resources[k]["Type"]](k) for k in dropped if resources[k]["Type"] in _STAND_INS}
    for logical_id in dropped:
        del resources[logical_id]
    for resource in resources.values():
        if resource["Type"] == "AWS::KMS::Key" and "Tags" in resource.get("Properties", {}):
            # moto's CloudFormation reads a KMS key's tags in the KMS API's shape (TagKey, TagValue)
            tags = resource["Properties"]["Tags"]
            resource["Properties"]["Tags"] = [{"TagKey": t["Key"], "TagValue": t["Value"]} for t in tags]
    prepared["Resources"] = _substitute(resources, stand_ins)
    outputs = prepared.get("Outputs", {})
    for name in [n for n, o in outputs.items() if any(d in json.dumps(o) for d in dropped)]:
        del outputs[name]
    return prepared


def _recreate_state_machines(aws: LocalAws, resources: dict[str, str], template: dict[str, Any]) -> None:
    """moto's CloudFormation creates state machines the executing Step Functions API cannot see:
    create each again through the API from the definition CloudFormation resolved."""
    from moto.stepfunctions.models import stepfunctions_backends

    sfn = aws.client("stepfunctions")
    created = {m.arn: m for m in stepfunctions_backends[ACCOUNT][REGION].state_machines}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::StepFunctions::StateMachine":
            continue
        machine = created[resources[logical_id]]
        resources[logical_id] = sfn.create_state_machine(
            name=f"{machine.name}-api",
            definition=machine.definition,
            roleArn=machine.roleArn,
            type=resource["Properties"].get("StateMachineType", "STANDARD"),
        )["stateMachineArn"]


def deploy_assembly(aws: LocalAws, assembly_dir: Path, stack_name: str) -> dict[str, str]:
    """Upload the stack's file assets to the bootstrap bucket, create the stack, return logical -> physical ids."""
    template = json.loads((assembly_dir / f"{stack_name}.template.json").read_text())
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=ASSET_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    assets = json.loads((assembly_dir / f"{stack_name}.assets.json").read_text())
    for asset in assets.get("files", {}).values():
        source = assembly_dir / asset["source"]["path"]
        body = _zip_dir(source) if source.is_dir() else source.read_bytes()
        for destination in asset["destinations"].values():
            if destination["objectKey"].endswith(".json"):
                continue  # the template itself
            s3.put_object(Bucket=ASSET_BUCKET, Key=destination["objectKey"], Body=body)
    cloudformation = aws.client("cloudformation")
    cloudformation.create_stack(
        StackName=stack_name,
        TemplateBody=json.dumps(prepare_template(template)),
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    waiter = cloudformation.get_waiter("stack_create_complete")
    waiter.wait(StackName=stack_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    summaries = cloudformation.list_stack_resources(StackName=stack_name)["StackResourceSummaries"]
    resources = {r["LogicalResourceId"]: r.get("PhysicalResourceId", "") for r in summaries}
    _recreate_state_machines(aws, resources, template)
    return resources


def connect_bucket_notifications(aws: LocalAws, template: dict[str, Any], resources: dict[str, str]) -> None:
    """Apply the stack's S3 bucket notifications (CDK's custom resource, dropped from what moto
    deploys) to the deployed buckets, so an upload invokes the function it names; and their
    versioning, which moto's CloudFormation does not apply."""
    lambda_client = aws.client("lambda")
    for logical_id, resource in template["Resources"].items():
        versioning = resource.get("Properties", {}).get("VersioningConfiguration")
        if resource["Type"] == "AWS::S3::Bucket" and versioning:
            aws.client("s3").put_bucket_versioning(Bucket=resources[logical_id], VersioningConfiguration=versioning)
    for resource in template["Resources"].values():
        if resource["Type"] != "Custom::S3BucketNotifications":
            continue
        properties = resource["Properties"]
        configuration = json.loads(json.dumps(properties["NotificationConfiguration"]))
        for target in configuration.get("LambdaFunctionConfigurations", []):
            function = resources[target["LambdaFunctionArn"]["Fn::GetAtt"][0]]
            target["LambdaFunctionArn"] = lambda_client.get_function(FunctionName=function)["Configuration"][
                "FunctionArn"
            ]
        aws.client("s3").put_bucket_notification_configuration(
            Bucket=resources[properties["BucketName"]["Ref"]], NotificationConfiguration=configuration
        )
