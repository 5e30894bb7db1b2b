"""The five alerts over the local store: synthetic traffic that should trip each one trips it (for
that tenant only), traffic at its baseline trips none; `serve`'s watcher posts each change to a
webhook once; `llm-gateway alerts` lists the state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llm_gateway.adapters.local.sqlite import SqliteStore
from llm_gateway.adapters.local.traces import SqliteTraceStore
from llm_gateway.alerts import ALERTS, AlertWatcher, LocalAlertHistory, evaluate
from llm_gateway.cli.main import main
from llm_gateway.config import GatewayConfig, parse_config
from llm_gateway.errors import ConfigError
from llm_gateway.ports import Feedback, StepTrace, Trace
from tests.contract.records import audit_record
from tests.support.servers import serve

NOW = 1_790_000_000.0
HOUR, DAY = 3600.0, 86_400.0
TENANTS = ["calm", "slow", "failing", "spending", "unhappy", "attacked"]


def config_yaml(storage: Path | None = None, webhook: str | None = None) -> str:
    head = f"storage_path: {storage}\n" if storage else ""
    if webhook:
        head += f"alerting: {{webhook_url: '{webhook}', interval_s: 1}}\n"
    tenants = "".join(f"  {name}:\n    routes: {{default: {{model: echo}}}}\n" for name in TENANTS)
    return head + "models:\n  echo: {provider: echo}\ntenants:\n" + tenants


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Path, SqliteStore, SqliteTraceStore]]:
    db = tmp_path / "gateway.db"
    audit, traces = SqliteStore(db, checkpoint_interval_s=0), SqliteTraceStore(db)
    yield db, audit, traces
    audit.close()
    traces.close()


def traffic(audit: SqliteStore, tenant: str, count: int, start: float, end: float, **fields: Any) -> None:
    """`count` audit records spread over [start, end)."""
    for i in range(count):
        audit.record(audit_record(tenant, ts=start + (end - start) * i / count, **fields))


def baseline(audit: SqliteStore, tenant: str) -> None:
    """A week of ordinary traffic, and the last hour of the same."""
    traffic(audit, tenant, 1400, NOW - 8 * DAY, NOW - DAY, cost_usd=0.001)
    traffic(audit, tenant, 100, NOW - DAY, NOW - HOUR, cost_usd=0.001)
    traffic(audit, tenant, 120, NOW - HOUR, NOW, cost_usd=0.001, latency_ms=300.0)
    traffic(audit, tenant, 4, NOW - 5 * DAY, NOW - 4 * DAY, outcome="blocked")  # a few refusals, now and then
    traffic(audit, tenant, 1, NOW - 30 * 60, NOW - 20 * 60, outcome="error", error_code="all_models_failed")


def feedback_on(traces: SqliteTraceStore, tenant: str, scores: list[int], start: float, end: float) -> None:
    for i, score in enumerate(scores):
        at = start + (end - start) * i / len(scores)
        request_id = f"{tenant}-{start}-{i}"
        traces.put(
            Trace(
                request_id=request_id,
                tenant=tenant,
                ts=at - 10,
                expires_at=NOW + 30 * DAY,
                outcome="ok",
                latency_ms=100.0,
                steps=[StepTrace(name="finish", detail={})],
            )
        )
        traces.add_feedback(tenant, request_id, Feedback(kind="thumbs", score=score, at=at), at)


def load(audit: SqliteStore, traces: SqliteTraceStore) -> None:
    for tenant in TENANTS:
        baseline(audit, tenant)
        feedback_on(traces, tenant, [1] * 18 + [-1] * 2, NOW - 14 * DAY, NOW - 7 * DAY)  # 90 % satisfied
        recent = [1] * 10 + [-1] * 10 if tenant == "unhappy" else [1] * 18 + [-1] * 2
        feedback_on(traces, tenant, recent, NOW - 7 * DAY, NOW)
    traffic(audit, "slow", 30, NOW - 10 * 60, NOW, latency_ms=9_000.0)
    traffic(audit, "failing", 12, NOW - 10 * 60, NOW, outcome="error", error_code="all_models_failed")
    traffic(audit, "spending", 50, NOW - 20 * HOUR, NOW, cost_usd=0.2)
    traffic(audit, "attacked", 25, NOW - 50 * 60, NOW, outcome="blocked", guards="prompt_injection:block:0.98")


def config(storage: Path | None = None, webhook: str | None = None) -> GatewayConfig:
    return parse_config(config_yaml(storage, webhook))


def test_each_alert_fires_on_the_traffic_that_should_trip_it_and_none_at_baseline(
    store: tuple[Path, SqliteStore, SqliteTraceStore],
) -> None:
    _, audit, traces = store
    load(audit, traces)
    states = evaluate(config(), LocalAlertHistory(audit.query), NOW)
    firing = {(s.tenant, s.rule) for s in states if s.firing}
    assert firing == {
        ("slow", "latency_p95"),
        ("failing", "error_rate"),
        ("spending", "daily_cost"),
        ("unhappy", "satisfaction_drop"),
        ("attacked", "guard_trigger_rate"),
    }
    calm = {s.rule: s for s in states if s.tenant == "calm"}
    assert set(calm) == {rule.name for rule in ALERTS}
    assert all(s.value is not None for s in calm.values())  # measured, and below each threshold
    assert calm["latency_p95"].value == pytest.approx(0.3) and calm["daily_cost"].value == pytest.approx(1.0, rel=0.2)


def test_a_tenants_threshold_overrides_the_default(store: tuple[Path, SqliteStore, SqliteTraceStore]) -> None:
    _, audit, traces = store
    load(audit, traces)
    strict = parse_config(config_yaml().replace("  calm:\n", "  calm:\n    alerts: {latency_p95: 0.2}\n"))
    states = evaluate(strict, LocalAlertHistory(audit.query), NOW)
    assert {s.rule for s in states if s.tenant == "calm" and s.firing} == {"latency_p95"}
    with pytest.raises(ConfigError, match="unknown alerts"):
        parse_config(config_yaml().replace("  calm:\n", "  calm:\n    alerts: {latency_p99: 1}\n"))


def test_the_watcher_posts_each_change_once_to_the_webhook(store: tuple[Path, SqliteStore, SqliteTraceStore]) -> None:
    _, audit, traces = store
    received: list[dict[str, Any]] = []

    async def hook(request: Request) -> Response:
        received.append(json.loads(await request.body()))
        return Response(status_code=204)

    with serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as url:
        now = [NOW]
        watcher = AlertWatcher(config(webhook=url + "/hook"), LocalAlertHistory(audit.query), lambda: now[0])
        load(audit, traces)
        first = watcher.check()
        assert {(s.tenant, s.rule) for what, s in first if what == "firing"} >= {("slow", "latency_p95")}
        assert len(received) == len(first) == 5
        assert watcher.check() == [] and len(received) == 5  # nothing changed, nothing posted again
        now[0] = NOW + 20 * 60  # the slow and failing windows have passed
        resolved = watcher.check()
        assert {(s.tenant, s.rule) for what, s in resolved if what == "resolved"} >= {
            ("slow", "latency_p95"),
            ("failing", "error_rate"),
        }
    posted = {(r["tenant"], r["alert"], r["state"]) for r in received}
    assert ("slow", "latency_p95", "firing") in posted and ("slow", "latency_p95", "resolved") in posted
    assert all(r["threshold"] > 0 and r["at"] >= NOW for r in received)


def test_the_cli_lists_every_tenants_alerts(
    store: tuple[Path, SqliteStore, SqliteTraceStore], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, audit, traces = store
    traffic(audit, "failing", 30, NOW - 60, NOW, outcome="error", error_code="all_models_failed")
    traces.flush()
    path = tmp_path / "gateway.yaml"
    path.write_text(config_yaml(db))
    assert main(["alerts", "--config", str(path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == len(TENANTS) * len(ALERTS)
    assert all(not state["firing"] for state in listed)  # evaluated now: these records are years old
    assert main(["alerts", "--config", str(path)]) == 0
    assert capsys.readouterr().out.count("\n") == len(TENANTS) * len(ALERTS)
