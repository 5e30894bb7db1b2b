"""The stores the AWS adapters use: DynamoDB tables for usage and audit; the Momento and provider keys."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk import constants as c
from cdk.config import StageConfig
from cdk.constructs.common import acknowledge, removal_policy


class GatewayStores(Construct):
    """Usage and audit tables (tenant partition, `sk` sort key, TTL) and two secrets the operator fills."""

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig) -> None:
        super().__init__(scope, construct_id)
        self.usage = self._table("Usage", stage)
        self.audit = self._table("Audit", stage)
        # the requests on a rollout's or an experiment's arm (sparse): what their gates read
        self.audit.add_global_secondary_index(
            index_name="by_variant",
            partition_key=dynamodb.Attribute(name="variant", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=c.TABLE_SORT_KEY, type=dynamodb.AttributeType.STRING),
        )
        self.review_table, self.review_queue = self._review(stage)
        self.budgets = self._budgets(stage)
        self.conversations = self._conversations(stage)
        self.traces = self._table("Traces", stage, partition=c.TABLE_PARTITION_KEY, sort="request_id")
        self.batch_jobs, self.idempotency = self._batch(stage)
        self.rollouts = self._rollouts(stage)
        self.shadow_pairs, self.shadow_queue = self._shadow(stage)
        self.momento_secret = self._secret(
            "MomentoApiKey",
            stage,
            "the Momento API key (cache, semantic index, rate-limit counters)",
            "A Momento API key is issued by Momento, not by AWS: it is rotated in the Momento console and "
            "put into this secret by the operator (docs/deploy.md); there is no rotation Lambda to attach.",
        )
        self.provider_keys = self._secret(
            "ProviderKeys",
            stage,
            'the model providers\' API keys as JSON, e.g. {"OPENAI_API_KEY": "...", "ANTHROPIC_API_KEY": "..."}',
            "Provider API keys are issued by OpenAI and Anthropic: they are rotated in those consoles and put "
            "into this secret by the operator (docs/deploy.md); there is no rotation Lambda to attach.",
        )

        # Keys the audit and usage records' pseudonyms (identity.py): generated, never read by people.
        self.pseudonym_key = secretsmanager.Secret(
            self,
            "PseudonymKey",
            description=f"{c.PROJECT} {stage.name}: the key of the audit and usage records' pseudonyms (generated).",
            generate_secret_string=secretsmanager.SecretStringGenerator(exclude_punctuation=True, password_length=64),
            removal_policy=removal_policy(stage),
        )
        acknowledge(
            self.pseudonym_key,
            "SMG4",
            "Rotating the pseudonym key would split every user's and address's records (and per-user budgets) "
            "in two: it is kept for the life of the deployment.",
        )

    @property
    def environment(self) -> dict[str, str]:
        """Where the stores are, for every function (permissions are granted separately, per function)."""
        return {
            c.ENV_USAGE_TABLE: self.usage.table_name,
            c.ENV_AUDIT_TABLE: self.audit.table_name,
            c.ENV_MOMENTO_SECRET: self.momento_secret.secret_arn,
            c.ENV_PROVIDER_KEYS_SECRET: self.provider_keys.secret_arn,
            c.ENV_PSEUDONYM_SECRET: self.pseudonym_key.secret_arn,
            c.ENV_REVIEW_QUEUE_URL: self.review_queue.queue_url,
            c.ENV_REVIEW_TABLE: self.review_table.table_name,
            c.ENV_BUDGET_TABLE: self.budgets.table_name,
            c.ENV_CONVERSATION_TABLE: self.conversations.table_name,
            c.ENV_TRACE_TABLE: self.traces.table_name,
            c.ENV_ROLLOUT_TABLE: self.rollouts.table_name,
            c.ENV_SHADOW_QUEUE_URL: self.shadow_queue.queue_url,
            c.ENV_SHADOW_TABLE: self.shadow_pairs.table_name,
        }

    def grant(self, grantee: iam.IGrantable, access: Iterable[str]) -> None:
        """Least privilege: write the named tables, read the named secrets; nothing else."""
        tables = {c.USAGE: self.usage, c.AUDIT: self.audit}
        secrets = {
            c.MOMENTO: self.momento_secret,
            c.PROVIDER_KEYS: self.provider_keys,
            c.PSEUDONYMS: self.pseudonym_key,
        }
        for store in sorted(access):
            if store in secrets:
                secrets[store].grant_read(grantee)
            elif store == c.REVIEW:
                self.review_queue.grant_send_messages(grantee)
            elif store == c.SHADOW:
                self.shadow_queue.grant_send_messages(grantee)
            elif store == c.SHADOW_PAIRS:
                self.shadow_pairs.grant(grantee, *c.SHADOW_PAIR_ACTIONS)
            elif store == c.BATCH_JOBS:
                iam.Grant.add_to_principal(
                    grantee=grantee,
                    actions=list(c.BATCH_JOB_ACTIONS),
                    resource_arns=[self.batch_jobs.table_arn, f"{self.batch_jobs.table_arn}/index/by_tenant"],
                )
            elif store == c.BATCH_JOBS_READ:  # the status route: gets and queries, no writes
                iam.Grant.add_to_principal(
                    grantee=grantee,
                    actions=list(c.BATCH_JOB_READ_ACTIONS),
                    resource_arns=[self.batch_jobs.table_arn, f"{self.batch_jobs.table_arn}/index/by_tenant"],
                )
            elif store == c.IDEMPOTENCY:
                self.idempotency.grant(grantee, *c.IDEMPOTENCY_ACTIONS)
            elif store == c.BUDGETS:
                # Items, and the `held` index by name (reclaiming expired reservations); the
                # transactions need the item actions only.
                iam.Grant.add_to_principal(
                    grantee=grantee,
                    actions=list(c.BUDGET_ACTIONS),
                    resource_arns=[self.budgets.table_arn, f"{self.budgets.table_arn}/index/held"],
                )
            elif store in (c.TRACES, c.TRACES_API):  # traces: written by who finishes, read by the API
                actions = c.TRACE_WRITE_ACTIONS if store == c.TRACES else c.TRACE_API_ACTIONS
                self.traces.grant(grantee, *actions)
            elif store == c.TRACES_QUERY:  # a tenant's traces, read (distillation's collection)
                iam.Grant.add_to_principal(
                    grantee=grantee, actions=list(c.TRACE_QUERY_ACTIONS), resource_arns=[self.traces.table_arn]
                )
            elif store == c.ROLLOUTS:  # a route's rollouts, read where routes are planned (the table, no index)
                iam.Grant.add_to_principal(
                    grantee=grantee, actions=list(c.ROLLOUT_READ_ACTIONS), resource_arns=[self.rollouts.table_arn]
                )
            elif store == c.ROLLOUT_GATES:
                iam.Grant.add_to_principal(
                    grantee=grantee,
                    actions=list(c.ROLLOUT_GATE_ACTIONS),
                    resource_arns=[self.rollouts.table_arn, f"{self.rollouts.table_arn}/index/by_id"],
                )
                iam.Grant.add_to_principal(  # the arms' requests: the variant index only
                    grantee=grantee,
                    actions=list(c.AUDIT_READ_ACTIONS),
                    resource_arns=[f"{self.audit.table_arn}/index/by_variant"],
                )
                self.traces.grant(grantee, *c.TRACE_FEEDBACK_ACTIONS)
            elif store == c.CONVERSATIONS:  # stored responses, and the index deletions follow
                iam.Grant.add_to_principal(
                    grantee=grantee,
                    actions=list(c.CONVERSATION_ACTIONS),
                    resource_arns=[self.conversations.table_arn, f"{self.conversations.table_arn}/index/by_parent"],
                )
            else:  # the table itself: records are put, never read back (no index)
                iam.Grant.add_to_principal(
                    grantee=grantee, actions=list(c.TABLE_WRITE_ACTIONS), resource_arns=[tables[store].table_arn]
                )

    def _review(self, stage: StageConfig) -> tuple[dynamodb.Table, sqs.Queue]:
        """Tier 4: the queue flagged items are sent to (with a dead-letter queue) and the table the
        `review_ingest` function stores them in (`adapters/aws/review.py` has the layout)."""
        table = self._table("Review", stage, partition="item_id", sort=None, ttl=None)
        table.add_global_secondary_index(
            index_name="by_status",
            partition_key=dynamodb.Attribute(name="status", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="created_sk", type=dynamodb.AttributeType.STRING),
        )
        return table, self._consumed_queue("Review", stage, c.STEP_TIMEOUT_S)

    def _table(
        self,
        construct_id: str,
        stage: StageConfig,
        partition: str = c.TABLE_PARTITION_KEY,
        sort: str | None = c.TABLE_SORT_KEY,
        ttl: str | None = c.TABLE_TTL_ATTRIBUTE,
    ) -> dynamodb.Table:
        """On-demand, point-in-time recovery, deletion protection where the stage keeps data."""
        string = dynamodb.AttributeType.STRING
        return dynamodb.Table(
            self,
            construct_id,
            partition_key=dynamodb.Attribute(name=partition, type=string),
            sort_key=dynamodb.Attribute(name=sort, type=string) if sort else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=ttl,
            deletion_protection=stage.retain_data,
            removal_policy=removal_policy(stage),
        )

    def _budgets(self, stage: StageConfig) -> dynamodb.Table:
        """Budget counters and reservations (`adapters/aws/budget.py` has the layout)."""
        table = self._table("Budgets", stage, partition="pk", sort=None, ttl=None)
        table.add_global_secondary_index(
            index_name="held",
            partition_key=dynamodb.Attribute(name="held", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="expires_at", type=dynamodb.AttributeType.NUMBER),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )
        return table

    def _conversations(self, stage: StageConfig) -> dynamodb.Table:
        """The Responses API's stored responses, by tenant (`adapters/aws/conversations.py` has the
        layout); each expires with its tenant's retention (TTL)."""
        table = self._table("Conversations", stage, partition=c.TABLE_PARTITION_KEY, sort="id")
        table.add_global_secondary_index(
            index_name="by_parent",
            partition_key=dynamodb.Attribute(name="parent", type=dynamodb.AttributeType.STRING),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )
        return table

    def _batch(self, stage: StageConfig) -> tuple[dynamodb.Table, dynamodb.Table]:
        """Batch jobs and their lines (`adapters/aws/batch.py` has the layout); batch_submit's
        idempotency records (Powertools' layout: `id`, TTL `expiration`)."""
        jobs = self._table("BatchJobs", stage, partition="pk", sort="sk", ttl=None)
        jobs.add_global_secondary_index(
            index_name="by_tenant",
            partition_key=dynamodb.Attribute(name="tenant", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="created_at", type=dynamodb.AttributeType.NUMBER),
        )
        idempotency = self._table("Idempotency", stage, partition="id", sort=None, ttl="expiration")
        return jobs, idempotency

    def _rollouts(self, stage: StageConfig) -> dynamodb.Table:
        """Staged rollouts, each route's running pointer and every transition
        (`adapters/aws/rollouts.py` has the layout); kept, never expired."""
        table = self._table("Rollouts", stage, partition="pk", sort="sk", ttl=None)
        table.add_global_secondary_index(
            index_name="by_id", partition_key=dynamodb.Attribute(name="rollout_id", type=dynamodb.AttributeType.STRING)
        )
        return table

    def _shadow(self, stage: StageConfig) -> tuple[dynamodb.Table, sqs.Queue]:
        """Shadow copies: the queue the finishing functions hand them to (with a dead-letter
        queue) and the pair table the `shadow` function keeps (`adapters/aws/shadow.py`)."""
        table = self._table("ShadowPairs", stage, partition="pk", sort="sk")
        return table, self._consumed_queue("Shadow", stage, c.SHADOW_TIMEOUT_S)

    def _consumed_queue(self, name: str, stage: StageConfig, consumer_timeout_s: int) -> sqs.Queue:
        """`<name>Queue`, consumed by a function that runs up to `consumer_timeout_s` (its messages
        stay hidden six times that, as Lambda advises), and its `<name>DeadLetters` queue after
        `REVIEW_QUEUE_RECEIVES` deliveries."""
        dead_letters = self._queue(f"{name}DeadLetters", stage)
        acknowledge(dead_letters, "SQS3", f"This is the {name.lower()} queue's dead-letter queue.")
        return self._queue(
            f"{name}Queue",
            stage,
            visibility_timeout=cdk.Duration.seconds(consumer_timeout_s * 6),
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=c.REVIEW_QUEUE_RECEIVES, queue=dead_letters),
        )

    def _queue(self, construct_id: str, stage: StageConfig, **options: Any) -> sqs.Queue:
        """Encrypted (SQS-managed keys), TLS only, messages kept 14 days."""
        return sqs.Queue(
            self,
            construct_id,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=cdk.Duration.days(14),
            removal_policy=removal_policy(stage),
            **options,
        )

    def _secret(self, construct_id: str, stage: StageConfig, holds: str, why_no_rotation: str) -> secretsmanager.Secret:
        secret = secretsmanager.Secret(
            self,
            construct_id,
            description=(
                f"{c.PROJECT} {stage.name}: {holds}. Generated as a placeholder: put the real value with "
                "`aws secretsmanager put-secret-value`."
            ),
            removal_policy=removal_policy(stage),
        )
        acknowledge(secret, "SMG4", why_no_rotation)
        return secret
