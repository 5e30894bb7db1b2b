"""Lambda settings (read once from the environment) and the dependencies built from them.

`GATEWAY_STORE=aws` (deployed): DynamoDB for usage and audit, Momento for the exact cache and the
rate-limit counters. `GATEWAY_STORE=sqlite`: one SQLite file (handler tests, single-function use).
"""

from __future__ import annotations

import contextlib
import json
import os
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config import load_config
from ..deps import Deps
from ..identity import set_pseudonym_key
from ..pipeline import INVOKE_POLICY, RetryPolicy
from ..providers.base import default_registry
from .observability import PowertoolsMetrics


class LambdaSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    config_path: str = Field(alias="GATEWAY_CONFIG_PATH")
    store: Literal["sqlite", "aws"] = Field(default="sqlite", alias="GATEWAY_STORE")
    sqlite_path: str = Field(default="/tmp/llm-gateway.db", alias="GATEWAY_SQLITE_PATH")  # noqa: S108 - Lambda scratch
    usage_table: str = Field(default="", alias="USAGE_TABLE")
    audit_table: str = Field(default="", alias="AUDIT_TABLE")
    momento_secret_arn: str = Field(default="", alias="MOMENTO_SECRET_ARN")
    momento_endpoint: str = Field(default="", alias="MOMENTO_ENDPOINT")
    momento_local_endpoint: str = Field(default="", alias="MOMENTO_LOCAL_ENDPOINT")  # tests: the stand-in
    momento_cache: str = Field(default="llm-gateway", alias="MOMENTO_CACHE_NAME")
    provider_keys_secret_arn: str = Field(default="", alias="PROVIDER_KEYS_SECRET_ARN")
    pseudonym_secret_arn: str = Field(default="", alias="PSEUDONYM_SECRET_ARN")  # keyed audit pseudonyms
    review_queue_url: str = Field(default="", alias="REVIEW_QUEUE_URL")  # tier 4: flagged items go here
    review_table: str = Field(default="", alias="REVIEW_TABLE")
    budget_table: str = Field(default="", alias="BUDGET_TABLE")  # reservations and budget counters
    conversation_table: str = Field(default="", alias="CONVERSATION_TABLE")  # the Responses API's store
    trace_table: str = Field(default="", alias="TRACE_TABLE")  # request traces and their feedback
    # Staged rollouts: the table (read by the functions that plan routes, written by the gates
    # function) and the alarms that roll them back (JSON: alert rule -> CloudWatch alarm name).
    rollout_table: str = Field(default="", alias="ROLLOUT_TABLE")
    rollout_alarms: str = Field(default="{}", alias="ROLLOUT_ALARMS")
    # Shadow copies: the queue the functions that finish requests hand them to, the pair table.
    shadow_queue_url: str = Field(default="", alias="SHADOW_QUEUE_URL")
    shadow_table: str = Field(default="", alias="SHADOW_TABLE")
    # Batch jobs: the job table, the bucket, the workflow, batch_submit's idempotency records,
    # and the first wait between looks at a provider batch (doubling, at most 5 minutes).
    batch_table: str = Field(default="", alias="BATCH_TABLE")
    batch_bucket: str = Field(default="", alias="BATCH_BUCKET")
    batch_state_machine_arn: str = Field(default="", alias="BATCH_STATE_MACHINE_ARN")
    idempotency_table: str = Field(default="", alias="IDEMPOTENCY_TABLE")
    batch_poll_s: float = Field(default=5.0, gt=0, alias="BATCH_POLL_S")

    @model_validator(mode="after")
    def _aws_stores_named(self) -> LambdaSettings:
        if self.store == "aws":
            if not (self.usage_table and self.audit_table):
                raise ValueError("GATEWAY_STORE=aws needs USAGE_TABLE and AUDIT_TABLE")
            if not (self.momento_local_endpoint or (self.momento_secret_arn and self.momento_endpoint)):
                raise ValueError("GATEWAY_STORE=aws needs MOMENTO_SECRET_ARN and MOMENTO_ENDPOINT")
        return self


@cache
def settings() -> LambdaSettings:
    return LambdaSettings.model_validate(dict(os.environ))


@cache
def momento_client() -> Any:
    """Built on first use, so functions without Momento access never read the key."""
    from ..adapters.aws.momento import build_cache_client

    current = settings()
    if current.momento_local_endpoint:
        return build_cache_client(local_endpoint=current.momento_local_endpoint)
    from aws_lambda_powertools.utilities.parameters import get_secret

    return build_cache_client(str(get_secret(current.momento_secret_arn)), current.momento_endpoint)


def _aws_deps(current: LambdaSettings, invoke_policy: RetryPolicy) -> Deps:
    from ..adapters.aws.budget import DynamoBudgetLedger
    from ..adapters.aws.conversations import DynamoConversationStore
    from ..adapters.aws.dynamodb import DynamoAuditLog, DynamoUsageLedger, default_client
    from ..adapters.aws.experiments import DynamoExperimentStore
    from ..adapters.aws.momento import MomentoExactCache, MomentoRateLimiter
    from ..adapters.aws.momento_semantic import MomentoSemanticIndex
    from ..adapters.aws.rollouts import DynamoRolloutStore
    from ..adapters.aws.traces import DynamoTraceStore

    dynamodb = default_client()
    return Deps(
        review=review_queue(current, dynamodb),
        budgets=DynamoBudgetLedger(current.budget_table, dynamodb) if current.budget_table else None,
        conversations=(
            DynamoConversationStore(current.conversation_table, dynamodb) if current.conversation_table else None
        ),
        traces=DynamoTraceStore(current.trace_table, dynamodb) if current.trace_table else None,
        rollouts=DynamoRolloutStore(current.rollout_table, dynamodb) if current.rollout_table else None,
        experiments=DynamoExperimentStore(current.rollout_table, dynamodb) if current.rollout_table else None,
        shadows=shadow_hand_off(current),
        config=load_config(current.config_path),
        cache=MomentoExactCache(momento_client, current.momento_cache),
        limiter=MomentoRateLimiter(momento_client, current.momento_cache),
        semantic=MomentoSemanticIndex(momento_client, current.momento_cache),
        usage=DynamoUsageLedger(current.usage_table, dynamodb),
        audit=DynamoAuditLog(current.audit_table, dynamodb),
        providers=default_registry(),
        metrics=PowertoolsMetrics(),
        invoke_policy=invoke_policy,
    )


def shadow_hand_off(current: LambdaSettings) -> Any:
    """The shadow queue when this function hands copies to it (those that finish requests), else None."""
    if not current.shadow_queue_url:
        return None
    from ..adapters.aws.shadow import SqsShadowHandOff

    def client() -> Any:  # made at the first copy
        import boto3
        from botocore.config import Config

        quick = Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=1, read_timeout=2)
        return boto3.client("sqs", config=quick)

    return SqsShadowHandOff(current.shadow_queue_url, client)


def review_queue(current: LambdaSettings, dynamodb: Any) -> Any:
    """The review queue when this function may submit to it (guard, moderate), else None."""
    if not (current.review_queue_url and current.review_table):
        return None
    import boto3

    from ..adapters.aws.review import DynamoReviewStore, SqsReviewQueue

    return SqsReviewQueue(
        current.review_queue_url, boto3.client("sqs"), DynamoReviewStore(current.review_table, dynamodb)
    )


def _sqlite_deps(current: LambdaSettings, invoke_policy: RetryPolicy) -> Deps:
    """The local adapters on the function's SQLite file, as `llm-gateway serve` wires them (kept
    open for the container's life); the pseudonym key comes from Secrets Manager, not a file."""
    from ..adapters.local.wiring import local_deps

    config = load_config(current.config_path).model_copy(update={"storage_path": current.sqlite_path})
    return local_deps(
        config,
        _CONTAINER,
        metrics=PowertoolsMetrics(),
        invoke_policy=invoke_policy,
        pseudonym_key_beside_store=False,
    )


_CONTAINER = contextlib.ExitStack()  # the stores a container opens, open until it ends


def load_provider_keys(current: LambdaSettings) -> None:
    """Put the provider API keys (a JSON object in Secrets Manager: variable name -> key) into the
    environment, where the providers look for a model's `api_key_env`. Values already set win."""
    if not current.provider_keys_secret_arn:
        return
    from aws_lambda_powertools.utilities.parameters import get_secret

    keys = json.loads(str(get_secret(current.provider_keys_secret_arn)))
    for name, value in keys.items():
        os.environ.setdefault(str(name), str(value))


def load_pseudonym_key(current: LambdaSettings) -> None:
    """The deployment's pseudonym key (`identity`), from Secrets Manager, when the function has one."""
    if not current.pseudonym_secret_arn:
        return
    from aws_lambda_powertools.utilities.parameters import get_secret

    set_pseudonym_key(str(get_secret(current.pseudonym_secret_arn)))


@cache
def deps(invoke_policy: RetryPolicy = INVOKE_POLICY) -> Deps:
    """Dependencies for this container, built on first use and reused across invocations.

    `invoke_policy`: the invoke step's retries and deadline; the REST chain's functions pass
    `pipeline.REST_INVOKE_POLICY` (`handler.chain_deps`), the streaming and batch functions keep
    the default."""
    current = settings()
    if current.store == "aws" and not current.pseudonym_secret_arn:
        # Checked here, not in `settings()`: functions that only read settings need no key.
        raise ValueError("GATEWAY_STORE=aws needs PSEUDONYM_SECRET_ARN (the key of audit pseudonyms)")
    load_provider_keys(current)
    load_pseudonym_key(current)
    return _aws_deps(current, invoke_policy) if current.store == "aws" else _sqlite_deps(current, invoke_policy)
