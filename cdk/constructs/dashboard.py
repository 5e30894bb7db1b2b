"""One CloudWatch dashboard per stage: the five alarms' states, the request metrics the functions
write (`LlmGateway` namespace), then the Step Functions executions and the Lambda errors.

A metric with a service-level copy (`aws.observability.SERVICE_LEVEL`, dimension `service` only)
is read as such. One written only with its labels is read by a CloudWatch SEARCH over the exact
dimension set it is written with (its labels plus Powertools' `service`): one line per label set,
or `SUM(SEARCH(...))` for one line over them (tokens by kind, requests by outcome). Percentiles do
not add up across label sets, so time to first token is shown per tenant, route, model and outcome.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import get_args

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cdk import constants as c
from cdk.config import StageConfig
from llm_gateway.alerts import ALERTS
from llm_gateway.contracts import CacheStatus
from llm_gateway.ports import Outcome

_RULES = {rule.name: rule for rule in ALERTS}
_PERIOD = cdk.Duration.minutes(5)
_WIDTH, _HEIGHT = 8, 6  # three graphs a row (the grid is 24 wide)

# The dimension sets the labelled copies are written with (`finish.request_metrics`, `decisions`,
# `traces`); tests/infrastructure/test_stack.py checks them against the code.
_REQUEST_LABELS = ("model", "outcome", "route", "service", "tenant")
_ERROR_LABELS = ("code", "service", "tenant")
_COST_LABELS = ("model", "service", "tenant")
_TOKEN_LABELS = ("kind", "model", "service", "tenant")
_TOKEN_KINDS = ("input", "cached", "output")
_GUARD_LABELS = ("action", "layer", "service")
_FEEDBACK_LABELS = ("service", "tenant")
_CACHE_HITS = ("exact", "semantic")  # the lookups that found an answer; `bypass` looked nothing up


def _service(name: str, statistic: str, label: str | None = None, **dimensions: str) -> cw.Metric:
    """A metric of the `service` dimension (the service-level copy) and `dimensions`."""
    return cw.Metric(
        namespace=c.POWERTOOLS_METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={"service": c.POWERTOOLS_SERVICE_NAME, **dimensions},
        statistic=statistic,
        period=_PERIOD,
        label=label,
    )


def _search(name: str, dimensions: Sequence[str], statistic: str, *filters: str) -> str:
    """A SEARCH over the metrics of exactly these dimensions (`filters`: `dimension="value"`)."""
    schema = ",".join((c.POWERTOOLS_METRICS_NAMESPACE, *dimensions))
    terms = " ".join((f'MetricName="{name}"', *filters))
    return f"SEARCH('{{{schema}}} {terms}', '{statistic}', {int(_PERIOD.to_seconds())})"


def _each(name: str, dimensions: Sequence[str], statistic: str, label: str = "") -> cw.SearchExpression:
    """One line per label set, named by its dimension values (after `label`)."""
    return cw.SearchExpression(expression=_search(name, dimensions, statistic), label=label, period=_PERIOD)


def _summed(name: str, dimensions: Sequence[str], dimension: str, value: str) -> cw.MathExpression:
    """One line: the sum over the label sets whose `dimension` is `value`."""
    search = _search(name, dimensions, "Sum", f'{dimension}="{value}"')
    return cw.MathExpression(expression=f"SUM({search})", label=value, period=_PERIOD)


def _graph(
    title: str,
    left: Sequence[cw.IMetric],
    *,
    right: Sequence[cw.IMetric] = (),
    alarm_at: tuple[float, str] | None = None,
    stacked: bool = False,
) -> cw.GraphWidget:
    """A graph from zero; `alarm_at` (threshold, alarm) draws an alarm's threshold."""
    axis = cw.YAxisProps(min=0, show_units=False)
    return cw.GraphWidget(
        title=title,
        left=list(left),
        right=list(right),
        left_y_axis=axis,
        right_y_axis=axis,
        left_annotations=[cw.HorizontalAnnotation(value=alarm_at[0], label=alarm_at[1])] if alarm_at else None,
        stacked=stacked,
        period=_PERIOD,
        width=_WIDTH,
        height=_HEIGHT,
    )


def _latency() -> cw.GraphWidget:
    return _graph(
        "Request latency (s)",
        [_service(c.METRIC_REQUEST_DURATION, p, p) for p in ("p50", "p95", "p99")],
        alarm_at=(_RULES["latency_p95"].threshold, "latency_p95 alarm"),
    )


def _time_to_first_token() -> cw.GraphWidget:
    return _graph(
        "Time to first token (s) by tenant, route, model, outcome",
        [_each(c.METRIC_TIME_TO_FIRST_TOKEN, _REQUEST_LABELS, p, p) for p in ("p50", "p95")],
    )


def _requests() -> cw.GraphWidget:
    outcomes = [_summed(c.METRIC_REQUESTS, _REQUEST_LABELS, "outcome", o) for o in get_args(Outcome)]
    return _graph("Requests by outcome", outcomes, stacked=True)


def _error_rate() -> cw.GraphWidget:
    rate = cw.MathExpression(
        expression="IF(requests > 0, FILL(errors, 0) / requests, 0)",
        using_metrics={"errors": _service(c.METRIC_ERRORS, "Sum"), "requests": _service(c.METRIC_REQUESTS, "Sum")},
        label="errors / requests",
        period=_PERIOD,
    )
    return _graph(
        "Error rate",
        [rate],
        right=[_service(c.METRIC_ERRORS, "Sum", "errors")],
        alarm_at=(_RULES["error_rate"].threshold, "error_rate alarm"),
    )


def _cache_lookups(status: str) -> cw.Metric:
    return _service(c.METRIC_CACHE_LOOKUPS, "Sum", status, status=status)


def _cache_hit_rate() -> cw.GraphWidget:
    hits = cw.MathExpression(
        expression=" + ".join(f"FILL({s}, 0)" for s in _CACHE_HITS),
        using_metrics={s: _cache_lookups(s) for s in _CACHE_HITS},
        period=_PERIOD,
    )
    looked_up = cw.MathExpression(
        expression="hits + FILL(miss, 0)",
        using_metrics={"hits": hits, "miss": _cache_lookups("miss")},
        period=_PERIOD,
    )
    rate = cw.MathExpression(
        expression="IF(looked_up > 0, 100 * hits / looked_up, 0)",
        using_metrics={"hits": hits, "looked_up": looked_up},
        label="hits / (hits + misses)",
        period=_PERIOD,
    )
    return _graph("Cache hit rate (%)", [rate])


def _executions(state_machines: Mapping[str, sfn.StateMachine]) -> cw.GraphWidget:
    metrics: list[cw.IMetric] = []
    for name, machine in state_machines.items():
        metrics += [
            machine.metric_failed(label=f"{name} failed", period=_PERIOD),
            machine.metric_timed_out(label=f"{name} timed out", period=_PERIOD),
            machine.metric_throttled(label=f"{name} throttled", period=_PERIOD),
        ]
    return _graph("Step Functions executions failed, timed out, throttled", metrics)


class GatewayDashboard(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: StageConfig,
        alarms: Iterable[cw.IAlarm],
        state_machines: Mapping[str, sfn.StateMachine],
        functions: Mapping[str, lambda_.IFunction],
    ) -> None:
        super().__init__(scope, construct_id)
        self.dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=c.resource_name(stage.name, "dashboard"))
        self.dashboard.add_widgets(
            cw.TextWidget(
                markdown=f"# {c.PROJECT} {stage.name}\n"
                f"Namespace `{c.POWERTOOLS_METRICS_NAMESPACE}`: a service-wide line, or one line per label set "
                "where a metric is written with its labels only (docs/observability.md).",
                width=24,
                height=2,
            )
        )
        self.dashboard.add_widgets(cw.AlarmStatusWidget(title="Alarms", alarms=list(alarms), width=24, height=3))
        self.dashboard.add_widgets(_latency(), _time_to_first_token(), _requests())
        self.dashboard.add_widgets(
            _error_rate(),
            _graph("Errors by tenant and code", [_each(c.METRIC_ERRORS, _ERROR_LABELS, "Sum")]),
            _graph(
                "Guard triggers by layer and action",
                [_service(c.METRIC_GUARD_TRIGGERS, "Sum", "all"), _each(c.METRIC_GUARD_TRIGGERS, _GUARD_LABELS, "Sum")],
            ),
        )
        self.dashboard.add_widgets(
            _graph("Cost (USD)", [_service(c.METRIC_COST, "Sum", "all")]),
            _graph("Cost (USD) by tenant and model", [_each(c.METRIC_COST, _COST_LABELS, "Sum")]),
            _graph("Tokens by kind", [_summed(c.METRIC_TOKENS, _TOKEN_LABELS, "kind", k) for k in _TOKEN_KINDS]),
        )
        self.dashboard.add_widgets(
            _graph("Cache lookups by status", [_cache_lookups(s) for s in get_args(CacheStatus)], stacked=True),
            _cache_hit_rate(),
            _graph(
                "Feedback score by tenant",
                [
                    _service(c.METRIC_FEEDBACK_SCORE, "Average", "all"),
                    _each(c.METRIC_FEEDBACK_SCORE, _FEEDBACK_LABELS, "Average"),
                ],
            ),
        )
        self.dashboard.add_widgets(
            _executions(state_machines),
            _graph("Lambda errors", [f.metric_errors(label=n, period=_PERIOD) for n, f in functions.items()]),
            _graph("Lambda throttles", [f.metric_throttles(label=n, period=_PERIOD) for n, f in functions.items()]),
        )
