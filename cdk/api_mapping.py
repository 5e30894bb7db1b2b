"""API Gateway mapping templates (VTL) between HTTP and the state machine, and OpenAI-style errors.

Request: StartSyncExecution's body, whose `input` is the `GatewayState` the chain starts from. The raw
API key never reaches it: the TOKEN authorizer hashes it and passes the digest in its context.
Response: the execution output's `http` (`{"status", "body", "retry_after_s"}`, see the workflow
construct) becomes the HTTP answer; an execution that did not succeed becomes a generic 500.
"""

from __future__ import annotations

from cdk import constants as c
from llm_gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InternalError,
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
)
from llm_gateway.response_headers import REST_HEADERS

STATE_MACHINE_ARN = "@@STATE_MACHINE_ARN@@"  # replaced by the state machine's ARN (a CDK token)

# Velocity cannot JSON-encode, so the execution input is written as text: the body is escaped once
# (it is JSON already), the Cache-Control header twice (a string inside a string). escapeJavaScript
# writes \' for a quote, which JSON forbids; replaceAll undoes it. `received_at` is epoch seconds
# with milliseconds, cut from $context.requestTimeEpoch (ms) as text: VTL has no float division.
_UNQUOTE = """.replaceAll("\\\\'", "'")"""  # undoes escapeJavaScript's \' (not a JSON escape)


def _key(name: str) -> str:
    """A JSON key as written inside a JSON string (the execution input is one): \\"name\\":"""
    return f'\\"{name}\\": '


def _text(expression: str) -> str:
    """A JSON string value as written inside a JSON string."""
    return f'\\"{expression}\\"'


_CACHE_CONTROL = (
    '#if("$!cacheControl" == "")null#{else}'
    + _text("$util.escapeJavaScript($util.escapeJavaScript($cacheControl))" + _UNQUOTE)
    + "#end"
)
_CALLER = ", ".join(
    [
        _key("api_key_sha256") + _text(f"$context.authorizer.{c.AUTHORIZER_CONTEXT_KEY}"),
        _key("client_ip") + _text("$context.identity.sourceIp"),
        _key("cache_control") + _CACHE_CONTROL,
        _key("body_bytes") + "$input.body.length()",
    ]
)
_EXECUTION_INPUT = ", ".join(
    [
        _key("request_id") + _text("$context.requestId"),
        _key("received_at") + "${seconds}.${millis}",
        _key("request") + "$util.escapeJavaScript($input.json('$'))" + _UNQUOTE,
        _key("caller") + "{" + _CALLER + "}",
    ]
)
REQUEST_TEMPLATE = f"""#set($ms = "$context.requestTimeEpoch")
#set($cut = $ms.length() - 3)
#set($seconds = $ms.substring(0, $cut))
#set($millis = $ms.substring($cut))
#set($cacheControl = $input.params().header.get('Cache-Control'))
#if("$!cacheControl" == "")#set($cacheControl = $input.params().header.get('cache-control'))#end
{{
  "stateMachineArn": "{STATE_MACHINE_ARN}",
  "name": "$context.requestId",
  "input": "{{{_EXECUTION_INPUT}}}"
}}
"""


def _subclasses(cls: type[GatewayError]) -> list[type[GatewayError]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _subclasses(direct))]


# Every status the chain can answer with (the response template overrides the integration's 200).
ANSWER_STATUSES = sorted({200, 500} | {error.status for error in _subclasses(GatewayError)})
# Headers the response template sets: those `llm_gateway.response_headers` marks REST.
ANSWER_HEADERS = REST_HEADERS


def _body(error: GatewayError) -> str:
    return error.body().model_dump_json()


# What the client sees when the chain itself failed: nothing about the inside of the gateway.
INTERNAL_ERROR_BODY = _body(InternalError("The gateway failed to process the request."))

# The execution output is the final state: `http` holds the answer (see the workflow construct); the
# decision headers of a 200 answer are those the local server sends (`http/app.py`), read from the
# step results (`llm_gateway.response_headers` says where a value is written otherwise).
RESPONSE_TEMPLATE = (
    (
        """#set($context.responseOverride.header.x-request-id = "$context.requestId")
#if($input.path('$.status') == "SUCCEEDED")
#set($state = $util.parseJson($input.path('$.output')))
#set($answer = $state.@@HTTP@@)
#set($context.responseOverride.status = $answer.status)
#if($answer.retry_after_s)
#set($wait = $answer.retry_after_s.intValue())
#if($answer.retry_after_s > $wait)#set($wait = $wait + 1)#end
#if($wait < 1)#set($wait = 1)#end
#set($context.responseOverride.header.Retry-After = "$wait")
#end
#if($answer.status == 200)
#if($state.cache && $state.cache.status != "bypass")
#set($context.responseOverride.header.x-gateway-cache = $state.cache.status)
#else
#set($context.responseOverride.header.x-gateway-cache = "miss")
#end
#if($state.cache && $state.cache.status == "bypass")
#set($context.responseOverride.header.x-gateway-cache-bypass = "true")
#end
#if($state.cache && $state.cache.status == "semantic")
#set($context.responseOverride.header.x-gateway-cache-score = "$state.cache.score")
#end
#if($state.finish.response)
#set($context.responseOverride.header.x-gateway-model = $state.finish.response.model)
#end
#if($state.router)
#set($context.responseOverride.header.x-gateway-route = $state.router.route)
#if($state.router.complexity)
#set($context.responseOverride.header.x-gateway-complexity = "$state.router.complexity")
#end
#if($state.router.variant)
#set($context.responseOverride.header.x-gateway-variant = $state.router.variant)
#end
#elseif($state.cache.route)
#set($context.responseOverride.header.x-gateway-route = $state.cache.route)
#end
#if($state.invoke)
#set($context.responseOverride.header.x-gateway-attempts = "$state.invoke.attempts.size()")
#else
#set($context.responseOverride.header.x-gateway-attempts = "0")
#end
#set($context.responseOverride.header.x-gateway-cost-usd = "$state.finish.cost_usd")
#if($state.guard && $state.guard.saved_tokens > 0)
#set($context.responseOverride.header.x-gateway-compression-saved-tokens = "$state.guard.saved_tokens")
#end
#if($state.moderate)
#set($context.responseOverride.header.x-gateway-moderation = $state.moderate.outcome)
#foreach($decision in $state.moderate.decisions)
#if($decision.layer == "groundedness" && $decision.score)
#set($context.responseOverride.header.x-gateway-groundedness = "$decision.score")
#end
#end
#end
#end
$answer.body
#else
#set($context.responseOverride.status = 500)
@@INTERNAL@@
#end
"""
    )
    .replace("@@INTERNAL@@", INTERNAL_ERROR_BODY)
    .replace("@@HTTP@@", c.HTTP_RESULT)
)

# Step Functions itself refused the call. An execution input over its 256 KiB limit
# (InvalidExecutionInput) is the client's too-large body: 413, as the local server answers.
# Anything else (throttled, misconfigured) is a generic 500.
SERVICE_ERROR_TEMPLATE = """#set($context.responseOverride.header.x-request-id = "$context.requestId")
#set($type = "$!input.path('$.__type')")
#if($type.contains("InvalidExecutionInput"))
#set($context.responseOverride.status = 413)
@@TOO_LARGE@@
#else
#set($context.responseOverride.status = 500)
@@INTERNAL@@
#end
""".replace("@@INTERNAL@@", INTERNAL_ERROR_BODY).replace(
    "@@TOO_LARGE@@", _body(PayloadTooLarge("Request body exceeds what this deployment accepts (256 KiB)."))
)

_MESSAGE = "@@MESSAGE@@"


def _with_gateway_message(error: GatewayError) -> str:
    """An error body whose message is API Gateway's own (`messageString` is already a quoted string)."""
    return _body(error).replace(f'"{_MESSAGE}"', "$context.error.messageString")


# Errors API Gateway answers before the state machine runs, in the OpenAI shape.
GATEWAY_RESPONSES: dict[str, tuple[str, str]] = {
    # response type: (status, application/json template)
    "UNAUTHORIZED": ("401", _body(AuthenticationFailed("Incorrect API key provided."))),
    "ACCESS_DENIED": ("401", _body(AuthenticationFailed("Incorrect API key provided."))),
    "BAD_REQUEST_BODY": ("400", _with_gateway_message(InvalidRequest(_MESSAGE, code="invalid_request_body"))),
    "THROTTLED": ("429", _body(RateLimited("Rate limit reached for this gateway.", code="gateway_throttled"))),
    "DEFAULT_4_XX": ("", _with_gateway_message(InvalidRequest(_MESSAGE))),
    "DEFAULT_5_XX": ("", INTERNAL_ERROR_BODY),
}
