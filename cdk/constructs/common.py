"""Pieces every construct shares: the Lambda runtime, log groups, removal policy, cdk-nag acknowledgments."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.config import StageConfig

RUNTIME = lambda_.Runtime.PYTHON_3_12
_ARCHITECTURES = {"arm64": lambda_.Architecture.ARM_64, "x86_64": lambda_.Architecture.X86_64}


def architecture(stage: StageConfig) -> lambda_.Architecture:
    return _ARCHITECTURES[stage.architecture]


_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
    2557: logs.RetentionDays.SEVEN_YEARS,
    2922: logs.RetentionDays.EIGHT_YEARS,
    3288: logs.RetentionDays.NINE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


def removal_policy(stage: StageConfig) -> cdk.RemovalPolicy:
    return cdk.RemovalPolicy.RETAIN if stage.retain_data else cdk.RemovalPolicy.DESTROY


def log_group(scope: Construct, construct_id: str, stage: StageConfig) -> logs.LogGroup:
    """A log group with the stage's retention (names are generated, so a re-deploy never collides)."""
    return logs.LogGroup(
        scope,
        construct_id,
        retention=_RETENTION[stage.log_retention_days],
        removal_policy=removal_policy(stage),
    )


def acknowledge(construct: Construct, rule: str, reason: str, findings: Sequence[str] = ()) -> None:
    """Acknowledge a cdk-nag AwsSolutions finding on `construct` and its children, with the reason.

    cdk-nag 3 matches a rule with several findings per resource (IAM5) one finding at a time:
    `findings` names them (e.g. `Resource::*`); without it the whole rule is acknowledged.
    """
    ids = [f"AwsSolutions-{rule}[{finding}]" for finding in findings] or [f"AwsSolutions-{rule}"]
    cdk.Validations.of(construct).acknowledge(*(cdk.Acknowledgment(id=id_, reason=reason) for id_ in ids))
