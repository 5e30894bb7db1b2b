"""The five alerts the gateway promises, defined once (as `pipeline.STEPS` defines the chain) and
evaluated per tenant: locally over the store `serve` writes (`LocalAlertHistory`: the audit log
and the traces), by `llm-gateway alerts` and by `serve` every `alerting.interval_s` (a log line
and an optional webhook when one starts or stops firing).

| alert | fires when | over |
|---|---|---|
| `latency_p95` | the p95 of request latency is above 5 s | the last 15 minutes |
| `error_rate` | more than 5 % of requests failed | the last 15 minutes |
| `daily_cost` | the last 24 hours cost more than 2x the trailing 7 days' daily average | a day against a week |
| `satisfaction_drop` | satisfaction (feedback) is down more than 10 % on the week before | a week against a week |
| `guard_trigger_rate` | the share of requests a guardrail refused or flagged is 3x its trailing one | 1 h against 7 d |

A tenant may set its own thresholds (`tenants.<name>.alerts`); a rule needs `min_samples`
observations in its window (and its baseline) before it can fire.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pydantic import ValidationError

from .ports import Feedback

if TYPE_CHECKING:
    from .config import GatewayConfig

_MINUTE, _HOUR, _DAY = 60.0, 3600.0, 86_400.0
log = logging.getLogger("llm_gateway.alerts")


@dataclass(frozen=True)
class AlertRule:
    name: str
    fires_when: str
    threshold: float
    window_s: float
    baseline_s: float | None = None  # the trailing period the window is compared with
    min_samples: int = 1


ALERTS: tuple[AlertRule, ...] = (
    AlertRule("latency_p95", "p95 request latency (s) above the threshold", 5.0, 15 * _MINUTE, min_samples=20),
    AlertRule("error_rate", "share of requests that failed above the threshold", 0.05, 15 * _MINUTE, min_samples=20),
    AlertRule("daily_cost", "last 24 h's cost over the trailing daily average, above", 2.0, _DAY, 7 * _DAY),
    AlertRule(
        "satisfaction_drop", "fall of satisfaction on the week before, above", 0.10, 7 * _DAY, 7 * _DAY, min_samples=10
    ),
    AlertRule("guard_trigger_rate", "guardrail trigger share over its trailing share, above", 3.0, _HOUR, 7 * _DAY, 20),
)
ALERT_NAMES = tuple(rule.name for rule in ALERTS)


@dataclass(frozen=True)
class AlertState:
    rule: str
    tenant: str
    firing: bool
    value: float | None  # what the rule measured (None: too few observations)
    threshold: float
    samples: int

    def line(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.4g}"
        state = "FIRING" if self.firing else "ok"
        measured = f"value {shown} threshold {self.threshold:g} ({self.samples} samples)"
        return f"{self.tenant:<12} {self.rule:<20} {state:<7} {measured}"


class AlertHistory(Protocol):
    """What the rules read, per tenant and time range [since, until)."""

    def latencies_ms(self, tenant: str, since: float, until: float) -> list[float]: ...

    def outcomes(self, tenant: str, since: float, until: float) -> tuple[int, int, int]:
        """(requests, failed, refused or flagged by a guardrail)."""
        ...

    def cost_usd(self, tenant: str, since: float, until: float) -> float: ...

    def satisfaction(self, tenant: str, since: float, until: float) -> list[float]:
        """Each feedback's satisfaction in [0, 1], by when it was given."""
        ...


def evaluate(config: GatewayConfig, history: AlertHistory, now: float) -> list[AlertState]:
    """Every rule for every tenant, at `now`."""
    states = []
    for tenant, settings in config.tenants.items():
        for rule in ALERTS:
            threshold = settings.alerts.get(rule.name, rule.threshold)
            value, samples = _measure(rule, history, tenant, now)
            firing = value is not None and value > threshold
            states.append(AlertState(rule.name, tenant, firing, value, threshold, samples))
    return states


Reading = tuple[float | None, int]  # what a rule measured (None: too few observations), and on how many


def _latency(rule: AlertRule, history: AlertHistory, tenant: str, since: float, before: float, now: float) -> Reading:
    latencies = history.latencies_ms(tenant, since, now)
    enough = len(latencies) >= rule.min_samples
    return (percentile(latencies, 0.95) / 1000 if enough else None), len(latencies)


def _errors(rule: AlertRule, history: AlertHistory, tenant: str, since: float, before: float, now: float) -> Reading:
    requests, failed, _ = history.outcomes(tenant, since, now)
    return (failed / requests if requests >= rule.min_samples else None), requests


def _cost(rule: AlertRule, history: AlertHistory, tenant: str, since: float, before: float, now: float) -> Reading:
    today = history.cost_usd(tenant, since, now)
    daily = history.cost_usd(tenant, before, since) / ((rule.baseline_s or _DAY) / _DAY)
    return (today / daily if daily > 0 else None), int(today > 0)


def _satisfaction(
    rule: AlertRule, history: AlertHistory, tenant: str, since: float, before: float, now: float
) -> Reading:
    recent, earlier = history.satisfaction(tenant, since, now), history.satisfaction(tenant, before, since)
    if min(len(recent), len(earlier)) < rule.min_samples or _mean(earlier) == 0:
        return None, len(recent)
    return (_mean(earlier) - _mean(recent)) / _mean(earlier), len(recent)


def _guards(rule: AlertRule, history: AlertHistory, tenant: str, since: float, before: float, now: float) -> Reading:
    requests, _, triggered = history.outcomes(tenant, since, now)
    base_requests, _, base_triggered = history.outcomes(tenant, before, since)
    if requests < rule.min_samples or base_requests < rule.min_samples:
        return None, requests
    base_share = base_triggered / base_requests or 1 / base_requests  # none before: a floor of one
    return (triggered / requests) / base_share, requests


_MEASURES = {
    "latency_p95": _latency,
    "error_rate": _errors,
    "daily_cost": _cost,
    "satisfaction_drop": _satisfaction,
    "guard_trigger_rate": _guards,
}


def _measure(rule: AlertRule, history: AlertHistory, tenant: str, now: float) -> Reading:
    since = now - rule.window_s
    before = since - (rule.baseline_s or 0.0)
    return _MEASURES[rule.name](rule, history, tenant, since, before, now)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (the latency alert's; the dashboard's and replay's too)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


class LocalAlertHistory:
    """The rules' readings from the local store: the audit log (latency, outcomes, guardrail
    decisions, cost) and the traces' feedback."""

    def __init__(self, query: QueryFn) -> None:
        self._query = query

    def latencies_ms(self, tenant: str, since: float, until: float) -> list[float]:
        rows = self._query(
            "SELECT latency_ms FROM audit WHERE tenant = ? AND ts >= ? AND ts < ? AND outcome != 'error'",
            (tenant, since, until),
        )
        return [float(row[0]) for row in rows]  # type: ignore[arg-type]

    def outcomes(self, tenant: str, since: float, until: float) -> tuple[int, int, int]:
        rows = self._query(
            "SELECT COUNT(*), SUM(outcome = 'error'), "
            "SUM(outcome IN ('blocked', 'filtered') OR guards LIKE '%:flag%' OR guards LIKE '%:block%') "
            "FROM audit WHERE tenant = ? AND ts >= ? AND ts < ?",
            (tenant, since, until),
        )
        total, failed, triggered = rows[0]
        return int(total or 0), int(failed or 0), int(triggered or 0)  # type: ignore[call-overload]

    def cost_usd(self, tenant: str, since: float, until: float) -> float:
        rows = self._query(
            "SELECT SUM(cost_usd) FROM audit WHERE tenant = ? AND ts >= ? AND ts < ?", (tenant, since, until)
        )
        return float(rows[0][0] or 0.0)  # type: ignore[arg-type]

    def satisfaction(self, tenant: str, since: float, until: float) -> list[float]:
        import sqlite3  # the local store's: not with the configuration, which every function reads

        # feedback comes after its request: traces of requests up to a day before the range
        try:
            rows = self._query(
                "SELECT f.value FROM traces, json_each(CASE WHEN json_valid(traces.trace) THEN traces.trace "
                "ELSE '{}' END, '$.feedback') AS f "
                "WHERE traces.tenant = ? AND traces.ts >= ? AND traces.ts < ? AND traces.feedback > 0",
                (tenant, since - _DAY, until),
            )
        except sqlite3.OperationalError as exc:  # a store that never kept a trace has no feedback
            if "no such table" not in str(exc):
                raise
            return []
        given = []
        for (value,) in rows:
            try:
                given.append(Feedback.model_validate_json(str(value)))
            except ValidationError:  # a damaged entry is passed over
                continue
        return [f.satisfaction for f in given if since <= f.at < until and f.kind != "task"]


class QueryFn(Protocol):
    def __call__(self, sql: str, params: tuple[object, ...] = ...) -> list[tuple[object, ...]]: ...


class Periodic:
    """Calls `action` every `interval_s` on a thread of its own while the context is open; a call
    that fails is logged and the next one runs."""

    def __init__(self, interval_s: float, action: Callable[[], object], name: str) -> None:
        self.interval_s, self.action, self.name = interval_s, action, name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Periodic:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.action()
            except Exception:
                log.exception("%s failed", self.name)


class AlertWatcher:
    """`serve`'s evaluator (run every `alerting.interval_s` by a `Periodic`): it evaluates the
    rules and, for each alert that starts or stops firing, logs a line and (with `webhook_url`) posts
    `{"alert", "tenant", "state": "firing" | "resolved", "value", "threshold", "at"}`."""

    def __init__(
        self,
        config: GatewayConfig,
        history: AlertHistory,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config, self.history, self.clock = config, history, clock
        self.firing: dict[tuple[str, str], AlertState] = {}

    def check(self) -> list[tuple[str, AlertState]]:
        """Evaluate once; what changed, as ("firing" | "resolved", state), announced."""
        now = self.clock()
        changed: list[tuple[str, AlertState]] = []
        for state in evaluate(self.config, self.history, now):
            key = (state.tenant, state.rule)
            if state.firing and key not in self.firing:
                self.firing[key] = state
                changed.append(("firing", state))
            elif not state.firing and key in self.firing:
                del self.firing[key]
                changed.append(("resolved", state))
        for what, state in changed:
            log.warning("alert %s: %s", what, state.line())
            self._post(what, state, now)
        return changed

    def _post(self, what: str, state: AlertState, now: float) -> None:
        url = self.config.alerting.webhook_url
        if url is None:
            return
        body = {
            "alert": state.rule,
            "tenant": state.tenant,
            "state": what,
            "value": state.value,
            "threshold": state.threshold,
            "at": now,
        }
        import httpx  # only where a webhook is posted: the config reads ALERT_NAMES in functions without httpx

        try:
            httpx.post(url, json=body, timeout=5.0).raise_for_status()
        except httpx.HTTPError as exc:  # the alert is logged; the webhook's failure too
            log.warning("alert webhook failed: %s", exc)
