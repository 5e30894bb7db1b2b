"""Shadow traffic: a route may send a sampled copy of its live requests to another model after the
user's answer is done, to see how that model would have answered, at no risk to the user.

- **Off the user's path.** The finish step offers the answered request (`ShadowRunner.offer`: a
  sampling draw and a put on a bounded queue, nothing else); worker threads (`WORKERS`) call the
  shadow model later. A full queue drops the copy (counted), never waits. A shadow failure is recorded and
  counted, never seen by the user.
- **What is sent.** The request exactly as the live model got it (PII masked, the route's
  instructions and cap), to the shadow model alone: no fallback, no cache (neither read nor
  written), no moderation (its answer is never shown).
- **What it costs.** The route's `shadow.budget_usd_per_day` per tenant: once the day's shadow
  calls cost that much, no more copies that day. Shadow spend is kept with the pairs, not in the
  tenant's usage ledger or budgets.
- **What is kept.** Each pair (`shadow_pairs`): both models, answers (as the models wrote them:
  placeholders where PII was masked; the first 4,000 characters), latencies, costs, whether the
  answers are the same, and their similarity (the embedding scorer of the eval suites, run by
  `llm-gateway shadow report` before it sums the pairs up, not by the serving process).
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import GatewayError

if TYPE_CHECKING:
    from ..contracts import ChatCompletion, GatewayState
    from ..deps import Deps

log = logging.getLogger("llm_gateway.shadow")
QUEUE_SIZE = 1000
WORKERS = 4  # copies sent at once: a shadow model's latency is waiting, not CPU
_KEPT_CHARS = 4000
_DAY_S = 86_400.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS shadow_pairs (
    request_id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    route TEXT NOT NULL,
    ts REAL NOT NULL,
    live_model TEXT NOT NULL,
    shadow_model TEXT NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    live_ms REAL NOT NULL,
    shadow_ms REAL,
    live_cost_usd REAL NOT NULL,
    shadow_cost_usd REAL NOT NULL,
    same INTEGER,
    similarity REAL,
    live_answer TEXT NOT NULL,
    shadow_answer TEXT
);
CREATE INDEX IF NOT EXISTS shadow_pairs_route ON shadow_pairs (tenant, route, ts);
"""
_INSERT = "INSERT OR IGNORE INTO shadow_pairs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


@dataclass(frozen=True)
class ShadowJob:
    """A sampled copy to send: the answered request, the live answer, the shadow model, the route's
    daily shadow budget."""

    state: GatewayState
    live: ChatCompletion
    shadow_model: str
    budget_usd: float


class ShadowHandOff(Protocol):
    """Where the finish step offers answered requests: a local worker, or a queue on AWS."""

    def offer(self, state: GatewayState, deps: Deps, live: ChatCompletion) -> bool: ...


def draw(state: GatewayState, deps: Deps, rng: random.Random, live: ChatCompletion) -> ShadowJob | None:
    """The sampling draw: a copy for the route's shadow model, or None (no shadow, not drawn)."""
    tenant = state.guard.tenant.tenant if state.guard is not None and state.guard.tenant is not None else None
    if tenant is None or state.router is None or state.invoke is None:
        return None
    route = deps.config.tenants[tenant].routes.get(state.router.route)
    shadow = route.shadow if route is not None else None
    if shadow is None or rng.random() >= shadow.sample:
        return None
    return ShadowJob(state, live, shadow.model, shadow.budget_usd_per_day)


def shadow_pair(job: ShadowJob, deps: Deps, spent_today: Callable[[str, str, float], float]) -> dict[str, Any] | None:
    """Send the copy to the shadow model alone (its retries, no fallback, no cache) and build the
    pair (`shadow_pairs`' columns); None when the route's shadow budget for today is spent."""
    from ..invoke.step import invoke_step

    state = job.state
    assert state.router is not None and state.invoke is not None
    tenant, route = state.tenant().tenant, state.router.route
    if spent_today(tenant, route, deps.clock()) >= job.budget_usd:
        deps.metrics.count("shadow_dropped", tenant=tenant, route=route, reason="budget")
        return None
    copy = state.model_copy(
        update={"router": state.router.model_copy(update={"candidates": [job.shadow_model], "variant": None})}
    )
    t0 = time.monotonic()
    problem: str | None = None
    shadow_text: str | None = None
    try:
        answer = invoke_step(copy, deps)
    except GatewayError as error:
        outcome, problem = "error", error.code or type(error).__name__
        spent = error.spent or {}  # what its answered calls cost, where it paid for some
        shadow_cost = float(((spent.get("response") or {}).get("usage") or {}).get("cost_usd") or 0.0)
    else:
        outcome = "ok"
        shadow_text = _text(answer.response)
        shadow_cost = answer.response.usage.cost_usd
    shadow_ms = (time.monotonic() - t0) * 1000
    live_text = _text(job.live)
    same = None if shadow_text is None else live_text.strip() == shadow_text.strip()
    deps.metrics.count("shadow_requests", tenant=tenant, route=route, model=job.shadow_model, outcome=outcome)
    return {
        "request_id": state.request_id,
        "tenant": tenant,
        "route": route,
        "ts": deps.clock(),
        "live_model": state.invoke.model,
        "shadow_model": job.shadow_model,
        "outcome": outcome,
        "error": problem,
        "live_ms": state.invoke.latency_ms,
        "shadow_ms": round(shadow_ms, 3),
        "live_cost_usd": job.live.usage.cost_usd,
        "shadow_cost_usd": shadow_cost,
        "same": same,
        "similarity": 1.0 if same else None,  # the embedding scorer runs later, off the serving process's CPU
        "live_answer": live_text[:_KEPT_CHARS],
        "shadow_answer": None if shadow_text is None else shadow_text[:_KEPT_CHARS],
    }


COLUMNS = (
    "request_id",
    "tenant",
    "route",
    "ts",
    "live_model",
    "shadow_model",
    "outcome",
    "error",
    "live_ms",
    "shadow_ms",
    "live_cost_usd",
    "shadow_cost_usd",
    "same",
    "similarity",
    "live_answer",
    "shadow_answer",
)


class ShadowRunner:
    """The local runtime's shadow worker and the pairs it keeps (SQLite, the store `serve` uses)."""

    def __init__(self, path: str | Path = ":memory:", seed: int | None = None, workers: int = WORKERS) -> None:
        from ..adapters.local.sqlite import open_database  # the local runtime's: not the functions' on AWS

        self._db = open_database(path)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._queue: queue.Queue[ShadowJob | None] = queue.Queue(QUEUE_SIZE)
        self._draw = random.Random(seed)  # noqa: S311 - sampling traffic, not a secret
        self._deps: Deps | None = None
        self._spent: dict[tuple[str, str, float], float] = {}  # (tenant, route, day) -> shadow USD
        self._workers = [
            threading.Thread(target=self._work, name=f"shadow-{i}", daemon=True) for i in range(max(1, workers))
        ]
        for worker in self._workers:
            worker.start()

    def offer(self, state: GatewayState, deps: Deps, live: ChatCompletion) -> bool:
        """After a model answered the user: maybe queue a copy for the route's shadow model.
        Constant time; True when a copy was queued."""
        job = draw(state, deps, self._draw, live)
        if job is None:
            return False
        self._deps = deps
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            route = job.state.router.route if job.state.router is not None else ""
            deps.metrics.count("shadow_dropped", tenant=job.state.tenant().tenant, route=route, reason="queue_full")
            return False
        return True

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                self._shadow(job)
            except Exception:  # a pair lost, never the worker
                log.exception("a shadow request failed")
            finally:
                self._queue.task_done()

    def _shadow(self, job: ShadowJob) -> None:
        assert self._deps is not None
        pair = shadow_pair(job, self._deps, self.spent_today)
        if pair is not None:
            with self._lock:
                self._db.execute(_INSERT, tuple(pair[c] for c in COLUMNS))
                key = (pair["tenant"], pair["route"], pair["ts"] - pair["ts"] % _DAY_S)
                if key in self._spent:
                    self._spent[key] += pair["shadow_cost_usd"]

    def spent_today(self, tenant: str, route: str, now: float) -> float:
        """The route's shadow spend today: summed from the pairs once a day, then kept up as pairs
        are added (checked before each copy: copies in flight at once may pass the budget by theirs)."""
        key = (tenant, route, now - now % _DAY_S)
        with self._lock:
            if key not in self._spent:
                found = self._db.execute(
                    "SELECT SUM(shadow_cost_usd) FROM shadow_pairs WHERE tenant = ? AND route = ? AND ts >= ?",
                    (tenant, route, key[2]),
                ).fetchone()
                self._spent = {k: v for k, v in self._spent.items() if k[2] == key[2]}  # earlier days: forgotten
                self._spent[key] = float(found[0] or 0.0)
            return self._spent[key]

    def score_pending(self) -> int:
        """Score the pairs answered since the last call (the similarity of the two answers, by the
        eval suites' embedding scorer), as `llm-gateway shadow report` does before it sums up: the
        serving process keeps its CPU for its requests. How many were scored."""
        with self._lock:
            rows = self._db.execute(
                "SELECT request_id, live_answer, shadow_answer FROM shadow_pairs "
                "WHERE outcome = 'ok' AND similarity IS NULL"
            ).fetchall()
        scored = [(similarity(live, shadow), request_id) for request_id, live, shadow in rows]
        with self._lock, self._db:
            self._db.executemany("UPDATE shadow_pairs SET similarity = ? WHERE request_id = ?", scored)
        return len(scored)

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued copy has been handled (for tests and shutdown); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def pairs(self, tenant: str | None = None, route: str | None = None, since: float = 0.0) -> list[dict[str, Any]]:
        with self._lock:
            cursor = self._db.execute(
                "SELECT * FROM shadow_pairs WHERE (? IS NULL OR tenant = ?) AND (? IS NULL OR route = ?) AND ts >= ? "
                "ORDER BY ts",
                (tenant, tenant, route, route, since),
            )
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        """Wait a little for the queued copies, then stop the workers (copies still queued are lost)."""
        self.drain(timeout_s=10.0)
        while True:  # empty what is left, so that each worker's stop fits in the queue
            try:
                self._queue.get_nowait()
                self._queue.task_done()
            except queue.Empty:
                break
        for _ in self._workers:
            self._queue.put_nowait(None)
        for worker in self._workers:
            worker.join(timeout=5)
        with self._lock:
            self._db.close()


def _text(response: ChatCompletion) -> str:
    return "\n".join(c.message.content or "" for c in response.choices)


def similarity(live: str, shadow: str) -> float | None:
    """The answers' similarity (the eval suites' embedding scorer; None where the embedding model
    cannot run)."""
    from .scorers import EvalCase, score

    case = EvalCase.model_validate(
        {"id": "shadow", "messages": [{"role": "user", "content": "-"}], "scorer": "similarity", "reference": live}
    )
    try:
        return round(score(case, shadow).value, 4)
    except Exception:  # the embedding model's files: the pair is kept without a similarity
        log.exception("scoring a shadow pair failed")
        return None


def summary(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """What `llm-gateway shadow report` shows for a set of pairs."""
    from ..alerts import percentile

    answered = [p for p in pairs if p["outcome"] == "ok"]
    similar = [p["similarity"] for p in answered if p["similarity"] is not None]
    live_ms = [float(p["live_ms"]) for p in answered]
    shadow_ms = [float(p["shadow_ms"]) for p in answered]
    return {
        "pairs": len(pairs),
        "shadow_failed": len(pairs) - len(answered),
        "same_answer": sum(bool(p["same"]) for p in answered),
        "agreement": sum(s >= 0.8 for s in similar) / len(similar) if similar else None,
        "similarity_mean": sum(similar) / len(similar) if similar else None,
        "cost_usd": {
            "live": round(sum(p["live_cost_usd"] for p in pairs), 8),
            "shadow": round(sum(p["shadow_cost_usd"] for p in pairs), 8),
        },
        "latency_ms": {
            "live": {"p50": percentile(live_ms, 0.5), "p95": percentile(live_ms, 0.95)} if live_ms else None,
            "shadow": {"p50": percentile(shadow_ms, 0.5), "p95": percentile(shadow_ms, 0.95)} if shadow_ms else None,
        },
        "models": sorted({f"{p['live_model']} -> {p['shadow_model']}" for p in pairs}),
    }
