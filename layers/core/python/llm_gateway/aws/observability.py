"""Powertools Logger and Metrics, created once per Lambda container.

No Powertools Tracer: importing the X-Ray SDK cost ~300 ms of every cold start, and the functions'
active tracing already records each invocation in X-Ray.

Metrics carry their labels as real CloudWatch dimensions (docs/observability.md). An embedded
metric format record holds one set of dimension values, so each label set a request used gets a
record of its own (`_LabelledSets`), printed when the namespace's metrics are flushed (by a
handler's `@metrics.log_metrics`, or the streaming function after each request); metrics without
labels go into the function's own record as before."""

from __future__ import annotations

import threading

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

NAMESPACE = "LlmGateway"
SERVICE = "llm-gateway"
logger = Logger(service=SERVICE)

Labels = tuple[tuple[str, str], ...]


class _LabelledSets:
    """One `EphemeralMetrics` per label set seen since the last flush (thread-safe: the streaming
    function runs the chain in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sets: dict[Labels, EphemeralMetrics] = {}

    def add(self, name: str, unit: MetricUnit, value: float, labels: dict[str, str]) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            found = self._sets.get(key)
            if found is None:
                found = self._sets[key] = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
                for dimension, label in key:
                    found.add_dimension(name=dimension, value=label or "_empty")
            found.add_metric(name=name, unit=unit, value=value)

    def flush(self) -> None:
        with self._lock:
            sets, self._sets = self._sets, {}
        for labelled in sets.values():
            labelled.flush_metrics()

    def pending(self) -> bool:
        with self._lock:
            return bool(self._sets)


labelled = _LabelledSets()


class _Provider(AmazonCloudWatchEMFProvider):
    """The namespace's provider: a flush prints the labelled records, then its own (if any)."""

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None:
        labelled.flush()
        if self.metric_set or raise_on_empty_metrics:
            super().flush_metrics(raise_on_empty_metrics=raise_on_empty_metrics)


_provider = _Provider(namespace=NAMESPACE, service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE, provider=_provider)


def pending() -> bool:
    """Whether anything was recorded since the last flush."""
    return bool(_provider.metric_set) or labelled.pending()


def _unit(name: str, counted: bool) -> MetricUnit:
    if counted:
        return MetricUnit.Count
    if name.endswith("_seconds"):
        return MetricUnit.Seconds
    if name.endswith("_ms"):
        return MetricUnit.Milliseconds
    return MetricUnit.NoUnit


# Also written without their labels (the service dimension only), for the alarms over the whole
# service (cdk/constructs/alarms.py).
SERVICE_LEVEL = frozenset(
    {"requests", "request_duration_seconds", "errors", "cost_usd", "feedback_score", "guard_triggers"}
)


class PowertoolsMetrics:
    """The metrics port on Powertools (CloudWatch embedded metric format): labels are dimensions
    (bounded by the configuration: tenants, routes, models, outcomes, layers, codes)."""

    def count(self, name: str, value: float = 1.0, **dimensions: str) -> None:
        self._add(name, _unit(name, True), value, dimensions)

    def observe(self, name: str, value: float, **dimensions: str) -> None:
        self._add(name, _unit(name, False), value, dimensions)

    @staticmethod
    def _add(name: str, unit: MetricUnit, value: float, dimensions: dict[str, str]) -> None:
        if dimensions:
            labelled.add(name, unit, value, dimensions)
        if not dimensions or name in SERVICE_LEVEL:
            metrics.add_metric(name=name, unit=unit, value=value)
