"""The Express state machine, built from `llm_gateway.pipeline` (JSONPath).

guard -> cache -> router -> invoke -> moderate -> finish, each a Lambda task writing `$.<step>`;
a Choice after each step with an exit goes straight to finish. Every task retries Lambda service
faults (`TASK_RETRY`) and catches the domain errors (`CAUGHT_ERRORS`, then anything else) into
`$.error` for the failure step, which records the request and answers at `$.finish`. The last
states add the HTTP answer at `$.http`, `{"status": <int>, "body": "<JSON text>", "retry_after_s":
<float|null>}`: API Gateway's mapping templates cannot serialize JSON, only print text, so the
answer (`finish.response`, else `finish.error`) is turned into text here (States.JsonToString).
"""

from __future__ import annotations

from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from cdk import constants as c
from cdk.config import StageConfig
from cdk.constructs.common import acknowledge, log_group
from llm_gateway.pipeline import CAUGHT_ERRORS, FAILED, FINISH, STEPS, TASK_RETRY, Step


def retry_lambda_faults(task: tasks.LambdaInvoke) -> None:
    """Step Functions retries Lambda service faults only; domain errors are the steps' business."""
    task.add_retry(
        errors=list(TASK_RETRY.errors),
        interval=cdk.Duration.seconds(TASK_RETRY.interval_s),
        max_attempts=TASK_RETRY.max_attempts,
        backoff_rate=TASK_RETRY.backoff_rate,
    )


def catch_into(task: tasks.LambdaInvoke, handler: sfn.IChainable) -> None:
    """Send the domain errors, then anything else (a timeout, a bug), to `handler` with `$.error`."""
    task.add_catch(handler, errors=list(CAUGHT_ERRORS), result_path="$.error")
    task.add_catch(handler, errors=[sfn.Errors.ALL], result_path="$.error")


def exit_condition(step: Step) -> sfn.Condition:
    """`$.<step>.<field>` equals one of the exit's values."""
    if step.exit is None:
        raise ValueError(f"step {step.name} has no exit")
    path = f"$.{step.name}.{step.exit.field}"
    conditions = [sfn.Condition.string_equals(path, value) for value in step.exit.values]
    return conditions[0] if len(conditions) == 1 else sfn.Condition.or_(*conditions)


def state_machine(
    scope: Construct,
    stage: StageConfig,
    *,
    name: str,
    kind: sfn.StateMachineType,
    start: sfn.IChainable,
    timeout: cdk.Duration,
) -> sfn.StateMachine:
    """A JSONPath state machine, traced, logging every event but never the execution data (states
    carry prompts and answers)."""
    return sfn.StateMachine(
        scope,
        "StateMachine",
        state_machine_name=c.resource_name(stage.name, name),
        state_machine_type=kind,
        query_language=sfn.QueryLanguage.JSON_PATH,
        definition_body=sfn.DefinitionBody.from_chainable(start),
        timeout=timeout,
        tracing_enabled=True,
        logs=sfn.LogOptions(
            destination=log_group(scope, "Logs", stage), level=sfn.LogLevel.ALL, include_execution_data=False
        ),
    )


def _answer(body: str) -> dict[str, str]:
    return {
        "status.$": "$.finish.status",
        "body.$": f"States.JsonToString({body})",
        "retry_after_s.$": "$.finish.retry_after_s",
    }


class GatewayWorkflow(Construct):
    """The chain as an Express state machine; `functions` maps each step name to its function."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        functions: Mapping[str, lambda_.IFunction],
    ) -> None:
        super().__init__(scope, construct_id)
        respond = self._respond()

        failed = self._task(FAILED, functions[FAILED.name], result_path="$.finish")
        retry_lambda_faults(failed)  # no catch: if recording the failure fails, the execution fails
        failed.next(respond)

        finish = self._task(FINISH, functions[FINISH.name])
        retry_lambda_faults(finish)
        catch_into(finish, failed)
        finish.next(respond)

        following: sfn.IChainable = finish
        for step in reversed(STEPS):
            task = self._task(step, functions[step.name])
            retry_lambda_faults(task)
            catch_into(task, failed)
            if step.exit is None:
                task.next(following)
            else:
                leave = sfn.Choice(self, f"{step.name}_{step.exit.name}", state_name=f"{step.name}_{step.exit.name}")
                task.next(leave.when(exit_condition(step), finish).otherwise(following))
            following = task

        self.state_machine = state_machine(
            self,
            stage,
            name="chain",
            kind=sfn.StateMachineType.EXPRESS,
            start=following,
            timeout=cdk.Duration.seconds(c.STATE_MACHINE_TIMEOUT_S),
        )
        stack = cdk.Stack.of(self)
        acknowledge(
            self.state_machine,
            "IAM5",
            "CDK grants the state machine lambda:InvokeFunction on each chain function and on its versions "
            "(<function ARN>:*); the functions are exactly the chain's, nothing else.",
            findings=[
                f"Resource::<{stack.get_logical_id(function.node.default_child)}.Arn>:*"  # type: ignore[arg-type]
                for function in functions.values()
            ],
        )
        acknowledge(
            self.state_machine,
            "IAM5",
            "Tracing and log delivery: the X-Ray actions and CloudWatch Logs' log-delivery actions (which "
            "Step Functions uses to write to its log group) take no resource ARN.",
            findings=["Resource::*"],
        )

    def _task(self, step: Step, function: lambda_.IFunction, result_path: str | None = None) -> tasks.LambdaInvoke:
        return tasks.LambdaInvoke(
            self,
            step.name,
            state_name=step.name,
            lambda_function=function,
            payload_response_only=True,
            retry_on_service_exceptions=False,  # retried by retry_lambda_faults, from TASK_RETRY
            result_path=result_path or f"$.{step.name}",
        )

    def _respond(self) -> sfn.Choice:
        """`$.finish` to `$.http`: the status, and the answer or the error as JSON text."""
        done = sfn.Succeed(self, c.DONE, state_name=c.DONE)
        answered = self._pass(c.RESPOND_OK, "$.finish.response")
        refused = self._pass(c.RESPOND_ERROR, "$.finish.error")
        has_answer = sfn.Condition.and_(
            sfn.Condition.is_present("$.finish.response"), sfn.Condition.is_not_null("$.finish.response")
        )
        choice = sfn.Choice(self, c.RESPOND_CHOICE, state_name=c.RESPOND_CHOICE)
        return choice.when(has_answer, answered.next(done)).otherwise(refused.next(done))

    def _pass(self, name: str, body: str) -> sfn.Pass:
        return sfn.Pass(self, name, state_name=name, parameters=_answer(body), result_path=f"$.{c.HTTP_RESULT}")
