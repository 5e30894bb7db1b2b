"""Each finished request as OpenTelemetry spans (GenAI semantic conventions), posted to a collector
over OTLP/HTTP (protobuf) when the deployment sets `telemetry.otlp_endpoint`.

Imported only then (`deps.Deps`): the opentelemetry SDK and exporter are the `otel` extra, which
the Lambda layers do not ship. The spans are built from the request's trace (`traces.build_trace`,
never with its content): a root span `chat {model}` with the GenAI attributes and the gateway's
own (`llm_gateway.*`), and a child per step of the chain, laid end to end from the trace's timings.
No prompt, answer, API key, user id or client address is in them.

On the request path only the trace is built (as the trace store's is) and queued: a thread of the
pipeline makes the spans (the SDK's ~20 µs a span stays off the request) and hands them to a
`BatchSpanProcessor`, whose own thread posts them. A full queue drops a request's spans; a
collector that is slow, down or failing costs log lines, never a request's time or its answer.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from .config import Telemetry, TenantConfig
from .contracts import ChatCompletion, GatewayState
from .errors import GatewayError
from .ports import Trace
from .traces import build_trace

if TYPE_CHECKING:
    from .deps import Deps

log = logging.getLogger(__name__)

PREFIX = "llm_gateway"
QUEUE_SIZE = 4096  # requests whose spans wait to be made; more are dropped (the BatchSpanProcessor's is 2048 spans)
_SCALARS = (str, bool, int, float)
_NS_PER_S = 1_000_000_000
_NS_PER_MS = 1_000_000


class RequestSpans:
    """One process's spans for one collector: a tracer provider, its batch processor and exporter."""

    def __init__(self, settings: Telemetry) -> None:
        url = settings.traces_url()
        if url is None:
            raise ValueError("telemetry.otlp_endpoint is not set")
        exporter = OTLPSpanExporter(endpoint=url, headers=settings.resolved_headers(), timeout=settings.timeout_s)
        # Not the global provider: the gateway's spans go to its collector whatever else the process
        # traces. Shut down by `close` (at exit too), after the queue is drained into it.
        resource = Resource.create({"service.name": settings.service_name})
        self._provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("llm_gateway")
        self._key = _key(settings)
        self._dropped = 0
        self._closed = False
        self._start()
        os.register_at_fork(after_in_child=self._start)  # a forked child gets a worker of its own
        atexit.register(self.close)

    def _start(self) -> None:
        self._queue: queue.Queue[tuple[Trace, dict[str, AttributeValue]] | threading.Event | None]
        self._queue = queue.Queue(QUEUE_SIZE)
        self._worker = threading.Thread(target=self._make_spans, name="llm-gateway-otel", daemon=True)
        self._worker.start()

    def _make_spans(self) -> None:
        pending = self._queue
        while (item := pending.get()) is not None:
            if isinstance(item, threading.Event):  # a flush: everything before it is made
                item.set()
                continue
            try:
                self.emit(*item)
            except Exception:
                log.exception("making a request's spans failed", extra={"request_id": item[0].request_id})

    def export(
        self,
        state: GatewayState,
        deps: Deps,
        outcome: str,
        error: GatewayError | None = None,
        answer: ChatCompletion | None = None,
        kept: Trace | None = None,
    ) -> None:
        """Queue the spans of a finished request whose tenant is known and not opted out
        (`traces.export`); `answer`: what the client received; `kept`: the trace the store just
        kept of it, if any (its content is never exported)."""
        guard = state.guard
        tenant = guard.tenant.tenant if guard is not None and guard.tenant is not None else None
        policy = deps.config.tenants.get(tenant) if tenant is not None else None
        if tenant is None or policy is None or not policy.traces.export:
            return
        if self._closed:
            return
        if kept is not None:
            trace = kept if kept.content is None else kept.model_copy(update={"content": None})
        else:
            trace = build_trace(state, deps, tenant, _without_content(policy), outcome, error)
        try:
            self._queue.put_nowait((trace, request_attributes(state, answer)))
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning("span queue full: %d requests' spans dropped", self._dropped)

    def emit(self, trace: Trace, request: Mapping[str, AttributeValue]) -> None:
        """The root span and one child per step; the steps ran one after another, so each starts
        where the one before ended (an untimed step takes no time; `finish` or `failed` runs to
        the end of the request)."""
        start = _ns(trace.ts)
        end = start + round(trace.latency_ms * _NS_PER_MS)
        root = self._tracer.start_span(
            f"chat {request.get('gen_ai.request.model', '')}".rstrip(),
            kind=SpanKind.SERVER,
            start_time=start,
            attributes={**request, **trace_attributes(trace)},
        )
        if trace.outcome == "error":
            root.set_status(Status(StatusCode.ERROR, trace.error_code))
        parent = trace_api.set_span_in_context(root)
        cursor = start
        for i, step in enumerate(trace.steps):
            last = i == len(trace.steps) - 1
            if step.ms is not None:
                step_end = min(end, cursor + round(step.ms * _NS_PER_MS))
            else:
                step_end = end if last else cursor
            attributes: dict[str, AttributeValue] = {f"{PREFIX}.step": step.name}
            if step.ms is not None:
                attributes[f"{PREFIX}.step.ms"] = step.ms
            attributes.update(flat(step.detail, f"{PREFIX}.{step.name}"))
            child = self._tracer.start_span(step.name, context=parent, start_time=cursor, attributes=attributes)
            for name, values in listed(step.detail):
                child.add_event(name, flat(values, f"{PREFIX}.{name}"), timestamp=cursor)
            child.end(end_time=step_end)
            cursor = step_end
        root.end(end_time=end)

    def flush(self, timeout_s: float = 30) -> bool:
        """Make and send what is queued now; False when that did not finish within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        made = threading.Event()
        try:
            self._queue.put(made, timeout=timeout_s)
        except queue.Full:
            return False
        if not made.wait(max(0.0, deadline - time.monotonic())):
            return False
        return self._provider.force_flush(max(0, round((deadline - time.monotonic()) * 1000)))

    def close(self, timeout_s: float = 30) -> None:
        """Make and send what is queued, then stop; the next `request_spans` builds a new pipeline."""
        with _LOCK:
            if _PIPELINES.get(self._key) is self:
                del _PIPELINES[self._key]
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            log.warning("span queue full at close: its spans are dropped")
        self._worker.join(timeout_s)
        self._provider.shutdown()


def request_attributes(state: GatewayState, answer: ChatCompletion | None) -> dict[str, AttributeValue]:
    """What the request asked for and what answered it: model names, provider, the answer's id and
    finish reasons (never its text)."""
    found: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": state.request.model,
    }
    if state.invoke is not None:
        found["gen_ai.provider.name"] = found["gen_ai.system"] = state.invoke.provider
    if state.cache is not None:
        found[f"{PREFIX}.cache_status"] = state.cache.status
    if answer is not None:
        found["gen_ai.response.id"] = answer.id
        found["gen_ai.response.finish_reasons"] = [c.finish_reason for c in answer.choices if c.finish_reason]
    return found


def trace_attributes(trace: Trace) -> dict[str, AttributeValue]:
    """The trace's request-level facts: tenant, route, outcome, model, tokens, cost, error."""
    found: dict[str, AttributeValue] = {
        f"{PREFIX}.request_id": trace.request_id,
        f"{PREFIX}.tenant": trace.tenant,
        f"{PREFIX}.outcome": trace.outcome,
        f"{PREFIX}.cost_usd": trace.cost_usd,
    }
    if trace.route is not None:
        found[f"{PREFIX}.route"] = trace.route
    if trace.model is not None:
        found["gen_ai.response.model"] = trace.model
    if any(step.name == "invoke" for step in trace.steps):  # tokens a model was paid for
        found["gen_ai.usage.input_tokens"] = trace.prompt_tokens
        found["gen_ai.usage.output_tokens"] = trace.completion_tokens
        if trace.cached_tokens:
            found["gen_ai.usage.cache_read.input_tokens"] = trace.cached_tokens
    if trace.error_code is not None:
        found[f"{PREFIX}.error_code"] = trace.error_code
        if trace.outcome == "error":
            found["error.type"] = trace.error_code
    return found


def flat(detail: Mapping[str, Any], prefix: str) -> dict[str, AttributeValue]:
    """The scalar values of a step's detail as attributes: nested mappings with dotted names, lists
    of one scalar type as arrays; lists of mappings are `listed` (events), anything else left out."""
    found: dict[str, AttributeValue] = {}
    for key, value in detail.items():
        name = f"{prefix}.{key}"
        if isinstance(value, _SCALARS):
            found[name] = value
        elif isinstance(value, Mapping):
            found.update(flat(value, name))
        elif isinstance(value, list) and value and len({type(v) for v in value}) == 1 and type(value[0]) in _SCALARS:
            found[name] = list(value)
    return found


def listed(detail: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """A step's lists of mappings (the guard's decisions, the invoke's attempts), one event each,
    named in the singular (`decision`, `attempt`)."""
    return [
        (key.removesuffix("s"), item)
        for key, value in detail.items()
        if isinstance(value, list)
        for item in value
        if isinstance(item, Mapping)
    ]


def _without_content(policy: TenantConfig) -> TenantConfig:
    if not policy.traces.store_content:
        return policy
    return policy.model_copy(update={"traces": policy.traces.model_copy(update={"store_content": False})})


def _ns(seconds: float) -> int:
    return round(seconds * _NS_PER_S)


def _key(settings: Telemetry) -> str:
    return settings.model_dump_json()


_PIPELINES: dict[str, RequestSpans] = {}
_LOCK = threading.Lock()


def request_spans(settings: Telemetry) -> RequestSpans:
    """This process's pipeline for `settings`, built on first use and shared after (one exporter
    thread and connection per collector, however many `Deps` a process builds)."""
    key = _key(settings)
    with _LOCK:
        found = _PIPELINES.get(key)
        if found is None:
            found = _PIPELINES[key] = RequestSpans(settings)
        return found
