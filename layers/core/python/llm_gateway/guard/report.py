"""`llm-gateway guard-report`: what each tenant's guard and moderation layers decided, from the
audit log — per tenant and layer, the requests the layer decided on and the shares it flagged,
refused (blocked or withheld) and logged (a dry run's "would have refused"), with the most common
reasons. Reads the `guards` and `guard_reasons` columns of the audit records only (they hold no
text)."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ..errors import ConfigError

# (pattern, replacement): scores and claim numbers out of a reason.
_NUMBERS = (
    (re.compile(r"\s*\(score [0-9.]+\)|\s*score [0-9.]+(?:\s*>=\s*[0-9.]+)?"), ""),
    (re.compile(r"\d+ of \d+ claims"), "claims"),
    (re.compile(r"\s*\(claims [0-9, ]+\)"), ""),
    (re.compile(r"(claims) [0-9, ]+$"), r"\1"),
)
TOP_REASONS = 3


@dataclass
class LayerStats:
    """One tenant's layer over the window: requests it decided on, and how many of them it
    flagged, refused or logged (a request counts once per layer, input and answer together)."""

    tenant: str
    layer: str
    seen: int = 0
    flagged: int = 0
    refused: int = 0
    logged: int = 0
    refusal_reasons: Counter[str] = field(default_factory=Counter)
    logged_reasons: Counter[str] = field(default_factory=Counter)

    def share(self, count: int) -> float:
        return count / self.seen if self.seen else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "seen": self.seen,
            "flagged": self.flagged,
            "refused": self.refused,
            "logged": self.logged,
            "flagged_share": round(self.share(self.flagged), 4),
            "refused_share": round(self.share(self.refused), 4),
            "logged_share": round(self.share(self.logged), 4),
            "top_refusal_reasons": self.refusal_reasons.most_common(TOP_REASONS),
            "top_logged_reasons": self.logged_reasons.most_common(TOP_REASONS),
        }


@dataclass
class TenantReport:
    tenant: str
    requests: int = 0
    layers: dict[str, LayerStats] = field(default_factory=dict)


def reason_label(kind: str, reason: str | None) -> str:
    """A reason with its scores and claim numbers taken out, so equal causes count together
    ("weapons (score 0.912)" -> "weapons"); answers' reasons are marked `answer:`."""
    label = reason or ""
    for pattern, replacement in _NUMBERS:
        label = pattern.sub(replacement, label)
    label = label.strip(" ;") or "(no reason)"
    return f"answer: {label}" if kind == "output" else label


def summarise(rows: Iterable[tuple[str | None, str | None, str | None]]) -> list[TenantReport]:
    """Reports from audit rows `(tenant, guards, guard_reasons)`, tenants in name order (rows
    without a tenant, refused before authentication, are left out)."""
    tenants: dict[str, TenantReport] = {}
    for tenant, guards, reasons in rows:
        if tenant is None:
            continue
        report = tenants.setdefault(tenant, TenantReport(tenant))
        report.requests += 1
        actions: dict[str, set[str]] = {}
        for token in (guards or "").split():
            layer, _, rest = token.partition(":")
            actions.setdefault(layer, set()).add(rest.partition(":")[0])
        for layer, taken in actions.items():
            stats = report.layers.setdefault(layer, LayerStats(tenant, layer))
            stats.seen += 1
            stats.flagged += "flag" in taken
            stats.refused += "block" in taken
            stats.logged += "log" in taken
        for kind, layer, action, reason in json.loads(reasons) if reasons else []:
            decided = report.layers.get(layer)
            if decided is not None and action in ("block", "log"):
                counter = decided.refusal_reasons if action == "block" else decided.logged_reasons
                counter[reason_label(kind, reason)] += 1
    return [tenants[name] for name in sorted(tenants)]


def parse_bound(text: str | None, end: bool = False) -> float | None:
    """An ISO date or date-time as epoch seconds (UTC unless it names an offset). A date alone
    as an `end` bound means the end of that day."""
    if text is None:
        return None
    try:
        if len(text) == 10:
            day = datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
            return (day + timedelta(days=1) if end else day).timestamp()
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"not an ISO date or date-time: {text!r}") from None
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()


def audit_query(since: float | None, until: float | None, tenant: str | None) -> tuple[str, tuple[object, ...]]:
    """The audit rows of the window (`since` included, `until` excluded) and tenant."""
    clauses, args = ["tenant IS NOT NULL"], []
    for clause, value in (("ts >= ?", since), ("ts < ?", until), ("tenant = ?", tenant)):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    return f"SELECT tenant, guards, guard_reasons FROM audit WHERE {' AND '.join(clauses)}", tuple(args)  # noqa: S608


def render_text(reports: list[TenantReport]) -> str:
    """A table per tenant: layer, requests it decided on, % flagged, refused, logged, top reasons."""
    if not reports:
        return "no audited requests in this window\n"
    lines: list[str] = []
    for report in reports:
        lines.append(f"tenant {report.tenant}: {report.requests:,} requests")
        lines.append("| layer | seen | flagged | refused | logged | top refusal (logged) reasons |")
        lines.append("|---|---|---|---|---|---|")
        for stats in sorted(report.layers.values(), key=lambda s: s.layer):
            reasons = [f"{r} ({n})" for r, n in stats.refusal_reasons.most_common(TOP_REASONS)]
            reasons += [f"logged: {r} ({n})" for r, n in stats.logged_reasons.most_common(TOP_REASONS)]
            lines.append(
                f"| {stats.layer} | {stats.seen:,} | {stats.share(stats.flagged):.1%} | "
                f"{stats.share(stats.refused):.1%} | {stats.share(stats.logged):.1%} | {'; '.join(reasons)} |"
            )
        lines.append("")
    return "\n".join(lines)


def render_json(reports: list[TenantReport], since: str | None, until: str | None) -> str:
    body = {
        "since": since,
        "until": until,
        "tenants": [
            {
                "tenant": r.tenant,
                "requests": r.requests,
                "layers": [s.as_json() for s in sorted(r.layers.values(), key=lambda s: s.layer)],
            }
            for r in reports
        ],
    }
    return json.dumps(body, indent=2)
