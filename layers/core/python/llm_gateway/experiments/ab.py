"""A/B experiments on a tenant's route: variants of model, parameters or system prompt, weighted,
each user sticky on one (a hash of the experiment, the tenant and the user), analysed so that the
report may be read every day.

- Assignment (`with_experiment`, applied by the guard step after any rollout): the variant's model
  first (the route's others after it), its parameters and system prompt over the request's; the
  variant is kept in the audit record and named in `x-gateway-variant` (`<id>:<variant>`).
- Metrics per variant (`analyse`), from the audit log and the traces: requests, errors, p95
  latency, cost, tokens, and the primary metric: `task_success` (the share of `kind: task`
  feedback that says 1) or `satisfaction` (the share of thumbs and ratings that are positive).
- The decision: each variant against the control with the mSPRT of `experiments.stats`
  (`Sequential`, mixing scale the planned `mde`): an always-valid p-value and interval of the
  difference. Read as often as one likes; "better" or "worse" once p < alpha.
- Guardrail: a variant whose error rate is above the control's + `error_margin` with 95 %
  confidence (Wilson) stops the experiment (`check`, run by `serve` with the rollouts' gates).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..ports import Experiment, ExperimentStore, Feedback, Variant
from .rollouts import feedback_of, wilson

if TYPE_CHECKING:
    from ..alerts import QueryFn
    from ..config import GatewayConfig
    from ..contracts import RouteResult, TenantContext

log = logging.getLogger("llm_gateway.experiments")
PARAMS = ("temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty", "seed")
_BUCKETS = 10_000
_GUARDRAIL_FLOOR = 20  # a variant's requests before its guardrail may stop the experiment


def variant_for(experiment: Experiment, context: TenantContext) -> Variant:
    """The caller's variant: a fixed bucket, split by the variants' weights."""
    who = f"user:{context.user}" if context.user else f"key:{context.key_id}"
    digest = hashlib.sha256(f"{experiment.experiment_id}\0{context.tenant}\0{who}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % _BUCKETS / _BUCKETS * sum(v.weight for v in experiment.variants)
    for variant in experiment.variants:
        point -= variant.weight
        if point < 0:
            return variant
    return experiment.variants[-1]


def with_experiment(
    store: ExperimentStore | None, config: GatewayConfig, context: TenantContext, planned: RouteResult
) -> RouteResult:
    """The planned route with the route's running experiment applied (a route under a rollout, or
    pinned by metadata, is left as it is; so is one whose experiment names a model the
    configuration no longer has, or has retired)."""
    if store is None or planned.pinned or planned.variant is not None:
        return planned
    experiment = store.active(context.tenant, planned.route)
    if experiment is None:
        return planned
    for named in {v.model for v in experiment.variants if v.model is not None}:
        if named not in config.models or config.models[named].lifecycle == "retired":
            return planned
    variant = variant_for(experiment, context)
    update: dict[str, Any] = {
        "variant": f"{experiment.experiment_id}:{variant.name}",
        "params": dict(variant.params) or None,
        "system_prompt": variant.system_prompt,
    }
    if variant.model is not None:
        update["candidates"] = [variant.model, *[m for m in planned.candidates if m != variant.model]]
    return planned.model_copy(update=update)


def start(
    store: ExperimentStore,
    config: GatewayConfig,
    tenant: str,
    route: str,
    variants: list[Variant],
    mde: float,
    metric: str = "task_success",
    alpha: float = 0.05,
    rollouts: Any = None,
) -> Experiment:
    """A running experiment (ValueError when it cannot be)."""
    policy = config.tenants.get(tenant)
    if policy is None or route not in policy.routes:
        raise ValueError(f"tenant {tenant} has no route {route}")
    names = [v.name for v in variants]
    if len(variants) < 2 or len(set(names)) != len(names):
        raise ValueError("an experiment has at least two variants with different names")
    for variant in variants:
        if variant.model is not None and variant.model not in config.models:
            raise ValueError(f"variant {variant.name}: {variant.model} is not a model of this configuration")
        if variant.model is not None and config.models[variant.model].lifecycle == "retired":
            raise ValueError(f"variant {variant.name}: {variant.model} is retired")
        unknown = sorted(set(variant.params) - set(PARAMS))
        if unknown:
            raise ValueError(f"variant {variant.name}: parameters are {', '.join(PARAMS)}, not {', '.join(unknown)}")
    if not 0 < abs(mde) < 1 or not 0 < alpha < 1:
        raise ValueError("the effect (--mde) is between 0 and 1, alpha too")
    if store.active(tenant, route) is not None:
        raise ValueError(f"route {route} of tenant {tenant} already runs an experiment")
    running = rollouts.active(tenant, route) if rollouts is not None else None
    if running is not None and running.status == "running":
        raise ValueError(f"route {route} of tenant {tenant} is rolling out ({running.rollout_id})")
    import uuid

    experiment = Experiment(
        experiment_id=f"ex_{uuid.uuid4().hex[:12]}",
        tenant=tenant,
        route=route,
        variants=variants,
        metric=metric,
        mde=abs(mde),
        alpha=alpha,
        started_at=time.time(),
    )
    store.save(experiment)
    return experiment


def stop(store: ExperimentStore, experiment: Experiment, reason: str, winner: str | None = None) -> Experiment:
    if experiment.status != "running":
        raise ValueError(f"experiment {experiment.experiment_id} is already stopped")
    if winner is not None and winner not in {v.name for v in experiment.variants}:
        raise ValueError(f"no variant {winner}")
    stopped = experiment.model_copy(
        update={"status": "stopped", "stopped_at": time.time(), "reason": reason, "winner": winner}
    )
    store.save(stopped)
    return stopped


# What the analysis counts, from an audit record:
# (variant, outcome, latency_ms, cost_usd, prompt_tokens, completion_tokens, request_id).
AuditRow = tuple[str, str, float, float, int, int, str]


def analyse(query: QueryFn, experiment: Experiment) -> dict[str, Any]:
    """Each variant's numbers, and each treatment against the control, from the local store."""
    rows: list[Any] = list(
        query(
            "SELECT variant, outcome, latency_ms, cost_usd, prompt_tokens, completion_tokens, request_id FROM audit "
            "WHERE tenant = ? AND route = ? AND ts >= ? AND variant LIKE ?",
            (experiment.tenant, experiment.route, experiment.started_at, f"{experiment.experiment_id}:%"),
        )
    )
    return analysed(rows, feedback_of(query, {r[6]: r[0] for r in rows}), experiment)


def analysed(rows: list[AuditRow], feedback: dict[str, list[Feedback]], experiment: Experiment) -> dict[str, Any]:
    """Each variant's numbers, and each treatment against the control, from the experiment's
    audit rows and the feedback on them (by variant label), whichever store they come from."""
    from statistics import NormalDist

    from ..alerts import percentile
    from .stats import Sequential  # the report's and the gates', never the router's

    ids = {v.name: f"{experiment.experiment_id}:{v.name}" for v in experiment.variants}
    stats: dict[str, dict[str, Any]] = {}
    for name, label in ids.items():
        mine = [r for r in rows if r[0] == label and r[1] != "blocked"]
        answered = [float(r[2]) for r in mine if r[1] != "error"]
        outcomes = _outcomes(experiment, feedback.get(label, []))
        stats[name] = {
            "requests": len(mine),
            "errors": sum(r[1] == "error" for r in mine),
            "latency_p95_ms": percentile(answered, 0.95) if answered else None,
            "cost_usd": round(sum(float(r[3]) for r in mine), 8),
            "tokens": {"input": sum(int(r[4]) for r in mine), "output": sum(int(r[5]) for r in mine)},
            "metric_n": len(outcomes),
            "metric_successes": sum(outcomes),
            "metric_rate": sum(outcomes) / len(outcomes) if outcomes else None,
        }

    control = experiment.variants[0].name
    comparisons = {}
    z = NormalDist().inv_cdf(0.95)
    for variant in experiment.variants[1:]:
        a, b = stats[control], stats[variant.name]
        reading = Sequential(experiment.mde, experiment.alpha).look(
            a["metric_successes"], a["metric_n"], b["metric_successes"], b["metric_n"]
        )
        base = a["errors"] / a["requests"] if a["requests"] else 0.0
        low, _ = wilson(b["errors"], b["requests"], z)
        hurts = b["requests"] >= _GUARDRAIL_FLOOR and low > base + experiment.error_margin
        verdict = "no evidence yet"
        if reading.significant:
            verdict = "better" if reading.difference > 0 else "worse"
        comparisons[variant.name] = {
            "difference": reading.difference,
            "interval": [reading.low, reading.high],
            "p_value": reading.p_value,
            "verdict": verdict,
            "guardrail": f"error rate at least {low:.1%} against the control's {base:.1%}" if hurts else "ok",
            "hurts": hurts,
        }
    return {
        "experiment": experiment.model_dump(),
        "control": control,
        "variants": stats,
        "against_control": comparisons,
    }


def _outcomes(experiment: Experiment, given: list[Feedback]) -> list[int]:
    """The primary metric's 0/1 outcomes from a variant's feedback."""
    if experiment.metric == "task_success":
        return [int(f.score == 1) for f in given if f.kind == "task"]
    return [int(f.satisfaction >= 0.5) for f in given if f.kind != "task"]


def check(store: ExperimentStore, analyse: Callable[[Experiment], dict[str, Any]]) -> list[Experiment]:
    """Stop each running experiment a variant of which hurts (its guardrail); those stopped.
    `analyse`: an experiment's report (`analyse` over the local store, or another store's)."""
    stopped = []
    for experiment in store.all():
        if experiment.status != "running":
            continue
        try:
            hurting = {k: v for k, v in analyse(experiment)["against_control"].items() if v["hurts"]}
        except Exception:  # one experiment's readings failing never stops the others' guardrails
            log.exception("judging experiment %s failed; judged again next time", experiment.experiment_id)
            continue
        if hurting:
            why = "; ".join(f"{name}: {v['guardrail']}" for name, v in hurting.items())
            stopped.append(stop(store, experiment, f"guardrail: {why}"))
            log.warning("experiment %s stopped by its guardrail: %s", experiment.experiment_id, why)
    return stopped
