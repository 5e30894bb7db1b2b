"""The rollouts' gates on AWS: the `rollout_gates` function, run every minute by an EventBridge
schedule, judges the running rollouts over the deployment's stores and moves them
(`llm_gateway.aws.rollout_gates`); the error-rate and latency alarms it reads roll them back."""

from __future__ import annotations

from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from cdk import constants as c
from cdk.config import StageConfig
from cdk.constructs.functions import function_code, gateway_function
from cdk.constructs.layers import GatewayLayers
from cdk.constructs.storage import GatewayStores
from llm_gateway.experiments.rollouts import WATCHED_ALERTS


class RolloutGates(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        layers: GatewayLayers,
        stores: GatewayStores,
        environment: Mapping[str, str],
        alarms: Mapping[str, cw.AlarmBase],
    ) -> None:
        super().__init__(scope, construct_id)
        watched = {rule: alarms[rule] for rule in WATCHED_ALERTS}
        self.function = gateway_function(
            self,
            "Function",
            stage=stage,
            name=c.ROLLOUT_GATES_FOLDER,
            code=function_code(c.ROLLOUT_GATES_FOLDER),
            layers=layers,
            environment={
                **environment,
                c.ENV_ROLLOUT_ALARMS: cdk.Stack.of(self).to_json_string(
                    {rule: alarm.alarm_name for rule, alarm in watched.items()}
                ),
            },
            reserved_concurrency=1,  # one judge at a time
        )
        stores.grant(self.function, c.FUNCTION_ACCESS[c.ROLLOUT_GATES_FOLDER])
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:DescribeAlarms"], resources=[alarm.alarm_arn for alarm in watched.values()]
            )
        )
        self.schedule = events.Rule(
            self,
            "Schedule",
            description=f"{c.PROJECT} {stage.name}: the running rollouts' gates",
            schedule=events.Schedule.rate(cdk.Duration.minutes(c.ROLLOUT_GATES_MINUTES)),
            targets=[targets.LambdaFunction(self.function, retry_attempts=0)],
        )
