"""The gateway chain, defined once.

guard -> cache -> router -> invoke -> moderate, then finish on every path. Exits: `blocked`
(after guard) and `hit` (after cache) go straight to finish. The in-process runner executes this list
in-process; the CDK app builds the Step Functions state machine from the same list, so both walk
the same steps. Step functions are named by import path, which keeps this module free of heavy
imports (the CDK app reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Exit:
    """Leave the chain for finish when `<step result>.<field>` takes one of `values`."""

    name: str
    field: str
    values: tuple[str, ...]

    def taken(self, result: object) -> bool:
        return getattr(result, self.field, None) in self.values


@dataclass(frozen=True)
class Step:
    name: str  # also the key of its result in GatewayState (Step Functions `result_path`)
    function: str  # "module:function", signature (GatewayState, Deps) -> result model
    handler: str  # folder under functions/
    exit: Exit | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of one model before falling back to the next candidate."""

    max_attempts: int = 3
    base_delay_s: float = 0.2
    max_delay_s: float = 2.0
    retry_on: tuple[str, ...] = ("ProviderThrottled", "ProviderUnavailable", "ProviderTimeout")
    never_retry: tuple[str, ...] = ("ProviderBadRequest",)
    # Total time the invoke step may spend across attempts, backoffs, fallbacks and a format repair;
    # each attempt's provider timeout is cut to what is left of it. The REST chain's is shorter
    # (`REST_INVOKE_POLICY`); streaming, batch work and the local server keep this one.
    deadline_s: float = 120.0


@dataclass(frozen=True)
class TaskRetry:
    """Step Functions retry for Lambda service faults (not domain errors, which the steps handle)."""

    errors: tuple[str, ...] = (
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
    )
    interval_s: int = 1
    max_attempts: int = 2
    backoff_rate: float = 2.0


STEPS: tuple[Step, ...] = (
    Step("guard", "llm_gateway.guard.step:guard_step", "guard", Exit("blocked", "outcome", ("blocked",))),
    Step(
        "cache",
        "llm_gateway.cache.step:cache_lookup_step",
        "cache_lookup",
        Exit("hit", "status", ("exact", "semantic")),
    ),
    Step("router", "llm_gateway.routing.step:route_step", "router"),
    Step("invoke", "llm_gateway.invoke.step:invoke_step", "invoke"),
    Step("moderate", "llm_gateway.moderation.step:moderate_step", "moderate"),
)
FINISH = Step("finish", "llm_gateway.finish:finish_step", "finish")
FAILED = Step("failed", "llm_gateway.finish:failure_step", "record_failure")

# API Gateway's REST integration (StartSyncExecution) answers 504 after 29 s, whatever the execution
# still does. The chain's other steps (guard, cache, router, moderate, finish), the Step Functions
# transitions and their cold starts get `REST_OTHER_STEPS_S` of it; the invoke step gets the rest.
REST_INTEGRATION_TIMEOUT_S = 29.0
REST_OTHER_STEPS_S = 6.0

INVOKE_POLICY = RetryPolicy()  # streaming function, batch work, local server
REST_INVOKE_POLICY = replace(INVOKE_POLICY, deadline_s=REST_INTEGRATION_TIMEOUT_S - REST_OTHER_STEPS_S)  # 23 s
TASK_RETRY = TaskRetry()

# Domain errors a task may raise; the state machine catches them, records the failure and fails with
# the class name, which the API front maps to HTTP (errors.to_http does the same locally).
CAUGHT_ERRORS: tuple[str, ...] = (
    "AuthenticationFailed",
    "InvalidRequest",
    "PayloadTooLarge",
    "ModelNotFound",
    "RateLimited",
    "BudgetExceeded",
    "ProviderBadRequest",
    "AllModelsFailed",
    "OutputFormatInvalid",
)
