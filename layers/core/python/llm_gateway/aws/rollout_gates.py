"""The `rollout_gates` function: every minute (an EventBridge schedule), the running rollouts'
gates and A/B experiments' guardrails judged over the deployment's stores (each running
experiment's report saved for `llm-gateway experiment report --table`), as `serve` judges them locally every 10 s
(`experiments.rollouts.RolloutController`): the rollouts in the rollout table, each one's requests
from the audit table, the feedback on them from the trace table, and the error-rate and latency
alarms (`ROLLOUT_ALARMS`). A rollout that fails a gate is rolled back, one whose gates hold moves
to its next stage; every move is a conditional write with its event, so a person's rollback made
meanwhile is never overwritten. The function reads the audit and trace tables and writes the
rollout table, nothing else.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from ..experiments.rollouts import WATCHED_ALERTS, RolloutController
from .observability import logger, metrics
from .runtime import LambdaSettings, settings

if TYPE_CHECKING:
    from ..adapters.aws.experiments import DynamoExperimentStore
    from ..adapters.aws.rollouts import DynamoEvidence
    from ..ports import Experiment


def alarm_names(current: LambdaSettings) -> dict[str, str]:
    """The watched alert rules' CloudWatch alarms (`ROLLOUT_ALARMS`); other rules are refused."""
    try:
        named = json.loads(current.rollout_alarms or "{}")
    except ValueError:
        raise ValueError("ROLLOUT_ALARMS is a JSON object: alert rule -> alarm name") from None
    if not isinstance(named, dict) or not all(isinstance(v, str) for v in named.values()):
        raise ValueError("ROLLOUT_ALARMS is a JSON object: alert rule -> alarm name")
    unknown = sorted(set(named) - set(WATCHED_ALERTS))
    if unknown:
        raise ValueError(f"ROLLOUT_ALARMS names rules the gates do not watch: {', '.join(unknown)}")
    return {str(rule): str(name) for rule, name in named.items()}


@dataclass(frozen=True)
class Judge:
    rollouts: RolloutController
    experiments: DynamoExperimentStore
    evidence: DynamoEvidence


@cache
def controller() -> Judge:
    import boto3

    from ..adapters.aws.dynamodb import DynamoAuditLog, default_client
    from ..adapters.aws.experiments import DynamoExperimentStore
    from ..adapters.aws.rollouts import DynamoEvidence, DynamoRolloutStore
    from ..adapters.aws.traces import DynamoTraceStore

    current = settings()
    if not (current.rollout_table and current.audit_table):
        raise RuntimeError("rollout_gates needs ROLLOUT_TABLE and AUDIT_TABLE")
    dynamodb = default_client()
    traces = DynamoTraceStore(current.trace_table, dynamodb) if current.trace_table else None
    evidence = DynamoEvidence(
        DynamoAuditLog(current.audit_table, dynamodb), traces, boto3.client("cloudwatch"), alarm_names(current)
    )
    return Judge(
        RolloutController(DynamoRolloutStore(current.rollout_table, dynamodb), evidence),
        DynamoExperimentStore(current.rollout_table, dynamodb),
        evidence,
    )


def judge_experiments(judge: Judge, now: float) -> list[Experiment]:
    """Each running experiment's report saved (what `experiment report --table` reads); those a
    variant of which hurts stopped by their guardrail."""
    from ..experiments import ab

    def analyse(experiment: Experiment) -> dict[str, Any]:
        report = judge.evidence.analyse(experiment)
        judge.experiments.save_report(experiment, report, now)
        return report

    return ab.check(judge.experiments, analyse)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    judge = controller()
    moved = judge.rollouts.check()
    for rollout in moved:
        metrics.add_metric(name="RolloutMoves", unit="Count", value=1)
        logger.info(
            "rollout moved",
            extra={"rollout_id": rollout.rollout_id, "status": rollout.status, "share": rollout.share},
        )
    stopped = judge_experiments(judge, time.time())
    for experiment in stopped:
        logger.info(
            "experiment stopped", extra={"experiment_id": experiment.experiment_id, "reason": experiment.reason}
        )
    return {
        "moved": [{"rollout_id": r.rollout_id, "status": r.status, "share": r.share} for r in moved],
        "stopped": [e.experiment_id for e in stopped],
    }
