"""The AWS side of rollouts and experiments in tests: a deployment's tables on moto's server (the
audit, trace and rollout tables), the environment the `rollout_gates` function reads, and its
handler invoked as the schedule invokes it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.adapters.aws.dynamodb import DynamoAuditLog, audit_key_schema
from llm_gateway.adapters.aws.experiments import DynamoExperimentStore
from llm_gateway.adapters.aws.rollouts import DynamoRolloutStore, rollout_key_schema
from llm_gateway.adapters.aws.traces import DynamoTraceStore, trace_key_schema
from llm_gateway.aws import rollout_gates, runtime
from tests.support.moto_server import MotoServer


class Context:
    function_name = "rollout_gates"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:rollout_gates"
    aws_request_id = "local"


class Deployment:
    """The tables, the stores on them (as the functions build them), and the gates function."""

    def __init__(self, moto: MotoServer, names: dict[str, str]) -> None:
        dynamodb = moto.client("dynamodb")
        self.names = names
        self.audit = DynamoAuditLog(names["audit"], dynamodb)
        self.traces = DynamoTraceStore(names["traces"], dynamodb)
        self.rollouts = DynamoRolloutStore(names["rollouts"], dynamodb)
        self.experiments = DynamoExperimentStore(names["rollouts"], dynamodb)

    @property
    def table_option(self) -> list[str]:
        """What the CLI's commands take to work on this deployment."""
        return ["--table", self.names["rollouts"]]

    def gates(self) -> dict[str, Any]:
        """One scheduled run of the `rollout_gates` function's handler: what it moved and stopped."""
        return rollout_gates.lambda_handler({"source": "aws.events"}, Context())  # type: ignore[arg-type]

    @staticmethod
    def forget_settings() -> None:
        """The function's settings and stores are built once a container: built again from the environment."""
        runtime.settings.cache_clear()
        rollout_gates.controller.cache_clear()


@contextmanager
def deployment(moto: MotoServer, monkeypatch: pytest.MonkeyPatch, config: Path) -> Iterator[Deployment]:
    dynamodb = moto.client("dynamodb")
    names = {kind: f"{kind}-{uuid.uuid4().hex[:8]}" for kind in ("audit", "traces", "rollouts")}
    for kind, schema in (
        ("audit", audit_key_schema()),
        ("traces", trace_key_schema()),
        ("rollouts", rollout_key_schema()),
    ):
        dynamodb.create_table(TableName=names[kind], BillingMode="PAY_PER_REQUEST", **schema)
    environment = {
        **moto.environment(),
        "GATEWAY_CONFIG_PATH": str(config),
        "ROLLOUT_TABLE": names["rollouts"],
        "AUDIT_TABLE": names["audit"],
        "TRACE_TABLE": names["traces"],
        "ROLLOUT_ALARMS": "{}",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    Deployment.forget_settings()
    try:
        yield Deployment(moto, names)
    finally:
        Deployment.forget_settings()
