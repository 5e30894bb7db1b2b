"""The `BudgetLedger` port on SQLite (several connections on one file) and on DynamoDB (moto's
server): all-or-nothing reservations, settle once, reclaim expired holds, and caps that hold when
many reservations race."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.adapters.aws.budget import DynamoBudgetLedger, budget_key_schema
from llm_gateway.adapters.local.budget import SqliteBudgetLedger
from llm_gateway.ports import BudgetLimit, BudgetRefused, BudgetUsage
from tests.support.moto_server import MotoServer

Factory = Callable[[], Any]  # a new ledger object on the same store (another worker)


@pytest.fixture(params=["sqlite", "dynamodb"])
def ledgers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    if request.param == "sqlite":
        opened: list[SqliteBudgetLedger] = []

        def sqlite() -> SqliteBudgetLedger:
            opened.append(SqliteBudgetLedger(tmp_path / "budgets.db"))
            return opened[-1]

        yield sqlite
        for ledger in opened:
            ledger.close()
        return
    moto: MotoServer = request.getfixturevalue("moto_serialised")
    table = f"budgets-{uuid.uuid4().hex[:8]}"
    moto.client("dynamodb").create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **budget_key_schema())
    yield lambda: DynamoBudgetLedger(table, moto.client("dynamodb", max_pool_connections=64))


DAY = BudgetLimit("acme/tenant/day:2026-11-28", max_nusd=1_000, max_tokens=None)
USER = BudgetLimit("acme/user:u1/month:2026-11", max_nusd=None, max_tokens=100)


def test_a_reservation_holds_then_settles_to_the_actual_cost(ledgers: Factory) -> None:
    ledger = ledgers()
    ledger.reserve("r1", [DAY, USER], 600, 40, expires_at=100.0, now=0.0)
    assert ledger.usage(DAY.key) == BudgetUsage(0, 0, 600, 40)
    assert ledger.settle("r1", 250, 30) is True
    assert ledger.usage(DAY.key) == BudgetUsage(250, 30, 0, 0)
    assert ledger.usage(USER.key) == BudgetUsage(250, 30, 0, 0)
    assert ledger.settle("r1", 250, 30) is False  # a retried finish charges nothing more
    assert ledger.usage(DAY.key).spent_nusd == 250


def test_a_reservation_that_does_not_fit_one_budget_touches_none(ledgers: Factory) -> None:
    ledger = ledgers()
    ledger.reserve("r1", [DAY, USER], 100, 90, expires_at=100.0, now=0.0)
    with pytest.raises(BudgetRefused) as refused:
        ledger.reserve("r2", [DAY, USER], 100, 20, expires_at=100.0, now=0.0)  # tokens: 90 + 20 > 100
    assert refused.value.key == USER.key
    assert ledger.usage(DAY.key) == BudgetUsage(0, 0, 100, 90)
    assert ledger.settle("r2", 0, 0) is False
    ledger.reserve("r1", [DAY, USER], 100, 90, expires_at=100.0, now=0.0)  # the same id again: no second hold
    assert ledger.usage(DAY.key).reserved_nusd == 100


def test_expired_holds_are_reclaimed_and_make_room(ledgers: Factory) -> None:
    ledger = ledgers()
    ledger.reserve("dead", [DAY], 900, 0, expires_at=10.0, now=0.0)
    with pytest.raises(BudgetRefused):
        ledger.reserve("r2", [DAY], 200, 0, expires_at=20.0, now=5.0)
    ledger.reserve("r3", [DAY], 200, 0, expires_at=30.0, now=11.0)  # the dead request's hold is reclaimed
    assert ledger.usage(DAY.key) == BudgetUsage(0, 0, 200, 0)
    assert ledger.settle("dead", 900, 0) is False  # too late: it was reclaimed
    assert ledger.reclaim_expired(now=31.0) == 1
    assert ledger.usage(DAY.key) == BudgetUsage(0, 0, 0, 0)


def test_racing_reservations_never_pass_the_cap(ledgers: Factory) -> None:
    # 200 reservations of 30 against a cap of 1,500 from 8 workers at once: exactly 50 fit;
    # settling each to 18 frees room, so more than 50 are served, but spend stays within the cap.
    cap = BudgetLimit("acme/tenant/day:race", max_nusd=1_500, max_tokens=None)
    workers = [ledgers() for _ in range(8)]
    served: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(200)

    def one(i: int) -> None:
        ledger = workers[i % len(workers)]
        start.wait()
        try:
            ledger.reserve(f"r{i}", [cap], 30, 0, expires_at=1e12, now=0.0)
        except BudgetRefused:
            with lock:
                refused.append(f"r{i}")
            return
        assert ledger.settle(f"r{i}", 18, 0)
        with lock:
            served.append(f"r{i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    usage = workers[0].usage(cap.key)
    assert len(served) + len(refused) == 200
    assert usage.spent_nusd == 18 * len(served) <= 1_500
    assert usage.reserved_nusd == 0
    assert len(served) >= 50
    states = workers[0].reservation_states()
    assert sorted(states) == sorted(served) and set(states.values()) == {"settled"}
