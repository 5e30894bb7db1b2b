"""One way to turn a step function into a Lambda handler, so every function folder stays two lines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from ..contracts import GatewayState
from ..deps import Deps
from ..pipeline import REST_INVOKE_POLICY
from .observability import logger, metrics
from .runtime import deps

Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def chain_deps() -> Deps:
    """The chain's functions serve the REST API's synchronous executions, which API Gateway
    answers with 504 after 29 s: their invoke step runs under `REST_INVOKE_POLICY`'s deadline."""
    return deps(REST_INVOKE_POLICY)


def step_handler(step: Callable[[GatewayState, Deps], BaseModel], name: str) -> Handler:
    """Parse the Step Functions state into `GatewayState`, run the step, return its result as JSON.

    No try/except: a domain error propagates with its class name as the Lambda `errorType`,
    which the state machine's Catch clauses match.
    """

    @logger.inject_lambda_context(correlation_id_path="request_id")
    @metrics.log_metrics
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        # pydantic directly: Powertools' parser imports its models of every AWS event (~60 ms of
        # each cold start); a bad state raises the same pydantic ValidationError
        state = GatewayState.model_validate(event)
        metrics.add_dimension(name="step", value=name)
        metrics.add_metric(name="StepInvocations", unit=MetricUnit.Count, value=1)
        return step(state, chain_deps()).model_dump(mode="json")

    return lambda_handler
