"""A distillation run on AWS (docs/distillation.md, "On AWS"): what starts it, where its files live
in the deployment's bucket, the name of its SageMaker jobs, and its typed errors. The
`distill_collect` and `distill_evaluate` functions share it; the workflow
(cdk/constructs/distill.py) reads the locations the collect function returns.

    distill/<tenant>/<run_id>/data/    train, validation, test JSONL, card.json, test-invocations.jsonl
    distill/<tenant>/<run_id>/model/   the training job's output (<job>/output/model.tar.gz)
    distill/<tenant>/<run_id>/eval/    the batch transform's output (transform/), report.json

The SageMaker execution role reads `distill/*/data/*` and writes `distill/*/model/*` only; the
student's role (the transform) reads the data and the model and writes `distill/*/eval/*`.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import cache

from pydantic import BaseModel, ConfigDict, Field, field_validator

PREFIX = "distill/"
SPLIT_FILES = ("train.jsonl", "validation.jsonl", "test.jsonl")
CARD = "card.json"
INVOCATIONS = "test-invocations.jsonl"  # the test split as the endpoint's requests, one a line
TRANSFORM_SUFFIX = ".out"  # what a batch transform appends to an input file's name
REPORT = "report.json"
# A SageMaker job name: at most 63 letters, digits and hyphens (`job_name` stays within it).
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


class DistillRunInvalid(ValueError):
    """The run cannot go on as asked: its input is not valid, or a step's files are not what the
    next step needs (the message says which)."""


class DistillSettings(BaseModel):
    """The two functions' environment, read once. Not `aws.runtime.LambdaSettings`: they build
    none of the chain's dependencies, and importing what those need would slow their cold start."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    config_path: str = Field(alias="GATEWAY_CONFIG_PATH")
    bucket: str = Field(alias="DISTILL_BUCKET", min_length=1)  # the deployment's (batch) bucket
    trace_table: str = Field(default="", alias="TRACE_TABLE")  # distill_collect reads it


@cache
def settings() -> DistillSettings:
    return DistillSettings.model_validate(dict(os.environ))


class RunStart(BaseModel):
    """The workflow's input: `{"tenant", "route", "since", "until"?, "split"?, "run_id"}`. `since`
    and `until` are epoch seconds or what `distill collect --since` takes (`30d`, an ISO date);
    `until` defaults to now. `split` is what `distill collect --split` takes (`80,10,10`, the
    default). `run_id` names the run's folder and, with the tenant, its SageMaker jobs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(min_length=1, max_length=128, pattern=r"^[^/\s]+$")
    route: str = Field(min_length=1, max_length=128)
    since: float | str
    until: float | str | None = None
    split: str = Field(default="80,10,10", max_length=32)
    run_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,23}$")

    @field_validator("split")
    @classmethod
    def _three_shares(cls, value: str) -> str:
        from ..distill.collect import split_shares

        split_shares(value)  # ValueError saying what is wrong
        return value


@dataclass(frozen=True)
class RunFiles:
    """Where a run's files are, as keys of the deployment's bucket and as s3:// URIs."""

    bucket: str
    tenant: str
    run_id: str

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.tenant}/{self.run_id}/"

    @property
    def data(self) -> str:
        return self.prefix + "data/"

    @property
    def model(self) -> str:
        return self.prefix + "model/"

    @property
    def eval(self) -> str:
        return self.prefix + "eval/"

    @property
    def transform(self) -> str:
        return self.eval + "transform/"

    @property
    def transform_output(self) -> str:
        return self.transform + INVOCATIONS + TRANSFORM_SUFFIX

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def job_name(tenant: str, run_id: str) -> str:
    """The run's SageMaker training, model and transform jobs' name: `distill-<tenant>-<run_id>-`
    and a digest of both (tenants whose names differ only in punctuation never share one)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", tenant).strip("-")[:20].strip("-") or "tenant"
    digest = hashlib.sha256(f"{tenant}\0{run_id}".encode()).hexdigest()[:8]
    name = f"distill-{slug}-{run_id}-{digest}"
    if not _JOB_NAME.match(name):
        raise DistillRunInvalid(f"run {run_id} of tenant {tenant} cannot name a SageMaker job ({name})")
    return name
