"""The gateway's response headers, defined once: name, meaning, values, on which answers, and which
runtime sends them.

The HTTP app (`http/app.py`: `llm-gateway serve` and the streaming URL) sets them by these names,
the OpenAPI document (`http/openapi.py`) documents them from here, the REST API's response
mapping template (`cdk/api_mapping.py`) sets those marked `REST`, and README.md's table and
docs/deploy.md's list are this module's `readme_table()` and `rest_header_list()` (a test holds
them equal): `python -m llm_gateway.response_headers` prints both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Runtime = Literal["app", "rest"]
APP: Runtime = "app"  # the ASGI app: `llm-gateway serve` and the streaming URL on AWS
REST: Runtime = "rest"  # the REST API: API Gateway, the Step Functions chain, its mapping template

# The chat completion answers (statuses of `POST /v1/chat/completions` in the OpenAPI document).
ANSWER = ("200",)
CHAT_ERRORS = ("400", "401", "404", "413", "429", "502", "503")
RETRY_STATUSES = ("429", "503")
METHOD_NOT_ALLOWED = "405"  # any path (the MethodNotAllowed response of the OpenAPI document)

_DECIMAL_4 = {"type": "string", "pattern": r"^[01]\.[0-9]{4}$"}
_COUNT = {"type": "string", "pattern": r"^[0-9]+$"}


@dataclass(frozen=True)
class ResponseHeader:
    """One response header of the gateway."""

    name: str  # as the REST mapping template spells it; HTTP header names are case-insensitive
    meaning: str
    values: str
    sent_on: str  # which answers carry it
    runtimes: tuple[Runtime, ...]
    statuses: tuple[str, ...]  # the OpenAPI responses that document it
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    always: bool = False  # on every answer of those statuses (required in the OpenAPI document)
    rest_note: str = ""  # how the REST API's value differs from the app's


REQUEST_ID = ResponseHeader(
    "x-request-id",
    "the gateway's id for the chat completion, answered or refused: the key of its audit record",
    "32 hex digits",
    "every answer of `POST /v1/chat/completions`, errors included (not a 431, refused before any route)",
    (APP, REST),
    ANSWER + CHAT_ERRORS,
    always=True,
    rest_note="API Gateway's request id; not on API Gateway's own 400, 401 and 429",
)
RETRY_AFTER = ResponseHeader(
    "Retry-After",
    "how long to wait before trying again",
    "whole seconds, at least 1",
    "429 rate limits; 503 when the last model was throttled or the local model endpoint is restarting",
    (APP, REST),
    RETRY_STATUSES,
    {"type": "string", "pattern": r"^[1-9][0-9]*$"},
    rest_note="not on API Gateway's own throttling 429",
)
CACHE = ResponseHeader(
    "x-gateway-cache",
    "where the answer came from",
    "`exact`, `semantic` or `miss` (a skipped lookup is a `miss`)",
    "200 answers",
    (APP, REST),
    ANSWER,
    {"enum": ["exact", "semantic", "miss"]},
    always=True,
)
CACHE_BYPASS = ResponseHeader(
    "x-gateway-cache-bypass",
    "the cache lookup was skipped: the request's `Cache-Control` (`no-cache`, `no-store`) or caching is off",
    "`true`",
    "200 answers whose lookup was skipped",
    (APP, REST),
    ANSWER,
    {"enum": ["true"]},
)
CACHE_SCORE = ResponseHeader(
    "x-gateway-cache-score",
    "the verifier's calibrated probability that the cached question means the same as this one",
    "0 to 1, 4 decimals",
    "semantic cache hits",
    (APP, REST),
    ANSWER,
    _DECIMAL_4,
    rest_note="the number as the execution output holds it",
)
MODEL = ResponseHeader(
    "x-gateway-model",
    "the pinned model version that answered (after any fallback; on a cache hit, the one that answered first)",
    "a model name of the configuration",
    "200 answers",
    (APP, REST),
    ANSWER,
    always=True,
)
ROUTE = ResponseHeader(
    "x-gateway-route",
    "the route the request's `model` resolved through (a pinned model is its own route)",
    "a route or model name of the tenant",
    "200 answers, cache hits included",
    (APP, REST),
    ANSWER,
    always=True,
)
COMPLEXITY = ResponseHeader(
    "x-gateway-complexity",
    "the complexity router's score: the probability that the request needs the route's large model",
    "0 to 1, 4 decimals",
    "answers from a model on a route with `complexity` routing, unless a metadata pin chose the model",
    (APP, REST),
    ANSWER,
    _DECIMAL_4,
    rest_note="the number as the execution output holds it",
)
VARIANT = ResponseHeader(
    "x-gateway-variant",
    "the arm of the route's rollout, or the variant of its A/B experiment, this caller is on (sticky "
    "per user): on a rollout's candidate arm the candidate is tried first, the baseline after it",
    "`<rollout id>:candidate`, `<rollout id>:baseline` or `<experiment id>:<variant>`",
    "200 answers on a route with a rollout or an experiment (docs/experiments.md), cache hits left out",
    (APP, REST),
    ANSWER,
    {"type": "string", "pattern": r"^(ro_[0-9a-f]{12}:(candidate|baseline)|ex_[0-9a-f]{12}:[A-Za-z0-9_-]{1,40})$"},
)
ATTEMPTS = ResponseHeader(
    "x-gateway-attempts",
    "provider calls made for the answer, retries and fallbacks included",
    "a whole number: at least 1, `0` on cache hits",
    "200 answers, except streamed ones from a model (the headers leave before the model is done)",
    (APP, REST),
    ANSWER,
    _COUNT,
)
COST = ResponseHeader(
    "x-gateway-cost-usd",
    "what this request cost: the answer's usage priced by the configuration's price table "
    "(the body's `usage.cost_usd`, what budgets are charged)",
    "US dollars, 8 decimals; `0.00000000` on cache hits: nothing was paid or charged (the answer's first "
    "request paid for it)",
    "200 answers, except streamed ones from a model (their usage comes in the last chunk)",
    (APP, REST),
    ANSWER,
    {"type": "string", "pattern": r"^[0-9]+\.[0-9]{8}$"},
    rest_note="the number as the execution output holds it, not always with 8 decimals",
)
COMPRESSION_SAVED_TOKENS = ResponseHeader(
    "x-gateway-compression-saved-tokens",
    "the input tokens prompt compression removed (its estimate)",
    "a whole number, at least 1",
    "200 answers to requests whose prompt compression removed tokens",
    (APP, REST),
    ANSWER,
    {"type": "string", "pattern": r"^[1-9][0-9]*$"},
)
MODERATION = ResponseHeader(
    "x-gateway-moderation",
    "what output moderation did with the model's answer",
    "`passed`, `filtered` (withheld: `finish_reason: content_filter`) or `redacted` (parts replaced)",
    "answers from a model, except streamed ones; not cache hits (only passed answers are stored)",
    (APP, REST),
    ANSWER,
    {"enum": ["passed", "filtered", "redacted"]},
)
GROUNDEDNESS = ResponseHeader(
    "x-gateway-groundedness",
    "the share of the answer's claims that the request's `context` supports",
    "0 to 1, 2 decimals",
    "answers from a model to requests with `context`, where the groundedness check ran (not streamed)",
    (APP, REST),
    ANSWER,
    {"type": "string", "pattern": r"^[01]\.[0-9]{2}$"},
    rest_note="the number as the execution output holds it",
)
STREAM_CACHE_CONTROL = ResponseHeader(
    "Cache-Control",
    "a stream is not to be stored by caches on the way",
    "`no-cache`",
    "streamed answers (`stream: true`)",
    (APP,),
    ANSWER,
    {"enum": ["no-cache"]},
)
ALLOW = ResponseHeader(
    "Allow",
    "the methods the path takes",
    "methods, comma-separated (e.g. `POST`)",
    "405 answers, on any path",
    (APP,),
    (METHOD_NOT_ALLOWED,),
)

HEADERS: tuple[ResponseHeader, ...] = (
    REQUEST_ID,
    RETRY_AFTER,
    CACHE,
    CACHE_BYPASS,
    CACHE_SCORE,
    MODEL,
    ROUTE,
    COMPLEXITY,
    VARIANT,
    ATTEMPTS,
    COST,
    COMPRESSION_SAVED_TOKENS,
    MODERATION,
    GROUNDEDNESS,
    STREAM_CACHE_CONTROL,
    ALLOW,
)
REST_HEADERS: tuple[str, ...] = tuple(h.name for h in HEADERS if REST in h.runtimes)


def openapi_headers(status: str) -> dict[str, Any]:
    """The OpenAPI `headers` of a response with this status."""
    return {
        h.name: {"schema": h.schema, "description": f"{h.meaning}: {h.values}. On {h.sent_on}.", "required": h.always}
        for h in HEADERS
        if status in h.statuses
    }


def _rest_cell(header: ResponseHeader) -> str:
    if REST not in header.runtimes:
        return "no"
    return f"yes ({header.rest_note})" if header.rest_note else "yes"


def readme_table() -> str:
    """README.md's table of response headers."""
    rows = [
        "| response header | meaning | value | sent on | REST API |",
        "|---|---|---|---|---|",
        *(f"| `{h.name}` | {h.meaning} | {h.values} | {h.sent_on} | {_rest_cell(h)} |" for h in HEADERS),
    ]
    return "\n".join(rows) + "\n"


def rest_header_list() -> str:
    """docs/deploy.md's list of the headers the REST API sends."""
    return ", ".join(f"`{name}`" for name in REST_HEADERS)


if __name__ == "__main__":
    print(readme_table())
    print(rest_header_list())
