"""Powertools Logger and Metrics, created once per Lambda container.

No Powertools Tracer: importing the X-Ray SDK cost ~300 ms of every cold start, and the functions'
active tracing already records each invocation in X-Ray."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger(service="llm-gateway")
metrics = Metrics(namespace="LlmGateway", service="llm-gateway")


class PowertoolsMetrics:
    """The metrics port on Powertools (CloudWatch embedded metric format). Dimensions go into the
    metric name (`cache_lookups.exact`) so one flush can carry metrics of different dimension values."""

    def count(self, name: str, value: float = 1.0, **dimensions: str) -> None:
        metrics.add_metric(name=_name(name, dimensions), unit=MetricUnit.Count, value=value)

    def observe(self, name: str, value: float, **dimensions: str) -> None:
        metrics.add_metric(name=_name(name, dimensions), unit=MetricUnit.NoUnit, value=value)


def _name(name: str, dimensions: dict[str, str]) -> str:
    return ".".join([name, *(dimensions[k] for k in sorted(dimensions))])
