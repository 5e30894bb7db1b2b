"""The OpenAI-compatible HTTP API (ASGI), served locally and by the streaming Lambda.

Chat completions carry the response headers `response_headers` defines (`x-request-id` on every
answer, the decision headers on 200 answers); errors have the OpenAI shape. The chain runs in a
worker thread (steps are synchronous, as in Lambda).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..cache.purge import PurgeRequest, purge_caches
from ..config import hash_key
from ..contracts import (
    CallerContext,
    ChatCompletion,
    ChatCompletionRequest,
    EmbeddingRequest,
    ErrorBody,
    GatewayState,
)
from ..deps import Deps
from ..errors import (
    AuthenticationFailed,
    ClientClosedRequest,
    GatewayError,
    HeadersTooLarge,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    from_validation_error,
    to_http,
)
from ..finish import refused_record
from ..http.serving import read_limited_body
from ..observability import InMemoryMetrics
from ..response_headers import (
    ALLOW,
    ATTEMPTS,
    CACHE,
    CACHE_BYPASS,
    CACHE_SCORE,
    COMPLEXITY,
    COMPRESSION_SAVED_TOKENS,
    COST,
    GROUNDEDNESS,
    MODEL,
    MODERATION,
    REQUEST_ID,
    RETRY_AFTER,
    ROUTE,
    STREAM_CACHE_CONTROL,
    VARIANT,
)
from ..runner import InProcessRunner
from ..streaming import StreamItem, start_stream
from .dashboard import Dashboard
from .openapi import openapi_document

log = logging.getLogger("llm_gateway.http")
JSON = "application/json"
CHAT_PATH = "/v1/chat/completions"


def _api_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


def _error_response(error: GatewayError, request_id: str | None = None) -> Response:
    """The error's HTTP answer. `request_id`: a chat completion's id, which names its audit record;
    the other routes keep no audit record and send no id."""
    status, headers, body = to_http(error)
    if request_id is not None:
        headers[REQUEST_ID.name] = request_id
    return Response(body, status_code=status, headers=headers, media_type=JSON)


async def _read_body(request: Request, limit: int) -> bytes:
    try:
        return await read_limited_body(request, limit, lambda: PayloadTooLarge(f"Request body exceeds {limit} bytes."))
    except ClientDisconnect:
        raise ClientClosedRequest("The client closed the connection while sending the request.") from None


Parsed = TypeVar("Parsed", bound=BaseModel)


def _parse(body: bytes, model: type[Parsed]) -> Parsed:
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc.msg}.", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from exc


def _decision_headers(state: GatewayState, model: str | None) -> dict[str, str]:
    headers = {REQUEST_ID.name: state.request_id}
    headers[CACHE.name] = "miss" if state.cache is None or state.cache.status == "bypass" else state.cache.status
    if state.cache is not None and state.cache.status == "bypass":
        headers[CACHE_BYPASS.name] = "true"
    if state.cache is not None and state.cache.status == "semantic" and state.cache.score is not None:
        headers[CACHE_SCORE.name] = f"{state.cache.score:.4f}"
    if model is not None:
        headers[MODEL.name] = model
    if state.router is not None:
        headers[ROUTE.name] = state.router.route
        if state.router.complexity is not None:
            headers[COMPLEXITY.name] = f"{state.router.complexity:.4f}"
        if state.router.variant is not None:
            headers[VARIANT.name] = state.router.variant
    if state.invoke is not None:
        headers[ATTEMPTS.name] = str(len(state.invoke.attempts))
        headers[COST.name] = f"{state.invoke.response.usage.cost_usd:.8f}"
    elif state.cache is not None and state.cache.response is not None:  # a hit: no model was called or paid
        if state.cache.route is not None:
            headers[ROUTE.name] = state.cache.route
        headers[ATTEMPTS.name] = "0"
        headers[COST.name] = f"{0.0:.8f}"
    if state.guard is not None and state.guard.saved_tokens:
        headers[COMPRESSION_SAVED_TOKENS.name] = str(state.guard.saved_tokens)
    if state.moderate is not None:
        headers[MODERATION.name] = state.moderate.outcome
        grounded = next((d for d in state.moderate.decisions if d.layer == "groundedness"), None)
        if grounded is not None and grounded.score is not None:
            headers[GROUNDEDNESS.name] = f"{grounded.score:.2f}"  # share of supported claims
    return headers


def _finish_error(state: GatewayState) -> Response:
    """The error answer finish decided on (a guard refusal)."""
    error, status, headers = _finish_failure(state)
    return Response(error.model_dump_json(), status_code=status, headers=headers, media_type=JSON)


def _finish_failure(state: GatewayState) -> tuple[ErrorBody, int, dict[str, str]]:
    finish = state.finish
    if finish is None or finish.error is None:
        raise RuntimeError("the chain ended without an answer")
    headers = {REQUEST_ID.name: state.request_id}
    if finish.retry_after_s is not None:
        headers[RETRY_AFTER.name] = str(max(1, int(finish.retry_after_s + 0.999)))
    return finish.error, finish.status, headers


def _sse(items: Iterator[StreamItem]) -> Iterator[bytes]:
    """Server-sent events as OpenAI sends them: chunks, then `[DONE]`; a stream that fails ends
    with the error event instead (`data: {"error": {...}}`, which the openai SDK raises as an
    `APIError`) and no `[DONE]`, so no client mistakes it for a finished answer."""
    failed = False
    for item in items:
        yield b"data: " + item.model_dump_json(exclude_none=True).encode() + b"\n\n"
        failed = failed or isinstance(item, ErrorBody)
    if not failed:
        yield b"data: [DONE]\n\n"


@dataclass(frozen=True)
class Dialect:
    """How one API's requests become the chain's, and its answers and errors go back."""

    parse: Callable[[bytes], ChatCompletionRequest]
    answer: Callable[[ChatCompletion, GatewayState], bytes]
    events: Callable[[Iterator[StreamItem], GatewayState, str], Iterator[bytes]]
    error: Callable[[GatewayError, str | None], Response]
    finish_error: Callable[[GatewayState], Response]
    blocking_parse: bool = False  # parsing reads a store: in a worker thread, not on the event loop
    after_chain: Callable[[GatewayState], None] | None = None  # in the chain's worker thread, once it answered


OPENAI = Dialect(
    parse=lambda body: _parse(body, ChatCompletionRequest),
    answer=lambda completion, _state: completion.model_dump_json().encode(),
    events=lambda items, _state, _model: _sse(items),
    error=_error_response,
    finish_error=_finish_error,
)


def anthropic_dialect() -> Dialect:
    from .. import messages_api

    def parse(body: bytes) -> ChatCompletionRequest:
        try:
            return messages_api.to_chat(_parse(body, messages_api.MessagesRequest))
        except ValidationError as exc:  # what the chat request refuses (a tool name, a role's rules)
            raise from_validation_error(exc) from exc

    def error(failure: GatewayError, request_id: str | None) -> Response:
        status, headers, _ = to_http(failure)
        if request_id is not None:
            headers[REQUEST_ID.name] = request_id
        return Response(
            messages_api.error_body(failure.body(), status), status_code=status, headers=headers, media_type=JSON
        )

    def finish_error(state: GatewayState) -> Response:
        error, status, headers = _finish_failure(state)
        return Response(messages_api.error_body(error, status), status_code=status, headers=headers, media_type=JSON)

    return Dialect(
        parse=parse,
        answer=lambda completion, state: orjson.dumps(messages_api.to_message(completion, state)),
        events=messages_api.stream_events,
        error=error,
        finish_error=finish_error,
    )


def responses_dialect(deps: Deps, owner: tuple[str, str] | None) -> Dialect:
    """The Responses API (`responses_api`) for a caller whose key `owner` names (None: none does,
    and the chain refuses it): the conversation it continues is read from its tenant's store
    while parsing, and the answer is stored once the chain has given it."""
    from .. import responses_api

    tenant = owner[0] if owner is not None else None
    turns: list[responses_api.Turn] = []

    def parse(body: bytes) -> ChatCompletionRequest:
        parsed = _parse(body, responses_api.ResponsesRequest)
        prior: list[dict[str, Any]] = []
        if parsed.previous_response_id is not None:
            if tenant is None:
                raise AuthenticationFailed("Incorrect API key provided.")
            prior = responses_api.prior_conversation(
                deps.conversations, tenant, parsed.previous_response_id, deps.clock()
            )
        turns.append(responses_api.Turn(parsed, tenant, prior))
        try:
            return responses_api.to_chat(parsed, prior)
        except ValidationError as exc:  # what the chat request refuses (a tool name, a role's rules)
            raise from_validation_error(exc) from exc

    def finish(state: GatewayState, completion: ChatCompletion) -> dict[str, Any]:
        policy = deps.config.tenants[state.guard.tenant.tenant] if state.guard and state.guard.tenant else None
        return turns[0].finish(state, completion, deps.conversations, policy)

    def after_chain(state: GatewayState) -> None:
        if state.finish is not None and state.finish.response is not None:
            finish(state, state.finish.response)

    return Dialect(
        parse=parse,
        answer=lambda _completion, _state: orjson.dumps(turns[0].response),
        events=lambda items, state, model: turns[0].events(items, state, model, functools.partial(finish, state)),
        error=_error_response,
        finish_error=_finish_error,
        blocking_parse=True,
        after_chain=after_chain,
    )


class _ClosingStream(StreamingResponse):
    """A streamed answer that closes its chunk source however the response ends: a client that
    left before or while reading is recorded as soon as the response is over, not whenever the
    garbage collector gets to the abandoned generator."""

    def __init__(self, content: Iterator[bytes], *, closing: Iterator[StreamItem], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._closing = closing

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self._closing, "close", None)
            if close is not None:
                await anyio.to_thread.run_sync(close)  # records in SQLite: off the event loop


class GatewayApp:
    """Routes of the OpenAI API over a `InProcessRunner`."""

    def __init__(self, runner: InProcessRunner, max_threads: int = 256) -> None:
        self.runner = runner
        self.deps = runner.deps
        self._max_threads = max_threads
        self._limiter: anyio.CapacityLimiter | None = None
        self._pool: ThreadPoolExecutor | None = None

    def _threads(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._max_threads)
        return self._limiter

    def _chain_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._max_threads, thread_name_prefix="chain")
        return self._pool

    async def chat_completions(self, request: Request) -> Response:
        return await self._chat(request, OPENAI)

    async def messages(self, request: Request) -> Response:
        """`POST /v1/messages`: Anthropic's Messages API over the same chain (`messages_api`)."""
        return await self._chat(request, anthropic_dialect())

    async def _chat(self, request: Request, dialect: Dialect) -> Response:
        request_id = uuid.uuid4().hex
        received_at = time.time()
        key = _api_key(request)
        state: GatewayState | None = None
        try:
            try:
                body = await _read_body(request, self.deps.config.limits.max_body_bytes)
                if dialect.blocking_parse:
                    chat = await asyncio.get_running_loop().run_in_executor(self._chain_pool(), dialect.parse, body)
                else:
                    chat = dialect.parse(body)
            except GatewayError as error:
                self._record_edge_refusal(request_id, received_at, key, request, error)
                raise
            state = GatewayState(
                request_id=request_id,
                received_at=received_at,
                request=chat,
                caller=CallerContext(
                    api_key_sha256=hash_key(key) if key else None,
                    client_ip=request.client.host if request.client else None,
                    cache_control=request.headers.get("cache-control"),
                    body_bytes=len(body),
                ),
            )
            if chat.stream:
                return await self._stream(state, dialect)
            # The chain blocks (SQLite, the provider call): a worker thread, through the event
            # loop's own executor hop (a third less CPU than anyio's), with the caller's context.
            run = functools.partial(contextvars.copy_context().run, self._run_chain, state, dialect)
            await asyncio.get_running_loop().run_in_executor(self._chain_pool(), run)
            return self._answer(state, dialect)
        except GatewayError as error:
            return dialect.error(error, request_id)
        except Exception:
            log.exception("unexpected error", extra={"request_id": request_id})
            internal = InternalError("The gateway failed to process the request.")
            if state is None:  # failed before the chain, which records every request it saw
                try:
                    self._record_edge_refusal(request_id, received_at, key, request, internal)
                except Exception:
                    log.exception("recording a failed request failed", extra={"request_id": request_id})
            return dialect.error(internal, request_id)

    def _run_chain(self, state: GatewayState, dialect: Dialect) -> None:
        self.runner.run(state)
        if dialect.after_chain is not None:
            dialect.after_chain(state)

    async def responses(self, request: Request) -> Response:
        """`POST /v1/responses`: OpenAI's Responses API over the same chain (`responses_api`)."""
        return await self._chat(request, responses_dialect(self.deps, self._key_owner(_api_key(request))))

    async def stored_response(self, request: Request) -> Response:
        """`GET|DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`: the caller's
        tenant's stored responses only (any other id, another tenant's included, is a 404)."""
        try:
            found = self._key_owner(_api_key(request))
            if found is None:
                raise AuthenticationFailed("Incorrect API key provided.")
            what = (
                "delete"
                if request.method == "DELETE"
                else "items"
                if request.url.path.endswith("/input_items")
                else "get"
            )
            answer = await anyio.to_thread.run_sync(
                self._stored_response, found[0], request.path_params["response_id"], what
            )
        except GatewayError as error:
            return _error_response(error)
        return JSONResponse(answer)

    def _stored_response(self, tenant: str, response_id: str, what: str) -> dict[str, Any]:
        from ..responses_api import input_items_page

        store = self.deps.conversations
        missing = NotFound(f"No response with id '{response_id}' found.")
        if store is None:
            raise missing
        if what == "delete":
            if not store.delete(tenant, response_id):
                raise missing
            return {"id": response_id, "object": "response.deleted", "deleted": True}
        stored = store.get(tenant, response_id, self.deps.clock())
        if stored is None:
            raise missing
        return input_items_page(stored) if what == "items" else stored.response

    async def trace(self, request: Request) -> Response:
        """`GET /v1/traces/{request_id}`: the trace of one of the caller's tenant's requests (any
        other request, another tenant's included, is a 404)."""
        try:
            tenant = self._tenant_of(request)
            request_id = request.path_params["request_id"]
            store = self.deps.traces
            found = await anyio.to_thread.run_sync(store.get, tenant, request_id, self.deps.clock()) if store else None
            if found is None:
                raise NotFound(f"No trace of request '{request_id}' found.")
        except GatewayError as error:
            return _error_response(error)
        return Response(found.model_dump_json(), media_type=JSON)

    async def feedback(self, request: Request) -> Response:
        """`POST /v1/feedback` `{"request_id", "score", "kind"?, "comment"?}`: the caller's verdict on
        one of its tenant's answers (`traces.give_feedback`); 404 for any other request."""
        from ..traces import FeedbackRequest, give_feedback

        try:
            tenant = self._tenant_of(request)
            body = await _read_body(request, self.deps.config.limits.max_body_bytes)
            given = _parse(body, FeedbackRequest)
            trace = await anyio.to_thread.run_sync(give_feedback, self.deps, tenant, given)
        except GatewayError as error:
            return _error_response(error)
        latest = trace.feedback[-1]
        return JSONResponse(
            {
                "object": "feedback",
                "request_id": trace.request_id,
                "kind": latest.kind,
                "score": latest.score,
                "satisfaction": latest.satisfaction,
            }
        )

    def _tenant_of(self, request: Request) -> str:
        found = self._key_owner(_api_key(request))
        if found is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return found[0]

    def _record_edge_refusal(
        self, request_id: str, received_at: float, key: str | None, request: Request, error: GatewayError
    ) -> None:
        """Audit a request refused before the chain could run (unreadable, too large, invalid)."""
        found = self._key_owner(key)
        tenant, key_id = found if found is not None else (None, None)
        client_ip = request.client.host if request.client else None
        self.deps.audit.record(refused_record(request_id, received_at, tenant, key_id, client_ip, error, time.time()))

    def _answer(self, state: GatewayState, dialect: Dialect) -> Response:
        finish = state.finish
        if finish is None or finish.response is None:
            return dialect.finish_error(state)
        return Response(
            dialect.answer(finish.response, state),
            media_type=JSON,
            headers=_decision_headers(state, finish.response.model),
        )

    async def _stream(self, state: GatewayState, dialect: Dialect) -> Response:
        model, items = await anyio.to_thread.run_sync(start_stream, self.runner, state, limiter=self._threads())
        if state.finish is not None and state.finish.error is not None:
            return dialect.finish_error(state)
        headers = _decision_headers(state, model)
        headers[STREAM_CACHE_CONTROL.name] = "no-cache"
        events = dialect.events(items, state, model or state.request.model)
        return _ClosingStream(events, closing=items, media_type="text/event-stream", headers=headers)

    async def embeddings(self, request: Request) -> Response:
        """`POST /v1/embeddings` (`embedding_api`): the tenant's embedding routes, in a worker thread."""
        from ..embedding_api import embed_request

        request_id, received_at, key = uuid.uuid4().hex, time.time(), _api_key(request)
        try:
            try:
                body = await _read_body(request, self.deps.config.limits.max_body_bytes)
                parsed = _parse(body, EmbeddingRequest)
            except GatewayError as error:
                self._record_edge_refusal(request_id, received_at, key, request, error)
                raise
            caller = CallerContext(
                api_key_sha256=hash_key(key) if key else None,
                client_ip=request.client.host if request.client else None,
                body_bytes=len(body),
            )
            run = functools.partial(
                contextvars.copy_context().run, embed_request, self.deps, parsed, caller, request_id, received_at
            )
            answer = await asyncio.get_running_loop().run_in_executor(self._chain_pool(), run)
        except GatewayError as error:
            return _error_response(error, request_id)
        except Exception:
            log.exception("unexpected error", extra={"request_id": request_id})
            return _error_response(InternalError("The gateway failed to process the request."), request_id)
        headers = {
            REQUEST_ID.name: request_id,
            CACHE.name: "exact" if answer.cached else "miss",
            MODEL.name: answer.body.model,
            ROUTE.name: answer.route,
            COST.name: f"{answer.body.usage.cost_usd:.8f}",
        }
        return Response(answer.body.model_dump_json(), media_type=JSON, headers=headers)

    async def models(self, request: Request) -> Response:
        """`GET /v1/models[/{model}]`: the routes and pinned models the caller's tenant may use, as
        OpenAI model objects; one of them, or 404 `model_not_found` for any other name."""
        found = self._key_owner(_api_key(request))
        if found is None:
            return _error_response(AuthenticationFailed("Incorrect API key provided."))
        tenant = self.deps.config.tenants[found[0]]
        names = [*tenant.routes, *[m for m in tenant.allowed_models if m not in tenant.routes]]
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "llm-gateway"} for name in names]
        wanted = request.path_params.get("model")
        if wanted is None:
            return JSONResponse({"object": "list", "data": data})
        model = next((m for m in data if m["id"] == wanted), None)
        if model is None:
            message = f"The model '{wanted}' does not exist or you do not have access to it."
            return _error_response(ModelNotFound(message))
        return JSONResponse(model)

    async def batches(self, request: Request) -> Response:
        """`GET /v1/batches[/{id}]`: the caller's tenant's batch jobs, as OpenAI batch objects."""
        from ..batch.status import tenant_batch, tenant_batches  # the batch engine only when asked (cold start)

        found = self._key_owner(_api_key(request))
        if found is None:
            return _error_response(AuthenticationFailed("Incorrect API key provided."))
        jobs = self.deps.batch_jobs
        job_id = request.path_params.get("batch_id")
        if jobs is None:
            return _error_response(NotFound("This deployment runs no batch jobs."))
        if job_id is None:
            return JSONResponse(await anyio.to_thread.run_sync(tenant_batches, jobs, found[0]))
        try:
            return JSONResponse(await anyio.to_thread.run_sync(tenant_batch, jobs, found[0], job_id))
        except NotFound as error:
            return _error_response(error)

    def _key_owner(self, key: str | None) -> tuple[str, str] | None:
        """(tenant, key id) of a tenant's API key; None for no key or one no tenant holds."""
        return self.deps.keys.get(hash_key(key)) if key else None

    def _is_admin(self, request: Request) -> bool:
        key = _api_key(request)
        return bool(key) and hash_key(key or "") in {k.sha256 for k in self.deps.config.admin_api_keys}

    async def metrics(self, request: Request) -> Response:
        """Prometheus text exposition of the in-process metrics (when the runtime keeps them), for
        an admin key only: the metrics name tenants and models."""
        if not self._is_admin(request):
            return _error_response(AuthenticationFailed("An admin API key is required."))
        sink = self.deps.metrics
        text = sink.prometheus() if isinstance(sink, InMemoryMetrics) else ""
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def admin_purge(self, request: Request) -> Response:
        """`POST /admin/cache/purge` with an admin key: `{"tenant": ...}` and optionally one of
        `"model"`, `"kb_version"` or `"system_prompt"` (see `cache.PurgeRequest`)."""
        if not self._is_admin(request):
            return _error_response(AuthenticationFailed("An admin API key is required."))
        try:
            body = orjson.loads(await _read_body(request, self.deps.config.limits.max_body_bytes))
            purge = PurgeRequest.model_validate(body)
        except GatewayError as error:  # too large, or the client left
            return _error_response(error)
        except (orjson.JSONDecodeError, ValidationError) as exc:
            detail = from_validation_error(exc) if isinstance(exc, ValidationError) else None
            return _error_response(detail or InvalidRequest("The request body is not valid JSON."))
        if purge.tenant not in self.deps.config.tenants:
            return _error_response(InvalidRequest(f"Unknown tenant '{purge.tenant}'.", param="tenant"))
        removed = await anyio.to_thread.run_sync(purge_caches, self.deps, purge)
        selected = purge.model_dump(exclude_none=True, exclude={"system_prompt"})
        if purge.system_prompt is not None:  # echo its tag, not the prompt text
            selected["system_prompt_tag"] = purge.tag
        return JSONResponse({**selected, "removed": removed})

    async def healthz(self, request: Request) -> Response:
        """`{"status": "ok"}`, and with model endpoints this process runs (serve's local models) the
        first's state under `model_endpoint` (the packaged model's, when it runs) and, with more
        than one, each one's with its models under `model_endpoints`. While an endpoint is down the
        status is `degraded`: HTTP 200 when some route still has a model elsewhere, 503 when every
        route's models are on endpoints that are down."""
        monitors = self.deps.model_endpoints
        if not monitors:
            return JSONResponse({"status": "ok"})
        healths = [(monitor, monitor.health()) for monitor in monitors]
        down = {m for monitor, health in healths if not health.ready for m in monitor.models}
        body: dict[str, Any] = {
            "status": "degraded" if down else "ok",
            "model_endpoint": healths[0][1].as_json(),
        }
        if len(healths) > 1:
            body["model_endpoints"] = [
                {"models": sorted(monitor.models), **health.as_json()} for monitor, health in healths
            ]
        routes = [route for tenant in self.deps.config.tenants.values() for route in tenant.routes.values()]
        answerable = not down or any(m not in down for route in routes for m in route.models())
        return JSONResponse(body, status_code=200 if answerable else 503)

    async def openapi(self, request: Request) -> Response:
        return Response(orjson.dumps(openapi_document()), media_type=JSON)


class GatewayAsgi:
    """The ASGI application. Headers over `limits.max_header_bytes` together are refused (431)
    before any route reads them: a megabyte `Authorization` header is not hashed, looked up or
    logged. `POST /v1/chat/completions`, the hot path, goes straight to its handler, which answers
    every error itself (Starlette's middleware and routing cost ~6 % of a proxied request's CPU);
    every other request goes through Starlette's routing."""

    def __init__(self, gateway: GatewayApp, routes: Starlette, max_header_bytes: int) -> None:
        self.gateway = gateway
        self.routes = routes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.routes(scope, receive, send)
            return
        if sum(len(k) + len(v) for k, v in scope["headers"]) > self.max_header_bytes:
            refusal = HeadersTooLarge(f"The request headers exceed {self.max_header_bytes} bytes.")
            await _error_response(refusal)(scope, receive, send)
            return
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if path == CHAT_PATH and scope["method"] == "POST":
            response = await self.gateway.chat_completions(Request(scope, receive))
            await response(scope, receive, send)
            return
        await self.routes(scope, receive, send)


def create_app(runner: InProcessRunner) -> GatewayAsgi:
    """The ASGI application."""
    gateway = GatewayApp(runner)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        error = GatewayError(f"No route for {request.method} {request.url.path}.")
        error.status, error.type = status, "invalid_request_error"
        response = _error_response(error)
        allow = (getattr(exc, "headers", None) or {}).get("Allow")
        if allow:  # a 405 names the methods the path takes
            response.headers[ALLOW.name] = allow
        return response

    routes = Starlette(
        routes=[
            Route(CHAT_PATH, gateway.chat_completions, methods=["POST"]),
            Route("/v1/messages", gateway.messages, methods=["POST"]),
            Route("/v1/responses", gateway.responses, methods=["POST"]),
            Route("/v1/responses/{response_id}", gateway.stored_response, methods=["GET", "DELETE"]),
            Route("/v1/responses/{response_id}/input_items", gateway.stored_response, methods=["GET"]),
            Route("/v1/embeddings", gateway.embeddings, methods=["POST"]),
            Route("/v1/traces/{request_id}", gateway.trace, methods=["GET"]),
            Route("/v1/feedback", gateway.feedback, methods=["POST"]),
            Route("/v1/models", gateway.models, methods=["GET"]),
            Route("/v1/models/{model:path}", gateway.models, methods=["GET"]),
            Route("/v1/batches", gateway.batches, methods=["GET"]),
            Route("/v1/batches/{batch_id}", gateway.batches, methods=["GET"]),
            Route("/healthz", gateway.healthz, methods=["GET"]),
            Route("/metrics", gateway.metrics, methods=["GET"]),
            Route("/admin/cache/purge", gateway.admin_purge, methods=["POST"]),
            Route("/openapi.json", gateway.openapi, methods=["GET"]),
            *Dashboard(runner.deps, gateway._is_admin, _error_response).routes(),
        ],
        exception_handlers={404: not_found, 405: not_found},
    )
    return GatewayAsgi(gateway, routes, runner.deps.config.limits.max_header_bytes)
