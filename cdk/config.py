"""Stage configuration, typed once from cdk.json context (`-c stage=<name>` picks one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CDK_JSON = Path(__file__).resolve().parents[1] / "cdk.json"


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    account: str | None = None
    region: str = Field(min_length=1)
    log_retention_days: int = Field(default=30, ge=1)
    reserved_concurrency: int | None = Field(default=None, ge=1)


def stage_config(context: dict[str, Any], stage: str | None = None) -> StageConfig:
    """The named stage (default: context `stage`) from a cdk.json-style context mapping."""
    name = stage or context.get("stage") or "dev"
    stages: dict[str, Any] = context.get("stages", {})
    if name not in stages:
        raise ValueError(f"unknown stage '{name}'; cdk.json defines: {', '.join(sorted(stages))}")
    return StageConfig(name=name, **stages[name])


def load_stage(stage: str | None = None) -> StageConfig:
    context: dict[str, Any] = json.loads(CDK_JSON.read_text())["context"]
    return stage_config(context, stage)
