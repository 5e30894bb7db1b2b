"""The health of a model endpoint the gateway runs itself (`llm-gateway serve`'s local model), as
the router and `/healthz` see it. `cli.supervisor.EndpointSupervisor` implements the monitor."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .errors import AllModelsFailed

EndpointState = Literal["starting", "ready", "restarting", "stopped"]
# Exits in a row (none after a stable run) from which the endpoint counts as crash-looping.
CRASH_LOOP_EXITS = 3


@dataclass(frozen=True)
class EndpointHealth:
    """A snapshot: `restarts` counts starts after the first; `consecutive_exits` resets once a child
    has served for a while; `last_exit` reads `signal SIGSEGV` or `exit status 3`;
    `next_restart_in_s` is set while waiting out the backoff."""

    state: EndpointState
    restarts: int = 0
    consecutive_exits: int = 0
    last_exit: str | None = None
    next_restart_in_s: float | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def crash_loop(self) -> bool:
        return self.consecutive_exits >= CRASH_LOOP_EXITS

    def as_json(self) -> dict[str, Any]:
        """The `/healthz` detail."""
        body: dict[str, Any] = {"state": self.state, "restarts": self.restarts, "last_exit": self.last_exit}
        if self.consecutive_exits:
            body["consecutive_exits"] = self.consecutive_exits
            body["crash_loop"] = self.crash_loop
        if self.next_restart_in_s is not None:
            body["next_restart_in_s"] = round(self.next_restart_in_s, 1)
        return body


class EndpointMonitor(Protocol):
    """A supervised model endpoint: which models it serves and how it is doing."""

    models: frozenset[str]

    def health(self) -> EndpointHealth:
        """The endpoint's state now (cheap: called on every request to its models)."""
        ...


def endpoint_down(health: EndpointHealth) -> AllModelsFailed:
    """The 503 for a request whose every candidate is on the endpoint while it is down: it says
    so, why, and when to try again (Retry-After)."""
    why = f" after {health.last_exit}" if health.last_exit else ""
    if health.state == "stopped":
        return AllModelsFailed(f"The local model endpoint has stopped{why}.", code="model_endpoint_unavailable")
    wait = health.next_restart_in_s
    when = f"; the next start is in {math.ceil(wait)} s" if wait is not None else "; it is starting now"
    if health.crash_loop:
        last = f", the last: {health.last_exit}" if health.last_exit else ""
        message = f"The local model endpoint keeps crashing ({health.consecutive_exits} exits in a row{last}){when}."
    else:
        message = f"The local model endpoint is restarting{why}{when}. Retry shortly."
    retry_after = max(1.0, wait or 0.0)
    return AllModelsFailed(message, code="model_endpoint_restarting", retry_after_s=retry_after)
