"""Staged rollouts: a tenant's route moves from its model (the baseline) to a candidate through
stages (shares of the route's users, e.g. 1 → 5 → 25 → 50 → 100 %), each advancing only when its
gates hold over a minimum sample, and rolling back at once when one fails or an alarm fires.

- Assignment (`arm`): sticky per user, by a hash of the rollout, the tenant and the user (the
  request's `user`, else the API key): a user's bucket (0 to 9,999) never changes, and the candidate
  answers the buckets below the stage's share, so a user the candidate answered at 5 % is still
  its user at 25 %, and no user outside the share ever reaches it.
- Routing (`with_rollout`): on the candidate's arm the candidate is tried first and the baseline
  after it (a failure of the candidate falls back to the baseline, and is counted against the
  candidate); the arm is recorded with the request (`RouteResult.variant`, the audit record's
  `variant`) and named in the `x-gateway-variant` header.
- Gates (`RolloutController.check`), over the audit log (and the traces' feedback): the
  candidate's error rate in this stage against the baseline's over the rollout (Wilson bounds at
  the gates' confidence); its p95 latency against the baseline's; satisfaction; the tenant's
  error-rate and latency alerts.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..ports import ExperimentStore, Feedback, Rollout, RolloutEvent, RolloutGates, RolloutStore

if TYPE_CHECKING:
    from ..alerts import QueryFn
    from ..config import GatewayConfig
    from ..contracts import RouteResult, TenantContext

log = logging.getLogger("llm_gateway.rollouts")
BUCKETS = 10_000
ARMS = ("candidate", "baseline")
DEFAULT_STAGES = (1.0, 5.0, 25.0, 50.0, 100.0)
ROLLOUT_CHECK_S = 10.0  # how often `serve` evaluates the running rollouts' gates
MIN_EVAL_CASES = 30  # fewer cases than this cannot show a candidate not worse
_ROLLBACK_FLOOR = 10  # candidate requests before the error gate may roll back
WATCHED_ALERTS = ("error_rate", "latency_p95")
# the feedback on some requests (`marks`: one placeholder per request id)
_FEEDBACK_OF = (
    "SELECT traces.request_id, f.value FROM traces, json_each(CASE WHEN json_valid(traces.trace) "
    "THEN traces.trace ELSE '{{}}' END, '$.feedback') AS f WHERE traces.request_id IN ({marks}) AND traces.feedback > 0"
)


def bucket(rollout_id: str, tenant: str, identity: str) -> int:
    digest = hashlib.sha256(f"{rollout_id}\0{tenant}\0{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def identity(context: TenantContext) -> str:
    """Who a rollout keeps on one arm: the request's user, else its API key."""
    return f"user:{context.user}" if context.user else f"key:{context.key_id}"


def arm(rollout: Rollout, context: TenantContext) -> str:
    """`candidate` or `baseline` for this caller now."""
    share_buckets = round(rollout.share * BUCKETS / 100)
    return "candidate" if bucket(rollout.rollout_id, context.tenant, identity(context)) < share_buckets else "baseline"


def with_rollout(
    store: RolloutStore | None, config: GatewayConfig, context: TenantContext, planned: RouteResult
) -> RouteResult:
    """The planned route with the route's rollout applied: on the candidate's arm the candidate
    first, the baseline after it. A pinned route, or one whose first model is not the rollout's
    baseline (another tier of a complexity route), is left as it is; so is a route whose
    configuration has moved on (its model is no longer the baseline) or whose candidate is no
    longer a model it may call (gone from the configuration, or retired)."""
    if store is None or planned.pinned:
        return planned
    rollout = store.active(context.tenant, planned.route)
    if rollout is None or planned.candidates[0] not in (rollout.baseline, rollout.candidate):
        return planned
    settings = config.tenants[context.tenant].routes.get(planned.route)
    candidate = config.models.get(rollout.candidate)
    if settings is None or settings.model != rollout.baseline or candidate is None or candidate.lifecycle == "retired":
        return planned
    side = arm(rollout, context)
    variant = f"{rollout.rollout_id}:{side}"
    if side == "baseline":
        return planned.model_copy(update={"variant": variant})
    rest = [m for m in planned.candidates if m != rollout.candidate]
    return planned.model_copy(update={"candidates": [rollout.candidate, *rest], "variant": variant})


def start(
    store: RolloutStore,
    config: GatewayConfig,
    tenant: str,
    route: str,
    candidate: str,
    stages: tuple[float, ...] = DEFAULT_STAGES,
    gates: RolloutGates | None = None,
    actor: str = "cli",
    now: float | None = None,
    experiments: ExperimentStore | None = None,
    evals: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> Rollout:
    """A new running rollout of the tenant's route to `candidate` (ValueError when it cannot be).
    `evals`: the reports of one eval suite run on the baseline (or the route) and on the candidate;
    the rollout starts only if the candidate is not worse beyond the gates' `eval_margin`
    (`eval_gate`), and its start event keeps the comparison."""
    policy = config.tenants.get(tenant)
    if policy is None:
        raise ValueError(f"tenant {tenant} is not in this configuration")
    settings = policy.routes.get(route)
    if settings is None:
        raise ValueError(f"tenant {tenant} has no route {route}")
    if candidate not in config.models:
        raise ValueError(f"{candidate} is not a model of this configuration")
    if config.models[candidate].lifecycle == "retired":
        raise ValueError(f"{candidate} is retired")
    if candidate == settings.model:
        raise ValueError(f"route {route} already answers with {candidate}")
    if not stages or any(not 0.01 <= s <= 100 for s in stages) or list(stages) != sorted(set(stages)):
        raise ValueError("stages are increasing shares from 0.01 to 100 (e.g. 1,5,25,50,100)")
    current = store.active(tenant, route)
    if current is not None and current.status == "running":
        raise ValueError(f"route {route} of tenant {tenant} is already rolling out ({current.rollout_id})")
    if experiments is not None and experiments.active(tenant, route) is not None:
        raise ValueError(f"route {route} of tenant {tenant} runs an experiment: stop it first")
    gates = gates or RolloutGates()
    compared = eval_gate(evals, route, settings.model, candidate, gates) if evals is not None else None
    at = time.time() if now is None else now
    import uuid

    rollout = Rollout(
        rollout_id=f"ro_{uuid.uuid4().hex[:12]}",
        tenant=tenant,
        route=route,
        baseline=settings.model,
        candidate=candidate,
        stages=list(stages),
        gates=gates,
        started_at=at,
        stage_started_at=at,
        updated_at=at,
        reason="started",
    )
    store.save(
        rollout,
        RolloutEvent(
            rollout_id=rollout.rollout_id,
            at=at,
            action="start",
            stage=0,
            share=rollout.share,
            actor=actor,
            detail={"eval": compared} if compared is not None else {},
        ),
    )
    return rollout


def eval_gate(
    runs: tuple[dict[str, Any], dict[str, Any]], route: str, baseline: str, candidate: str, gates: RolloutGates
) -> dict[str, Any]:
    """The eval gate before a rollout starts: the candidate's run of a suite against the
    baseline's (or the route's) run of the same cases, paired (`evals.compare`), with an interval
    whose lower bound holds at the gates' confidence (one-sided). ValueError when the runs are not
    of those models and the same suite, or when the candidate is worse beyond `eval_margin`: its
    pass rate's difference from the baseline's may be below -margin. The comparison otherwise."""
    from .evals import compare

    base_run, candidate_run = runs
    if base_run.get("target") not in (baseline, route):
        raise ValueError(f"the baseline's eval run is of {base_run.get('target')!r}, not {baseline} (or route {route})")
    if candidate_run.get("target") != candidate:
        raise ValueError(f"the candidate's eval run is of {candidate_run.get('target')!r}, not {candidate}")
    if not base_run.get("suite") or base_run.get("suite") != candidate_run.get("suite"):
        raise ValueError("the eval runs are of different suites (or name none)")
    if len(base_run.get("results") or []) < MIN_EVAL_CASES:
        raise ValueError(f"an eval gate needs runs of at least {MIN_EVAL_CASES} cases to tell anything")
    found = compare(base_run, candidate_run, alpha=2 * (1 - gates.confidence))
    low = found["interval"][0]
    if low < -gates.eval_margin:
        raise ValueError(
            f"the candidate's eval pass rate {found['pass_rate_b']:.1%} against the baseline's "
            f"{found['pass_rate_a']:.1%} on {found['cases']} cases may be {-low:.1%} lower "
            f"({gates.confidence:.0%} confidence): more than the margin {gates.eval_margin:.1%}"
        )
    return {k: found[k] for k in ("cases", "pass_rate_a", "pass_rate_b", "difference", "interval", "p_value")}


def move(
    store: RolloutStore, rollout: Rollout, action: str, reason: str, actor: str, now: float, detail: dict[str, Any]
) -> Rollout:
    """`advance` (to the next stage, or `complete` after the last) or `rollback` (a running or a
    completed rollout), recorded; only if the rollout has not changed since it was read."""
    if rollout.status == "rolled_back" or (rollout.status == "completed" and action != "rollback"):
        raise ValueError(f"rollout {rollout.rollout_id} is {rollout.status}")
    if action == "rollback":
        update: dict[str, Any] = {"status": "rolled_back"}
    elif rollout.stage + 1 < len(rollout.stages):
        update = {"stage": rollout.stage + 1, "stage_started_at": now}
    else:
        action, update = "complete", {"status": "completed"}
    moved = rollout.model_copy(update={**update, "updated_at": now, "reason": reason})
    event = RolloutEvent(
        rollout_id=rollout.rollout_id,
        at=now,
        action=action,
        stage=moved.stage,
        share=moved.share,
        actor=actor,
        detail={"reason": reason, **detail},
    )
    store.save(moved, event, expected_updated_at=rollout.updated_at)
    return moved


@dataclass(frozen=True)
class Readings:
    """What the gates read: the candidate in this stage, the baseline over the rollout."""

    candidate_requests: int
    candidate_failures: int
    baseline_requests: int
    baseline_failures: int
    candidate_p95_ms: float | None
    baseline_p95_ms: float | None
    candidate_satisfaction: list[float]
    baseline_satisfaction: list[float]

    def as_detail(self) -> dict[str, Any]:
        return {
            "candidate": f"{self.candidate_failures} of {self.candidate_requests} failed",
            "baseline": f"{self.baseline_failures} of {self.baseline_requests} failed",
            "candidate_p95_ms": self.candidate_p95_ms,
            "baseline_p95_ms": self.baseline_p95_ms,
        }


def wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    """The Wilson score interval of a rate (0 to 1 with no observation)."""
    if n == 0:
        return 0.0, 1.0
    rate = successes / n
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


# What the gates count, from an audit record: (variant, outcome, model, latency_ms, ts, request_id).
AuditRow = tuple[str, str, str | None, float, float, str]
GATED_OUTCOMES = ("ok", "error", "filtered")  # requests a model was asked for


def readings(
    rows: list[AuditRow], rollout: Rollout, satisfaction: Callable[[dict[str, str]], dict[str, list[float]]]
) -> Readings:
    """The gates' readings from the rollout's audit rows (any store's): the candidate's in this
    stage, the baseline's over the rollout; the candidate's failures are its errors and the
    requests its arm sent on to the baseline. `satisfaction` gives each arm's satisfaction from
    its requests (request id -> arm)."""
    from ..alerts import percentile

    arms = (f"{rollout.rollout_id}:candidate", f"{rollout.rollout_id}:baseline")
    rows = [r for r in rows if r[0] in arms and r[1] in GATED_OUTCOMES and r[4] >= rollout.started_at]
    candidate = [r for r in rows if r[0] == arms[0] and r[4] >= rollout.stage_started_at]
    baseline = [r for r in rows if r[0] == arms[1]]
    failed_c = sum(r[1] == "error" or r[2] != rollout.candidate for r in candidate)
    failed_b = sum(r[1] == "error" for r in baseline)
    latency_c = [float(r[3]) for r in candidate if r[1] != "error" and r[2] == rollout.candidate]
    latency_b = [float(r[3]) for r in baseline if r[1] != "error"]
    given = satisfaction({r[5]: "candidate" for r in candidate} | {r[5]: "baseline" for r in baseline})
    return Readings(
        len(candidate),
        failed_c,
        len(baseline),
        failed_b,
        percentile(latency_c, 0.95) if latency_c else None,
        percentile(latency_b, 0.95) if latency_b else None,
        given.get("candidate", []),
        given.get("baseline", []),
    )


def read(query: QueryFn, rollout: Rollout) -> Readings:
    """The gates' readings from the local store's audit log and traces."""
    rows: list[Any] = list(
        query(
            "SELECT variant, outcome, model, latency_ms, ts, request_id FROM audit WHERE tenant = ? AND route = ? "
            "AND ts >= ? AND variant IN (?, ?) AND outcome IN ('ok', 'error', 'filtered')",
            (
                rollout.tenant,
                rollout.route,
                rollout.started_at,
                f"{rollout.rollout_id}:candidate",
                f"{rollout.rollout_id}:baseline",
            ),
        )
    )
    return readings(rows, rollout, lambda arms: _satisfaction(query, arms))


def satisfaction_of(feedback: dict[str, list[Feedback]]) -> dict[str, list[float]]:
    """Each arm's satisfaction (0 to 1) from its requests' thumbs and ratings."""
    return {arm: [f.satisfaction for f in given if f.kind != "task"] for arm, given in feedback.items()}


def _satisfaction(query: QueryFn, arms: dict[str, str]) -> dict[str, list[float]]:
    return satisfaction_of(feedback_of(query, arms))


def feedback_of(query: QueryFn, groups: dict[str, str]) -> dict[str, list[Feedback]]:
    """The feedback on some requests (request id -> group), by group, from their traces."""
    import sqlite3  # the gates' and reports', not the router's

    found: dict[str, list[Feedback]] = {}
    ids = list(groups)
    for at in range(0, len(ids), 500):
        chunk = ids[at : at + 500]
        try:
            rows: list[tuple[Any, ...]] = list(
                query(_FEEDBACK_OF.format(marks=", ".join("?" * len(chunk))), tuple(chunk))
            )
        except sqlite3.OperationalError as exc:  # a store that never kept a trace
            if "no such table" not in str(exc):
                raise
            return {}
        for request_id, value in rows:
            try:
                found.setdefault(groups[request_id], []).append(Feedback.model_validate_json(str(value)))
            except ValueError:  # a damaged entry is passed over
                continue
    return found


def verdict(rollout: Rollout, readings: Readings, alerts_firing: list[str]) -> tuple[str | None, str]:
    """("rollback" | "advance" | None, why) for a running rollout."""
    from statistics import NormalDist  # the gates', not the router's

    gates = rollout.gates
    z = NormalDist().inv_cdf(gates.confidence)  # one-sided: "worse" or "not worse", with confidence
    base_rate = readings.baseline_failures / readings.baseline_requests if readings.baseline_requests else 0.0
    low, high = wilson(readings.candidate_failures, readings.candidate_requests, z)
    allowed = base_rate + gates.error_margin
    if alerts_firing:
        return "rollback", f"the tenant's alerts fired: {', '.join(alerts_firing)}"
    if readings.candidate_requests >= _ROLLBACK_FLOOR and low > allowed:
        return "rollback", (
            f"the candidate failed {readings.candidate_failures} of {readings.candidate_requests} requests "
            f"(at least {low:.1%} with {gates.confidence:.0%} confidence) against the baseline's {base_rate:.1%} "
            f"+ {gates.error_margin:.1%}"
        )
    enough = readings.candidate_requests >= gates.min_requests
    slow = (
        enough
        and readings.candidate_p95_ms is not None
        and readings.baseline_p95_ms is not None
        and readings.candidate_p95_ms > gates.latency_ratio * readings.baseline_p95_ms
    )
    if slow:
        return "rollback", (
            f"the candidate's p95 latency {readings.candidate_p95_ms:.0f} ms is over {gates.latency_ratio:g}x "
            f"the baseline's {readings.baseline_p95_ms:.0f} ms"
        )
    c_fb, b_fb = readings.candidate_satisfaction, readings.baseline_satisfaction
    if min(len(c_fb), len(b_fb)) >= gates.min_feedback:
        c_mean, b_mean = sum(c_fb) / len(c_fb), sum(b_fb) / len(b_fb)
        if c_mean < b_mean - gates.feedback_margin:
            return "rollback", f"the candidate's satisfaction {c_mean:.2f} is below the baseline's {b_mean:.2f}"
    if enough and high <= allowed:
        return "advance", (
            f"the candidate failed {readings.candidate_failures} of {readings.candidate_requests} "
            f"(at most {high:.1%} with {gates.confidence:.0%} confidence; the baseline {base_rate:.1%})"
        )
    return None, "waiting for enough requests to tell"


class Evidence(Protocol):
    """What the gates read, wherever the deployment keeps it."""

    def readings(self, rollout: Rollout) -> Readings: ...

    def firing(self, tenants: set[str], now: float) -> dict[str, list[str]]:
        """The watched alerts firing now, by tenant (of `tenants`)."""
        ...


class LocalEvidence:
    """The local store: its audit log and traces, and the local alert evaluator's per-tenant
    error-rate and latency alerts."""

    def __init__(self, query: QueryFn, config: GatewayConfig) -> None:
        self.query, self.config = query, config

    def readings(self, rollout: Rollout) -> Readings:
        return read(self.query, rollout)

    def firing(self, tenants: set[str], now: float) -> dict[str, list[str]]:
        from ..alerts import LocalAlertHistory, evaluate

        found: dict[str, list[str]] = {}
        for state in evaluate(self.config, LocalAlertHistory(self.query), now):
            if state.firing and state.rule in WATCHED_ALERTS and state.tenant in tenants:
                found.setdefault(state.tenant, []).append(state.rule)
        return found


class RolloutController:
    """Evaluates the running rollouts' gates (`serve` every `interval_s`, the scheduled function
    on AWS, `llm-gateway rollout status --check` once) and moves them: advance, complete, roll back."""

    def __init__(self, store: RolloutStore, evidence: Evidence, clock: Callable[[], float] = time.time) -> None:
        self.store, self.evidence, self.clock = store, evidence, clock

    def check(self) -> list[Rollout]:
        """Each running rollout judged now; those that moved, as they now are."""
        now = self.clock()
        moved = []
        running = [r for r in self.store.all() if r.status == "running"]
        watching = {r.tenant for r in running if r.gates.watch_alerts}
        firing = self.evidence.firing(watching, now) if watching else {}
        for rollout in running:
            alerts = firing.get(rollout.tenant, []) if rollout.gates.watch_alerts else []
            try:
                action: str | None
                detail: dict[str, Any]
                if alerts:  # an alarm rolls back at once, whatever the readings would say (or fail to)
                    action, why, detail = "rollback", f"the tenant's alerts fired: {', '.join(alerts)}", {}
                else:
                    readings = self.evidence.readings(rollout)
                    action, why = verdict(rollout, readings, alerts)
                    detail = readings.as_detail()
                if action is None:
                    continue
                moved.append(move(self.store, rollout, action, why, "gates", now, detail))
            except ValueError:  # someone moved it meanwhile: judged again next time
                log.info("rollout %s changed while its gates were read", rollout.rollout_id)
                continue
            except Exception:  # one rollout's store or readings failing never stops the others' gates
                log.exception("judging rollout %s failed; judged again next time", rollout.rollout_id)
                continue
            log.warning("rollout %s of %s/%s: %s (%s)", rollout.rollout_id, rollout.tenant, rollout.route, action, why)
        return moved
