"""The streaming function's ASGI app (functions/stream, behind Lambda Web Adapter): the local
server's app on the Lambda's dependencies, its Powertools metrics flushed per request.

A chain function's `@metrics.log_metrics` prints its metrics after each invocation; the streaming
function has no handler (the adapter forwards HTTP to uvicorn), so `FlushMetrics` does it. What a
request recorded is printed as EMF lines (one per label set) just before its response's last body
message (for a stream, after the finish step ran, so the lines are out before the client has the
end of the answer), and anything recorded after that when the request ends. Lambda sends one
request at a time to an instance, so the lines hold one request's metrics.
"""

from __future__ import annotations

import sys
from typing import Any

from ..http.app import create_app
from ..runner import InProcessRunner
from .observability import metrics, pending
from .runtime import deps


def flush_metrics() -> None:
    """Print the metrics recorded so far as EMF lines on stdout, if there are any (Powertools
    warns on an empty flush), and push them out of Python's buffer: stdout is a pipe on Lambda."""
    if pending():
        metrics.flush_metrics()
        sys.stdout.flush()


class FlushMetrics:
    """ASGI middleware: each HTTP request's metrics are flushed before its response ends."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_flushed(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                flush_metrics()
            await send(message)

        try:
            await self.app(scope, receive, send_flushed)
        finally:
            flush_metrics()


def streaming_app() -> FlushMetrics:
    """The gateway's HTTP API on this container's dependencies, metrics flushed per request."""
    return FlushMetrics(create_app(InProcessRunner(deps())))
