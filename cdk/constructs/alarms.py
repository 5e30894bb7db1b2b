"""The five alerts the gateway promises (`llm_gateway.alerts.ALERTS`, the local evaluator's rules)
as CloudWatch alarms into one SNS topic.

They read the service-level copies of the request metrics the functions write (`LlmGateway`
namespace, dimension `service`; `aws.observability.SERVICE_LEVEL`): latency p95 and the error
rate against fixed thresholds (metric math for the rate); daily cost, satisfaction and guardrail
triggers against their own baseline, CloudWatch anomaly detection (the band CloudWatch learns from
the metric's history stands for the local evaluator's trailing week).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

from cdk import constants as c
from cdk.config import StageConfig
from cdk.constructs.common import removal_policy
from llm_gateway.alerts import ALERTS

_RULES = {rule.name: rule for rule in ALERTS}
_FIVE_MINUTES = cdk.Duration.minutes(5)


def _metric(name: str, statistic: str, period: cdk.Duration) -> cw.Metric:
    return cw.Metric(
        namespace=c.POWERTOOLS_METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": c.POWERTOOLS_SERVICE_NAME},
        statistic=statistic,
        period=period,
    )


class GatewayAlarms(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig) -> None:
        super().__init__(scope, construct_id)
        # CloudWatch publishes to an encrypted topic only with a key whose policy lets it.
        key = kms.Key(
            self,
            "AlertsKey",
            description=f"{c.PROJECT} {stage.name}: the alerts topic's key",
            enable_key_rotation=True,
            removal_policy=removal_policy(stage),
        )
        key.grant_encrypt_decrypt(iam.ServicePrincipal("cloudwatch.amazonaws.com"))
        self.topic = sns.Topic(
            self, "Alerts", display_name=f"{c.PROJECT} {stage.name} alerts", master_key=key, enforce_ssl=True
        )
        action = cw_actions.SnsAction(self.topic)
        latency, errors = _RULES["latency_p95"], _RULES["error_rate"]
        self.alarms: dict[str, cw.AlarmBase] = {
            "latency_p95": cw.Alarm(
                self,
                "LatencyP95",
                alarm_description=f"{latency.fires_when} ({latency.threshold:g} s)",
                metric=_metric(c.METRIC_REQUEST_DURATION, "p95", _FIVE_MINUTES),
                threshold=latency.threshold,
                evaluation_periods=3,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            "error_rate": cw.Alarm(
                self,
                "ErrorRate",
                alarm_description=f"{errors.fires_when} ({errors.threshold:g})",
                metric=cw.MathExpression(
                    expression="IF(requests > 0, errors / requests, 0)",
                    using_metrics={
                        "errors": _metric(c.METRIC_ERRORS, "Sum", _FIVE_MINUTES),
                        "requests": _metric(c.METRIC_REQUESTS, "Sum", _FIVE_MINUTES),
                    },
                    period=_FIVE_MINUTES,
                ),
                threshold=errors.threshold,
                evaluation_periods=3,
                comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
            ),
            "daily_cost": self._anomaly(
                "DailyCost", "daily_cost", _metric(c.METRIC_COST, "Sum", cdk.Duration.days(1)), above=True
            ),
            "satisfaction_drop": self._anomaly(
                "SatisfactionDrop",
                "satisfaction_drop",
                _metric(c.METRIC_FEEDBACK_SCORE, "Average", cdk.Duration.days(1)),
                above=False,
            ),
            "guard_trigger_rate": self._anomaly(
                "GuardTriggerRate",
                "guard_trigger_rate",
                _metric(c.METRIC_GUARD_TRIGGERS, "Sum", cdk.Duration.hours(1)),
                above=True,
            ),
        }
        for alarm in self.alarms.values():
            alarm.add_alarm_action(action)

    def _anomaly(self, construct_id: str, rule: str, metric: cw.Metric, *, above: bool) -> cw.AnomalyDetectionAlarm:
        operator = (
            cw.ComparisonOperator.GREATER_THAN_UPPER_THRESHOLD
            if above
            else cw.ComparisonOperator.LESS_THAN_LOWER_THRESHOLD
        )
        return cw.AnomalyDetectionAlarm(
            self,
            construct_id,
            alarm_description=f"{_RULES[rule].fires_when}: outside the band CloudWatch learns from its history",
            metric=metric,
            std_devs=2,
            evaluation_periods=1,
            comparison_operator=operator,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
        )
