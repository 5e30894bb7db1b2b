"""Stage configuration, typed once from cdk.json context (`-c stage=<name>` picks one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CDK_JSON = Path(__file__).resolve().parents[1] / "cdk.json"

# The retention periods CloudWatch Logs accepts.
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)


_IMAGE_URI = r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9._/-]+[:@].+$"
_INSTANCE_TYPE = r"^ml\.[a-z0-9]+\.[a-z0-9]+$"


class SelfHostedConfig(BaseModel):
    """The self-hosted model: a SageMaker real-time endpoint running the `model_server` image."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # <account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>, built from model_server/Dockerfile.gpu
    image_uri: str = Field(pattern=_IMAGE_URI)
    # s3://bucket/key.tar.gz, unpacked into /opt/ml/model (MODEL_SERVER_MODEL_PATH points inside it)
    model_data_url: str | None = Field(default=None, pattern=r"^s3://[a-z0-9.-]+/.+$")
    endpoint_name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    instance_type: str = Field(default="ml.g6e.xlarge", pattern=_INSTANCE_TYPE)
    min_instances: int = Field(default=1, ge=1)
    max_instances: int = Field(default=2, ge=1)
    # Scale out above this many invocations per instance per minute (target tracking).
    invocations_per_instance: int = Field(default=600, ge=1)
    scale_in_cooldown_s: int = Field(default=600, ge=0)
    scale_out_cooldown_s: int = Field(default=120, ge=0)
    startup_timeout_s: int = Field(default=900, ge=60, le=3600)
    environment: dict[str, str] = Field(default_factory=dict)  # MODEL_SERVER_* (model_server/settings.py)

    @field_validator("max_instances")
    @classmethod
    def _at_least_min(cls, value: int, info: Any) -> int:
        if value < info.data.get("min_instances", 1):
            raise ValueError("max_instances must be at least min_instances")
        return value


class DistillConfig(BaseModel):
    """The distillation workflow's SageMaker jobs (cdk/constructs/distill.py): the training job on
    the collection, the batch transform of the test split through the student."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The GPU image (model_server/Dockerfile.gpu: `train` and `serve`). None: the self-hosted
    # model's image, else <account>.dkr.ecr.<region>.amazonaws.com/llm-gateway-model-server-gpu:latest.
    image_uri: str | None = Field(default=None, pattern=_IMAGE_URI)
    instance_type: str = Field(default="ml.g5.xlarge", pattern=_INSTANCE_TYPE)
    max_runtime_hours: int = Field(default=4, ge=1, le=24)  # the training job is stopped after this
    volume_gb: int = Field(default=30, ge=1, le=512)
    transform_instance_type: str = Field(default="ml.g5.xlarge", pattern=_INSTANCE_TYPE)
    # distill.train.Settings: what `llm-gateway distill train` takes as options
    epochs: int = Field(default=4, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    rank: int = Field(default=16, ge=1)
    batch: int = Field(default=8, ge=1)

    def hyperparameters(self) -> dict[str, str]:
        """The training job's hyperparameters, as SageMaker passes them (strings)."""
        return {name: str(getattr(self, name)) for name in ("epochs", "learning_rate", "rank", "batch")}


class StageConfig(BaseModel):
    """One deployment of the gateway: where it goes and how big it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    account: str | None = None  # None: the account of the CLI's credentials (CDK_DEFAULT_ACCOUNT)
    region: str = Field(min_length=1)
    log_retention_days: int = Field(default=30, ge=1)
    reserved_concurrency: int | None = Field(default=None, ge=1)  # per chain function; None: unreserved
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    memory_mb: int = Field(default=1024, ge=128, le=10240)
    # The functions' CPU; the third-party layers are built for it (Graviton arm64 costs less).
    architecture: Literal["arm64", "x86_64"] = "arm64"
    # The gateway YAML (tenants, key digests, models, routes), relative to the repository root.
    gateway_config: str = "layers/core/python/llm_gateway/example_config.yaml"
    gateway_store: str = "aws"  # GATEWAY_STORE: which adapters the Lambdas build
    # Momento (GATEWAY_STORE=aws): the endpoint that goes with the API key, e.g.
    # cell-4-us-west-2-1.prod.a.momentohq.com, and the cache the gateway uses.
    momento_endpoint: str = ""
    momento_cache_name: str = Field(default="llm-gateway", min_length=1)
    throttle_rate_limit: float = Field(default=50, gt=0)  # API requests per second (steady state)
    throttle_burst_limit: int = Field(default=100, ge=1)
    retain_data: bool = True  # keep tables, secret and logs when the stack is deleted
    streaming: bool = True  # deploy the streaming function (Function URL, response streaming)
    web_adapter_layer_arn: str | None = None  # None: the published Lambda Web Adapter layer of the architecture
    self_hosted: SelfHostedConfig | None = None  # a SageMaker endpoint for the `sagemaker` provider
    distill: DistillConfig = Field(default_factory=DistillConfig)  # the distillation workflow's jobs

    @field_validator("log_retention_days")
    @classmethod
    def _a_cloudwatch_period(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(f"log_retention_days must be one of {LOG_RETENTION_DAYS}")
        return value


def stage_config(context: dict[str, Any], stage: str | None = None) -> StageConfig:
    """The named stage (default: context `stage`) from a cdk.json-style context mapping."""
    name = stage or context.get("stage") or "dev"
    stages: dict[str, Any] = context.get("stages", {})
    if name not in stages:
        raise ValueError(f"unknown stage '{name}'; cdk.json defines: {', '.join(sorted(stages))}")
    return StageConfig(name=name, **stages[name])


def cdk_json_context() -> dict[str, Any]:
    """cdk.json's `context`: the stages and the CDK feature flags."""
    context: dict[str, Any] = json.loads(CDK_JSON.read_text())["context"]
    return context


def load_stage(stage: str | None = None) -> StageConfig:
    return stage_config(cdk_json_context(), stage)
