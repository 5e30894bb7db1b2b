"""What the local dashboard (`GET /dashboard`) shows, read from the store `serve` writes: the audit
log (traffic, outcomes, latency, cost, cache, guardrail decisions), the traces (time to first token,
feedback), the review queue and the alerts (`alerts.evaluate`).

`dashboard_data` answers `GET /dashboard/data?window=hour|day|week[&tenant=T]`: one value per time
bucket for each chart, and the window's totals. Each table is read once per view, on its `ts`
index; percentiles are the nearest-rank values the latency alert reads (`alerts.percentile`).
"""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .alerts import AlertState, LocalAlertHistory, QueryFn, evaluate, percentile
from .ports import Feedback

if TYPE_CHECKING:
    from .config import GatewayConfig
    from .ports import ExperimentStore, RolloutStore


@dataclass(frozen=True)
class Window:
    name: str
    span_s: float
    bucket_s: float


WINDOWS = {
    "hour": Window("hour", 3600.0, 60.0),
    "day": Window("day", 86_400.0, 900.0),
    "week": Window("week", 7 * 86_400.0, 7200.0),
}
_TRIGGERS = ("flag", "block")  # a guardrail decision that counts as a trigger (as the alert counts it)
_QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
_DAY_S = 86_400.0
# each feedback of the traces that have some, where the row and the feedback are whole
_FEEDBACK = (
    "SELECT json_extract(f.value, '$.at'), json_extract(f.value, '$.kind'), json_extract(f.value, '$.score') "
    "FROM traces, json_each(CASE WHEN json_valid(traces.trace) THEN traces.trace ELSE '{{}}' END, '$.feedback') AS f "
    "WHERE {where} AND traces.feedback > 0 AND json_type(f.value, '$.at') IN ('integer', 'real') "
    "AND json_type(f.value, '$.score') = 'integer' AND json_extract(f.value, '$.kind') IN ('thumbs', 'rating')"
)


def dashboard_data(
    query: QueryFn,
    config: GatewayConfig,
    window: Window,
    now: float,
    tenant: str | None = None,
    alerts: Sequence[AlertState] | None = None,
) -> dict[str, Any]:
    """The dashboard's numbers over `window` ending at `now`, for one tenant or all; `alerts`:
    the rules' states if already evaluated (else they are evaluated here)."""
    until = math.ceil(now / window.bucket_s) * window.bucket_s  # buckets on the clock's minutes and hours
    since = until - window.span_s
    buckets = int(window.span_s // window.bucket_s)
    reader = _Reader(query, since, until, window.bucket_s, tenant, buckets)

    counts = {name: [0] * buckets for name in ("requests", "errors", "refused", "hits", "lookups")}
    cost_by_tenant: dict[str, list[float]] = defaultdict(lambda: [0.0] * buckets)
    for b, who, n, failed, blocked, hit, looked, cost in reader.rows(
        "SELECT {b}, tenant, COUNT(*), SUM(outcome = 'error'), SUM(outcome IN ('blocked', 'filtered')), "
        "SUM(cache IN ('exact', 'semantic')), SUM(cache IN ('exact', 'semantic', 'miss')), SUM(cost_usd) "
        "FROM audit WHERE {where} GROUP BY 1, 2"
    ):
        i = reader.index(b)
        for name, value in zip(counts, (n, failed, blocked, hit, looked), strict=True):
            counts[name][i] += int(value or 0)
        cost_by_tenant[str(who or "_none")][i] += float(cost or 0.0)

    triggers: dict[str, list[int]] = defaultdict(lambda: [0] * buckets)
    trigger_total = 0
    for b, guards in reader.rows(
        "SELECT {b}, guards FROM audit WHERE {where} AND (guards LIKE '%:flag%' OR guards LIKE '%:block%')"
    ):
        layers = {part.split(":")[0] for part in str(guards).split() if _triggered(part)}
        trigger_total += bool(layers)
        for layer in layers:
            triggers[layer][reader.index(b)] += 1

    latency, overall_latency = reader.percentiles(
        "SELECT {b}, latency_ms FROM audit WHERE {where} AND outcome != 'error'"
    )
    ttft, overall_ttft = reader.percentiles(
        "SELECT {b}, first_token_ms FROM traces WHERE {where} AND typeof(first_token_ms) IN ('integer', 'real')",
        table_missing_ok=True,
    )
    satisfaction, feedback_total, satisfaction_total = reader.satisfaction()
    states = alerts if alerts is not None else evaluate(config, LocalAlertHistory(query), now)
    firing = [
        {"tenant": s.tenant, "alert": s.rule, "value": s.value, "threshold": s.threshold}
        for s in states
        if s.firing and (tenant is None or s.tenant == tenant)
    ]
    total, failed_total, hit_total, lookup_total = (
        sum(counts[name]) for name in ("requests", "errors", "hits", "lookups")
    )
    return {
        "window": window.name,
        "tenant": tenant,
        "since": since,
        "until": until,
        "at": now,
        "bucket_s": window.bucket_s,
        "times": [since + i * window.bucket_s for i in range(buckets)],
        "series": {
            "requests": counts["requests"],
            "errors": counts["errors"],
            "refused": counts["refused"],
            "latency_ms": latency,
            "ttft_ms": ttft,
            "cache_hit_rate": [h / n if n else None for h, n in zip(counts["hits"], counts["lookups"], strict=True)],
            "cost_usd": {who: [round(c, 8) for c in series] for who, series in sorted(cost_by_tenant.items())},
            "guard_triggers": dict(sorted(triggers.items())),
            "satisfaction": satisfaction,
        },
        "totals": {
            "requests": total,
            "errors": failed_total,
            "error_rate": failed_total / total if total else None,
            "refused": sum(counts["refused"]),
            "guard_triggered": trigger_total,
            "cost_usd": round(sum(sum(series) for series in cost_by_tenant.values()), 8),
            "cache_hits": hit_total,
            "cache_lookups": lookup_total,
            "cache_hit_rate": hit_total / lookup_total if lookup_total else None,
            "latency_ms": overall_latency,
            "ttft_ms": overall_ttft,
            "feedback": feedback_total,
            "satisfaction": satisfaction_total,
            "review_pending": _pending_reviews(query, tenant),
            "alerts_firing": len(firing),
        },
        "cost_by_model": reader.cost_by_model(),
        "alerts": firing,
    }


def _pending_reviews(query: QueryFn, tenant: str | None) -> int:
    sql = "SELECT COUNT(*) FROM review_queue WHERE status = 'pending' AND (? IS NULL OR tenant = ?)"
    try:
        rows: list[tuple[Any, ...]] = list(query(sql, (tenant, tenant)))
        return int(rows[0][0])
    except sqlite3.OperationalError as exc:  # a store whose review queue was never opened
        if "no such table" not in str(exc):
            raise
        return 0


def _triggered(part: str) -> bool:
    fields = part.split(":")
    return len(fields) >= 2 and fields[1] in _TRIGGERS


Quantiles = dict[str, float | None]


class _Reader:
    """The window's queries: `{b}` is a row's bucket, `{where}` the window (and tenant)."""

    def __init__(
        self, query: QueryFn, since: float, until: float, bucket_s: float, tenant: str | None, buckets: int
    ) -> None:
        self._query = query
        self._since, self._until, self._bucket_s, self._buckets = since, until, bucket_s, buckets
        self._where = "ts >= ? AND ts < ?" + (" AND tenant = ?" if tenant is not None else "")
        self._params: tuple[object, ...] = (since, until) + ((tenant,) if tenant is not None else ())
        self._bucket = f"CAST((ts - {since!r}) / {bucket_s!r} AS INTEGER)"

    def index(self, bucket: Any) -> int:
        return min(max(int(bucket), 0), self._buckets - 1)

    def rows(
        self, sql: str, table_missing_ok: bool = False, params: tuple[object, ...] | None = None
    ) -> list[tuple[Any, ...]]:
        statement = sql.format(b=self._bucket, where=self._where)
        try:
            return list(self._query(statement, self._params if params is None else params))
        except sqlite3.OperationalError as exc:  # a store that has never kept traces has no such table
            if table_missing_ok and "no such table" in str(exc):
                return []
            raise

    def percentiles(self, sql: str, table_missing_ok: bool = False) -> tuple[dict[str, list[float | None]], Quantiles]:
        """p50/p95/p99 of the (bucket, value) rows `sql` selects: per bucket, and over the window."""
        values: list[list[float]] = [[] for _ in range(self._buckets)]
        for b, value in self.rows(sql, table_missing_ok):
            values[self.index(b)].append(float(value))
        every = [v for bucket in values for v in bucket]
        per_bucket = {
            name: [percentile(bucket, q) if bucket else None for bucket in values] for name, q in _QUANTILES.items()
        }
        overall: Quantiles = {name: percentile(every, q) if every else None for name, q in _QUANTILES.items()}
        return per_bucket, overall

    def satisfaction(self) -> tuple[list[float | None], int, float | None]:
        """Mean satisfaction (0 to 1) of the feedback given in each bucket, the count, the mean.
        Feedback comes after its request: it is read from the traces of the day before too."""
        earlier = (self._since - _DAY_S, *self._params[1:])  # the window's own tenant clause, a day wider
        sums, counts = [0.0] * self._buckets, [0] * self._buckets
        for at, kind, score in self.rows(_FEEDBACK, table_missing_ok=True, params=earlier):
            moment = float(at)
            if not self._since <= moment < self._until:
                continue
            i = self.index((moment - self._since) // self._bucket_s)
            sums[i] += Feedback.model_construct(kind=kind, score=int(score), at=moment).satisfaction
            counts[i] += 1
        total = sum(counts)
        mean = sum(sums) / total if total else None
        return [s / c if c else None for s, c in zip(sums, counts, strict=True)], total, mean

    def cost_by_model(self) -> list[dict[str, Any]]:
        rows = self.rows(
            "SELECT tenant, model, COUNT(*), SUM(cost_usd), SUM(prompt_tokens), SUM(completion_tokens), "
            "SUM(cached_tokens) FROM audit WHERE {where} AND model IS NOT NULL GROUP BY 1, 2 ORDER BY 4 DESC, 1, 2"
        )
        return [
            {
                "tenant": who,
                "model": model,
                "requests": int(n),
                "cost_usd": round(float(cost or 0.0), 8),
                "prompt_tokens": int(prompt or 0),
                "completion_tokens": int(completion or 0),
                "cached_tokens": int(cached or 0),
            }
            for who, model, n, cost, prompt, completion, cached in rows
        ]


def model_changes(
    rollouts: RolloutStore | None, experiments: ExperimentStore | None, query: QueryFn, tenant: str | None
) -> dict[str, Any]:
    """The rollouts and the experiments (running, and the last ones ended), for the dashboard's
    tables: each rollout's stage and share; each experiment's variants and verdicts (its report)."""
    from .experiments.ab import analyse

    shown_rollouts = [r for r in (rollouts.all(tenant) if rollouts is not None else [])][-10:]
    shown_experiments = [e for e in (experiments.all(tenant) if experiments is not None else [])][-5:]
    return {
        "rollouts": [
            {
                "rollout_id": r.rollout_id,
                "tenant": r.tenant,
                "route": r.route,
                "change": f"{r.baseline} -> {r.candidate}",
                "status": r.status,
                "share": r.share,
                "reason": r.reason,
            }
            for r in reversed(shown_rollouts)
        ],
        "experiments": [
            {
                "experiment_id": e.experiment_id,
                "tenant": e.tenant,
                "route": e.route,
                "status": e.status,
                "winner": e.winner,
                "metric": e.metric,
                "variants": report["variants"],
                "against_control": report["against_control"],
            }
            for e, report in ((e, analyse(query, e)) for e in reversed(shown_experiments))
        ],
    }
