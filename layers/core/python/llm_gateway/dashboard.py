"""What the local dashboard (`GET /dashboard`) shows, read from the store `serve` writes: the audit
log (traffic, outcomes, latency, cost, cache, guardrail decisions), the traces (time to first token,
feedback), the review queue and the alerts (`alerts.evaluate`).

`dashboard_data` answers `GET /dashboard/data?window=hour|day|week[&tenant=T]`: one value per time
bucket for each chart, and the window's totals, computed in SQLite (percentiles included) so that a
busy week is read without loading its rows into Python.
"""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .alerts import LocalAlertHistory, QueryFn, evaluate
from .ports import Feedback

if TYPE_CHECKING:
    from .config import GatewayConfig


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
_CACHE_LOOKUPS = ("exact", "semantic", "miss")
_QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
_DAY_S = 86_400.0


def dashboard_data(
    query: QueryFn,
    config: GatewayConfig,
    window: Window,
    now: float,
    tenant: str | None = None,
    review_pending: int = 0,
) -> dict[str, Any]:
    """The dashboard's numbers over `window` ending at `now`, for one tenant or all."""
    until = math.ceil(now / window.bucket_s) * window.bucket_s  # buckets on the clock's minutes and hours
    since = until - window.span_s
    buckets = int(window.span_s // window.bucket_s)
    reader = _Reader(query, since, until, window.bucket_s, tenant)
    times = [since + i * window.bucket_s for i in range(buckets)]

    traffic = reader.rows(
        "SELECT {b}, COUNT(*), SUM(outcome = 'error'), SUM(outcome IN ('blocked', 'filtered')), "
        "SUM(cache IN ('exact', 'semantic')), SUM(cache IN ('exact', 'semantic', 'miss')), SUM(cost_usd) "
        "FROM audit WHERE {where} GROUP BY 1"
    )
    requests, errors, refused = [0] * buckets, [0] * buckets, [0] * buckets
    hits, lookups = [0] * buckets, [0] * buckets
    for b, n, failed, blocked, hit, looked, _cost in traffic:
        i = _index(b, buckets)
        requests[i] += int(n)
        errors[i] += int(failed or 0)
        refused[i] += int(blocked or 0)
        hits[i] += int(hit or 0)
        lookups[i] += int(looked or 0)

    cost_by_tenant: dict[str, list[float]] = defaultdict(lambda: [0.0] * buckets)
    for b, who, cost in reader.rows("SELECT {b}, tenant, SUM(cost_usd) FROM audit WHERE {where} GROUP BY 1, 2"):
        cost_by_tenant[str(who or "_none")][_index(b, buckets)] += float(cost or 0.0)

    triggers: dict[str, list[int]] = defaultdict(lambda: [0] * buckets)
    trigger_total = 0
    for b, guards in reader.rows(
        "SELECT {b}, guards FROM audit WHERE {where} AND (guards LIKE '%:flag%' OR guards LIKE '%:block%')"
    ):
        layers = {part.split(":")[0] for part in str(guards).split() if _triggered(part)}
        trigger_total += bool(layers)
        for layer in layers:
            triggers[layer][_index(b, buckets)] += 1

    latency = reader.percentiles("audit", "latency_ms", "outcome != 'error'", buckets)
    ttft = reader.percentiles(
        "traces",
        "json_extract(trace, '$.first_token_ms')",
        "json_extract(trace, '$.first_token_ms') IS NOT NULL",
        buckets,
    )
    satisfaction, feedback_total, satisfaction_total = reader.satisfaction(buckets)

    totals_row = reader.rows(
        "SELECT 0, COUNT(*), SUM(outcome = 'error'), SUM(outcome IN ('blocked', 'filtered')), "
        "SUM(cache IN ('exact', 'semantic')), SUM(cache IN ('exact', 'semantic', 'miss')), SUM(cost_usd) "
        "FROM audit WHERE {where}"
    )
    _, total, failed_total, refused_total, hit_total, lookup_total, cost_total = (
        totals_row[0] if totals_row else (0,) * 7
    )
    total, lookup_total = int(total or 0), int(lookup_total or 0)
    overall_latency = reader.percentiles("audit", "latency_ms", "outcome != 'error'", None)
    overall_ttft = reader.percentiles(
        "traces", "json_extract(trace, '$.first_token_ms')", "json_extract(trace, '$.first_token_ms') IS NOT NULL", None
    )
    firing = [
        {"tenant": s.tenant, "alert": s.rule, "value": s.value, "threshold": s.threshold}
        for s in evaluate(config, LocalAlertHistory(query), now)
        if s.firing and (tenant is None or s.tenant == tenant)
    ]
    return {
        "window": window.name,
        "tenant": tenant,
        "since": since,
        "until": until,
        "at": now,
        "bucket_s": window.bucket_s,
        "times": times,
        "series": {
            "requests": requests,
            "errors": errors,
            "refused": refused,
            "latency_ms": latency,
            "ttft_ms": ttft,
            "cache_hit_rate": [h / n if n else None for h, n in zip(hits, lookups, strict=True)],
            "cost_usd": {who: [round(c, 8) for c in series] for who, series in sorted(cost_by_tenant.items())},
            "guard_triggers": dict(sorted(triggers.items())),
            "satisfaction": satisfaction,
        },
        "totals": {
            "requests": total,
            "errors": int(failed_total or 0),
            "error_rate": int(failed_total or 0) / total if total else None,
            "refused": int(refused_total or 0),
            "guard_triggered": trigger_total,
            "cost_usd": round(float(cost_total or 0.0), 8),
            "cache_hits": int(hit_total or 0),
            "cache_lookups": lookup_total,
            "cache_hit_rate": int(hit_total or 0) / lookup_total if lookup_total else None,
            "latency_ms": {k: v[0] for k, v in overall_latency.items()},
            "ttft_ms": {k: v[0] for k, v in overall_ttft.items()},
            "feedback": feedback_total,
            "satisfaction": satisfaction_total,
            "review_pending": review_pending,
            "alerts_firing": len(firing),
        },
        "cost_by_model": reader.cost_by_model(),
        "alerts": firing,
    }


def _triggered(part: str) -> bool:
    fields = part.split(":")
    return len(fields) >= 2 and fields[1] in _TRIGGERS


def _index(bucket: Any, buckets: int) -> int:
    return min(max(int(bucket), 0), buckets - 1)


class _Reader:
    """The window's queries: `{b}` is a row's bucket, `{where}` the window (and tenant)."""

    def __init__(self, query: QueryFn, since: float, until: float, bucket_s: float, tenant: str | None) -> None:
        self._query = query
        self._since, self._until, self._bucket_s = since, until, bucket_s
        self._where = "ts >= ? AND ts < ?" + (" AND tenant = ?" if tenant is not None else "")
        self._params: tuple[object, ...] = (since, until) + ((tenant,) if tenant is not None else ())
        self._bucket = f"CAST((ts - {since!r}) / {bucket_s!r} AS INTEGER)"

    def rows(self, sql: str, table_missing_ok: bool = False) -> list[tuple[Any, ...]]:
        statement = sql.format(b=self._bucket, where=self._where)
        try:
            return list(self._query(statement, self._params))
        except sqlite3.OperationalError as exc:  # a store that has never kept traces has no such table
            if table_missing_ok and "no such table" in str(exc):
                return []
            raise

    def percentiles(self, table: str, value: str, keep: str, buckets: int | None) -> dict[str, list[float | None]]:
        """p50/p95/p99 of `value` per bucket (or over the whole window: `buckets` None), each the
        nearest-rank value (as the latency alert reads it), found by SQLite's window functions."""
        group = self._bucket if buckets is not None else "0"
        picks = " OR ".join(
            f"rn = CAST({q} * n AS INTEGER) + ({q} * n > CAST({q} * n AS INTEGER))" for q in _QUANTILES.values()
        )
        sql = (
            f"SELECT b, v, rn, n FROM (SELECT {group} AS b, {value} AS v, "  # noqa: S608 - fixed SQL
            f"ROW_NUMBER() OVER (PARTITION BY {group} ORDER BY {value}) AS rn, "
            f"COUNT(*) OVER (PARTITION BY {group}) AS n FROM {table} WHERE {{where}} AND {keep}) "
            f"WHERE {picks}"
        )
        size = buckets if buckets is not None else 1
        found: dict[str, list[float | None]] = {name: [None] * size for name in _QUANTILES}
        for b, v, rn, n in self.rows(sql, table_missing_ok=table == "traces"):
            for name, q in _QUANTILES.items():
                rank = max(1, math.ceil(q * int(n)))  # as SQLite picked it
                if int(rn) == rank:
                    found[name][_index(b, size)] = float(v)
        return found

    def satisfaction(self, buckets: int) -> tuple[list[float | None], int, float | None]:
        """Mean satisfaction (0 to 1) of the feedback given in each bucket, the count, the mean.
        Feedback comes after its request: it is read from the traces of the day before too."""
        sql = (
            "SELECT json_extract(f.value, '$.at'), json_extract(f.value, '$.kind'), json_extract(f.value, '$.score') "
            "FROM traces, json_each(traces.trace, '$.feedback') AS f WHERE {where}"
        )
        earlier = (self._since - _DAY_S, *self._params[1:])  # the window's own tenant clause, a day wider
        try:
            given: list[tuple[Any, ...]] = list(self._query(sql.format(where=self._where), earlier))
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            given = []
        sums, counts = [0.0] * buckets, [0] * buckets
        for at, kind, score in given:
            moment = float(at)
            if not self._since <= moment < self._until:
                continue
            i = _index((moment - self._since) // self._bucket_s, buckets)
            sums[i] += Feedback.model_construct(kind=kind, score=int(score), at=moment).satisfaction
            counts[i] += 1
        total = sum(counts)
        mean = sum(sums) / total if total else None
        return [s / c if c else None for s, c in zip(sums, counts, strict=True)], total, mean

    def cost_by_model(self) -> list[dict[str, Any]]:
        rows = self.rows(
            "SELECT 0, tenant, model, COUNT(*), SUM(cost_usd), SUM(prompt_tokens), SUM(completion_tokens), "
            "SUM(cached_tokens) FROM audit WHERE {where} AND model IS NOT NULL GROUP BY 2, 3 ORDER BY 5 DESC, 2, 3"
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
            for _, who, model, n, cost, prompt, completion, cached in rows
        ]
