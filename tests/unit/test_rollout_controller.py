"""The gates' controller over any store and evidence: a firing alarm rolls back at once, even when
the readings cannot be had; one rollout whose readings fail never stops another's gates."""

from __future__ import annotations

from pathlib import Path

from llm_gateway.adapters.local.rollouts import SqliteRolloutStore
from llm_gateway.experiments.rollouts import Readings, RolloutController
from llm_gateway.ports import Rollout, RolloutEvent, RolloutGates

NOW = 1_790_000_000.0


class Evidence:
    """Readings that fail for one rollout and hold for the others; alarms as given."""

    def __init__(self, broken: str, firing: dict[str, list[str]]) -> None:
        self.broken, self.alarms = broken, firing
        self.read: list[str] = []

    def readings(self, rollout: Rollout) -> Readings:
        self.read.append(rollout.rollout_id)
        if rollout.rollout_id == self.broken:
            raise RuntimeError("the audit table kept throttling")
        return Readings(500, 0, 500, 0, 10.0, 10.0, [], [])

    def firing(self, tenants: set[str], now: float) -> dict[str, list[str]]:
        return {t: rules for t, rules in self.alarms.items() if t in tenants}


def start(store: SqliteRolloutStore, rollout_id: str, tenant: str, route: str, watch: bool = True) -> None:
    rollout = Rollout(
        rollout_id=rollout_id,
        tenant=tenant,
        route=route,
        baseline="gpt-old",
        candidate="gpt-new",
        stages=[5.0, 100.0],
        gates=RolloutGates(min_requests=100, watch_alerts=watch),
        started_at=NOW,
        stage_started_at=NOW,
        updated_at=NOW,
    )
    store.save(rollout, RolloutEvent(rollout_id=rollout_id, at=NOW, action="start", stage=0, share=5.0, actor="t"))


def test_an_alarm_rolls_back_without_readings_and_a_failing_rollout_never_stops_the_others(tmp_path: Path) -> None:
    store = SqliteRolloutStore(tmp_path / "rollouts.db")
    start(store, "ro_alarmed", "acme", "default")
    start(store, "ro_broken", "globex", "default")
    start(store, "ro_healthy", "initech", "default")
    evidence = Evidence(broken="ro_broken", firing={"acme": ["error_rate"]})
    moved = RolloutController(store, evidence, clock=lambda: NOW + 60).check()
    assert {(r.rollout_id, r.status, r.share) for r in moved} == {
        ("ro_alarmed", "rolled_back", 0.0),
        ("ro_healthy", "running", 100.0),
    }
    assert "ro_alarmed" not in evidence.read  # rolled back on the alarm alone
    assert store.get("ro_broken").status == "running"  # judged again next time  # type: ignore[union-attr]
    store.close()
