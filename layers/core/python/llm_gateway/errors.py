"""Typed exceptions of the gateway and their one mapping to HTTP.

Step Functions Catch clauses match these class names (`pipeline.py`); the local server maps
them with `to_http`. Messages are written for the client and never contain secrets or prompts.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import ValidationError

from .contracts import ErrorBody, ErrorDetail, StepError
from .response_headers import RETRY_AFTER


class GatewayError(Exception):
    """Base class: an error the client is told about."""

    status: int = 500
    type: str = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
        spent: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after_s = retry_after_s
        # What the request had paid for when it failed (an `InvokeResult` as JSON: the answered
        # choices of a request for several, when a call for another failed): recorded and charged.
        self.spent = spent

    def __str__(self) -> str:
        # Lambda reports str(exc) as errorMessage; JSON lets the failure step rebuild the error exactly.
        fields = {
            "message": self.message,
            "param": self.param,
            "code": self.code,
            "retry_after_s": self.retry_after_s,
            "spent": self.spent,
        }
        return json.dumps({k: v for k, v in fields.items() if v is not None})

    def body(self) -> ErrorBody:
        return ErrorBody(error=ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code))


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class HeadersTooLarge(GatewayError):
    status = 431
    type = "invalid_request_error"
    code = "request_headers_too_large"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(GatewayError):
    """A resource (a batch job) the caller has none of."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BudgetExceeded(GatewayError):
    """The request's worst-case cost does not fit in one of its budgets (nothing was spent)."""

    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"


class GuardrailBlocked(GatewayError):
    """A guard refused the request; `code` names the layer (blocklist, pii, prompt_injection...)."""

    status = 400
    type = "guardrail"


# Provider errors: raised by providers, handled by the invoke step's retry/fallback policy.


class ProviderError(GatewayError):
    status = 502
    type = "upstream_error"


class ProviderThrottled(ProviderError):
    """429 from the provider: retried with backoff, then the next model."""

    status = 429
    type = "rate_limit_error"
    code = "upstream_rate_limited"


class ProviderUnavailable(ProviderError):
    """5xx, connection failure or timeout: retried, then the next model."""

    code = "upstream_unavailable"


class ProviderTimeout(ProviderUnavailable):
    status = 504
    code = "upstream_timeout"


class ProviderBadRequest(ProviderError):
    """4xx other than 429: the request itself is wrong; never retried."""

    status = 400
    type = "invalid_request_error"
    code = "upstream_bad_request"


class AllModelsFailed(ProviderError):
    """Every candidate model failed with retryable errors."""

    status = 503
    code = "all_models_failed"


class OutputFormatInvalid(GatewayError):
    """The model's answer did not satisfy the request's `response_format`, even after one repair."""

    status = 502
    type = "upstream_error"
    code = "response_format_mismatch"


class InternalError(GatewayError):
    """An unexpected failure inside the gateway; recorded, then answered with a generic 500."""

    code = "internal_error"


class ClientClosedRequest(GatewayError):
    """The client went away before the answer was complete (recorded; nobody is left to answer)."""

    status = 499
    code = "client_closed_request"


class ConfigError(Exception):
    """The gateway configuration is invalid (raised at start-up, never per request)."""


def to_http(error: GatewayError) -> tuple[int, dict[str, str], bytes]:
    """Status, extra headers and JSON body for a gateway error."""
    headers: dict[str, str] = {}
    if error.retry_after_s is not None:
        headers[RETRY_AFTER.name] = str(max(1, int(error.retry_after_s + 0.999)))
    return error.status, headers, error.body().model_dump_json().encode()


def from_validation_error(exc: ValidationError) -> InvalidRequest:
    """A 400 naming the first offending field, worded like the OpenAI API."""
    first = exc.errors(include_url=False)[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        return InvalidRequest(f"Unrecognized request argument supplied: {param}", param=param)
    if first["type"] == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if param is None:  # a rule about the whole body (e.g. fields that exclude each other)
        return InvalidRequest(f"Invalid request: {first['msg']}.", code="invalid_value")
    return InvalidRequest(f"Invalid value for '{param}': {first['msg']}.", param=param, code="invalid_value")


def from_step_error(step_error: StepError) -> GatewayError:
    """Rebuild the gateway error a task raised from Step Functions' `{"Error", "Cause"}`.

    Unknown error types (a Lambda timeout, a bug) become `InternalError`: the client learns nothing
    about the inside of the gateway.
    """
    cls = getattr(sys.modules[__name__], step_error.Error, None)
    if not (isinstance(cls, type) and issubclass(cls, GatewayError)):
        return InternalError("The gateway failed to process the request.")
    try:
        cause = json.loads(step_error.Cause or "{}")
        fields = json.loads(cause.get("errorMessage", "{}"))
    except (json.JSONDecodeError, AttributeError):
        fields = {}
    if not isinstance(fields, dict) or not isinstance(fields.get("message"), str):
        return cls("The request failed.")
    return cls(
        fields["message"],
        param=fields.get("param"),
        code=fields.get("code"),
        retry_after_s=fields.get("retry_after_s"),
        spent=fields.get("spent") if isinstance(fields.get("spent"), dict) else None,
    )
