"""A local OpenTelemetry collector: `POST /v1/traces` (OTLP/HTTP, protobuf) on 127.0.0.1, decoding
each body with opentelemetry-proto's `ExportTraceServiceRequest` and keeping it for the test.

    with otlp_collector() as collector:
        ... export to collector.url ...
        collector.spans()  # every span received, attributes decoded

`answer` sets the status code it answers with (500: a failing collector; the body is still kept),
`delay_s` how long it waits before answering (a slow collector).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .servers import ServerThread

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class Span:
    """One received span, ids as hex, attributes as Python values."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]


@dataclass
class Collector:
    url: str = ""
    answer: int = 200
    delay_s: float = 0.0
    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self, body: bytes, headers: dict[str, str]) -> None:
        with self._lock:
            self.bodies.append(body)
            self.headers.append(headers)

    def raw(self) -> bytes:
        """Every body received, end to end (for searching the exported bytes)."""
        with self._lock:
            return b"".join(self.bodies)

    def spans(self) -> list[Span]:
        with self._lock:
            bodies = list(self.bodies)
        found = []
        for body in bodies:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    found += [_span(s, resource) for s in scope_spans.spans]
        return found

    def clear(self) -> None:
        with self._lock:
            self.bodies.clear()
            self.headers.clear()


def _span(span: Any, resource: dict[str, Any]) -> Span:
    return Span(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        kind=span.kind,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        attributes=_attributes(span.attributes),
        status_code=span.status.code,
        status_message=span.status.message,
        events=[(e.name, _attributes(e.attributes)) for e in span.events],
        resource=resource,
    )


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind is not None else None


def _app(collector: Collector) -> Starlette:
    async def traces(request: Request) -> Response:
        collector.received(await request.body(), {k.lower(): v for k, v in request.headers.items()})
        if collector.delay_s:
            await asyncio.sleep(collector.delay_s)
        if collector.answer != 200:
            return Response(b"collector failure", status_code=collector.answer, media_type="text/plain")
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type=PROTOBUF)

    return Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])


@contextmanager
def otlp_collector(answer: int = 200, delay_s: float = 0.0) -> Iterator[Collector]:
    """A collector on a free loopback port for the duration of the block."""
    collector = Collector(answer=answer, delay_s=delay_s)
    with ServerThread(_app(collector)) as server:
        collector.url = server.url
        yield collector
