"""Budgets through the gateway: 200 simultaneous requests at a tenant whose daily budget covers
about 50 answers, against a priced model on a wire-compatible server (real openai SDK path), with
the budget ledger on SQLite (four workers on one file) and on DynamoDB (moto's server)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.adapters.aws.budget import DynamoBudgetLedger, budget_key_schema
from llm_gateway.adapters.local.budget import SqliteBudgetLedger
from llm_gateway.adapters.local.memory import MemoryRateLimiter
from llm_gateway.adapters.local.sqlite import SqliteStore
from llm_gateway.budgets import NANO, budget_key, nano_usd, worst_case
from llm_gateway.config import parse_config
from llm_gateway.contracts import GatewayState
from llm_gateway.deps import Deps
from llm_gateway.errors import BudgetExceeded, ConfigError, GatewayError
from llm_gateway.observability import InMemoryMetrics
from llm_gateway.providers.base import default_registry
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, hash_key, make_state
from tests.support.fake_providers import FakeServer, delay, ok
from tests.support.moto_server import MotoServer, moto_server

# 1,000 $/Mtok in and out: a token costs 0.001 $. Each answer: 12 prompt + 6 completion tokens
# (0.018 $); the worst case held for "budget please 123" with max_tokens 10 is (17 + 8) + 10 = 35
# tokens (0.035 $). The budget covers 50 answers, or 25 worst cases at once.
ANSWER_USD = 0.018
BUDGET_USD = 50 * ANSWER_USD
REQUESTS = 200


def _config(url: str, extra: str = "") -> str:
    return f"""
models:
  priced:
    provider: openai
    provider_model: gpt-fake
    base_url: {url}
    api_key_env: FAKE_OPENAI_KEY
    price: {{input_per_mtok: 1000.0, output_per_mtok: 1000.0}}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes: {{default: {{model: priced}}}}
    budgets: [{{scope: tenant, period: day, usd: {BUDGET_USD}}}]
    budget_alerts: [0.5, 0.8]
{extra}"""


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server(serialised=True) as server:
        yield server


@pytest.fixture(params=["sqlite", "dynamodb"])
def ledger_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    if request.param == "sqlite":
        return lambda: SqliteBudgetLedger(tmp_path / "gateway.db")
    moto: MotoServer = request.getfixturevalue("moto")
    table = f"budgets-{uuid.uuid4().hex[:8]}"
    moto.client("dynamodb").create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **budget_key_schema())
    return lambda: DynamoBudgetLedger(table, moto.client("dynamodb", max_pool_connections=64))


def test_two_hundred_simultaneous_requests_never_spend_past_the_budget(
    checker: FakeServer, ledger_factory: Callable[[], Any], tmp_path: Path
) -> None:
    # Given four gateway workers sharing one store and one budget ledger, and a model that takes
    # a moment to answer (so requests overlap)
    for _ in range(REQUESTS):
        checker.script.push(delay(0.02, ok("fine", prompt_tokens=12, completion_tokens=6)))
    config = parse_config(_config(checker.base_url))
    store = SqliteStore(tmp_path / "gateway.db")
    metrics = InMemoryMetrics()
    limiter = MemoryRateLimiter()
    runners = [InProcessRunner(_deps(config, store, ledger_factory(), metrics, limiter)) for _ in range(4)]
    states: list[GatewayState] = []
    errors: dict[str, GatewayError] = {}
    start = threading.Barrier(REQUESTS)

    def one(i: int) -> None:
        state = make_state(f"budget please {i:03d}", max_tokens=10)  # distinct: no cache hits
        states.append(state)
        start.wait()
        try:
            runners[i % len(runners)].run(state)
        except GatewayError as error:  # recorded by the runner; the HTTP front answers it
            errors[state.request_id] = error

    # When 200 requests arrive at once, then 40 more one after another
    threads = [threading.Thread(target=one, args=(i,)) for i in range(REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    burst_served = sum(1 for s in states if s.finish is not None)
    for i in range(REQUESTS, REQUESTS + 40):
        checker.script.push(ok("fine", prompt_tokens=12, completion_tokens=6))
        state = make_state(f"budget please {i:03d}", max_tokens=10)
        states.append(state)
        try:
            runners[0].run(state)
        except GatewayError as error:
            errors[state.request_id] = error

    # Then every request was answered or refused with 429 insufficient_quota, never both
    served = [s for s in states if s.finish is not None and s.finish.status == 200]
    refused = [s for s in states if s.request_id in errors]
    assert len(served) + len(refused) == REQUESTS + 40
    assert {(e.status, e.type, e.code) for e in errors.values()} == {(429, "insufficient_quota", "budget_exceeded")}
    failed = dict(store.query("SELECT request_id, error_code FROM audit WHERE outcome = 'error'"))
    assert failed == dict.fromkeys(errors, "budget_exceeded")
    charged = dict(store.query("SELECT request_id, cost_usd FROM usage"))
    assert set(charged) == {s.request_id for s in served}  # no refused request is charged
    # And spend stays within the budget, the ledger agrees with the usage records to the nano-dollar
    spent = sum(charged.values())
    assert spent <= BUDGET_USD + 1e-9
    worst_nusd, _ = worst_case(config, states[0].request, ["priced"])
    assert burst_served >= BUDGET_USD * NANO // worst_nusd  # at least as many as fit at their worst at once
    assert spent * NANO >= BUDGET_USD * NANO - worst_nusd  # and the sequential ones filled it up
    ledger = runners[0].deps.budgets
    assert ledger is not None
    usage = ledger.usage(budget_key(_acme(), config.tenants["acme"].budgets[0], states[0].received_at))
    assert usage.spent_nusd == sum(nano_usd(c) for c in charged.values()) <= BUDGET_USD * NANO
    assert usage.reserved_nusd == 0 and usage.reserved_tokens == 0
    # And every reservation is settled, one per served request
    reservations = ledger.reservation_states()
    assert {rid for rid, st in reservations.items() if st == "settled"} == {s.request_id for s in served}
    assert set(reservations.values()) == {"settled"}
    # And the 50 % and 80 % alerts fired once each
    alerts = {dims: n for (name, dims), n in metrics.counters.items() if name == "budget_alerts"}
    assert sorted(dict(d)["share"] for d in alerts) == ["0.5", "0.8"] and set(alerts.values()) == {1.0}
    store.close()


def _deps(config: Any, store: SqliteStore, ledger: Any, metrics: Any = None, limiter: Any = None) -> Deps:
    """A gateway worker on `store` with the budget ledger `ledger`."""
    return Deps(
        config=config,
        cache=store,
        limiter=limiter or MemoryRateLimiter(),
        usage=store,
        audit=store,
        providers=default_registry(),
        budgets=ledger,
        metrics=metrics or InMemoryMetrics(),
    )


def _acme() -> Any:
    from llm_gateway.contracts import TenantContext

    return TenantContext(tenant="acme", key_id="k1")


def test_budgets_without_a_ledger_are_refused_at_start(checker: FakeServer) -> None:
    store = SqliteStore(":memory:")
    with pytest.raises(ConfigError, match="set budgets, but this deployment has no budget ledger"):
        Deps(
            config=parse_config(_config(checker.base_url)),
            cache=store,
            limiter=MemoryRateLimiter(),
            usage=store,
            audit=store,
            providers=default_registry(),
        )


def test_a_request_that_cannot_fit_is_refused_before_the_model_is_called(checker: FakeServer, tmp_path: Path) -> None:
    config = parse_config(_config(checker.base_url))
    store = SqliteStore(tmp_path / "gateway.db")
    runner = InProcessRunner(_deps(config, store, SqliteBudgetLedger(tmp_path / "gateway.db")))
    with pytest.raises(BudgetExceeded) as refused:
        runner.run(make_state("budget please", max_tokens=5000))  # worst case 5.02 $ > 0.90 $
    assert refused.value.status == 429 and refused.value.body().error.code == "budget_exceeded"
    assert "daily budget" in refused.value.message
    assert checker.script.requests == []
    assert store.query("SELECT outcome, error_code FROM audit") == [("error", "budget_exceeded")]


@pytest.mark.parametrize(
    ("cached", "written", "expected"),
    [
        (900, 0, (100 * 3.0 + 900 * 0.30 + 10 * 15.0) / 1e6),  # 0.00072 $, not 0.00315 $ undiscounted
        (0, 900, (100 * 3.0 + 900 * 3.75 + 10 * 15.0) / 1e6),  # the first request writes the prefix: 1.25x
    ],
    ids=["cache-read", "cache-write"],
)
def test_cached_input_is_priced_at_the_discount_in_usage_and_budgets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached: int, written: int, expected: float
) -> None:
    # Given an Anthropic model (3 $/Mtok in, 0.30 cache read, 3.75 cache write, 15 out) answering
    # with 900 of its 1,000 prompt tokens read from (or written to) the provider's cache
    from dataclasses import replace

    from tests.support.fake_providers import fake_server

    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "sk-ant-test")
    with fake_server("anthropic") as anthropic_fake:
        answer = ok("cached answer", prompt_tokens=1000, completion_tokens=10, cached_tokens=cached)
        anthropic_fake.script.push(replace(answer, cache_write_tokens=written))
        config = parse_config(
            f"""
models:
  claude:
    provider: anthropic
    base_url: {anthropic_fake.base_url}
    api_key_env: FAKE_ANTHROPIC_KEY
    price: {{input_per_mtok: 3.0, cached_input_per_mtok: 0.30, cache_write_per_mtok: 3.75, output_per_mtok: 15.0}}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes: {{default: {{model: claude}}}}
    budgets: [{{scope: tenant, period: day, usd: 1.0}}]
"""
        )
        store = SqliteStore(tmp_path / "gateway.db")
        ledger = SqliteBudgetLedger(tmp_path / "gateway.db")
        runner = InProcessRunner(_deps(config, store, ledger))
        state = runner.run(make_state("a long shared prefix question", max_tokens=50))

    # Then the answer, the usage record and the budget all carry that price
    assert state.finish is not None and state.finish.response is not None
    usage = state.finish.response.usage
    assert usage.prompt_tokens_details.cached_tokens == cached and usage.prompt_tokens == 1000
    assert usage.cost_usd == pytest.approx(expected)
    assert store.query("SELECT cached_tokens, cost_usd FROM usage") == [(cached, pytest.approx(expected))]
    spent = ledger.usage(budget_key(_acme(), config.tenants["acme"].budgets[0], state.received_at))
    assert spent.spent_nusd == nano_usd(expected) and spent.reserved_nusd == 0


def test_checking_calls_are_held_and_charged_on_the_budgets_or_skipped_when_they_do_not_fit(
    checker: FakeServer, tmp_path: Path
) -> None:
    # Given a tenant whose answers are all checked by a second model (1,000 $/Mtok): a check's
    # worst case (its ~500-character prompt) is far larger than an answer's
    checking = "{grounded: {enabled: true, check_model: checker, check_sample: 1.0}}"
    model = (
        f"  checker: {{provider: openai, provider_model: gpt-fake, base_url: {checker.base_url}, "
        "api_key_env: FAKE_OPENAI_KEY, price: {input_per_mtok: 1000.0, output_per_mtok: 1000.0}}\n"
    )
    text = _config(checker.base_url).replace("    routes:", f"    guards: {checking}\n    routes:")
    config = parse_config(text.replace("models:\n", "models:\n" + model, 1))
    store = SqliteStore(tmp_path / "gateway.db")
    ledger = SqliteBudgetLedger(tmp_path / "gateway.db")
    runner = InProcessRunner(_deps(config, store, ledger))
    key = budget_key(_acme(), config.tenants["acme"].budgets[0], time.time())

    # When requests come one after another until what is left cannot hold a check
    checked: list[str] = []
    for i in range(10):
        checker.script.push(ok("The answer."), ok("consistent", prompt_tokens=100, completion_tokens=2))
        state = runner.run(make_state(f"budget please {i}", max_tokens=10))
        assert state.finish is not None and state.finish.response is not None  # always answered
        asked = [c.body["messages"][0]["content"] for c in checker.script.calls("/v1/chat/completions")]
        checker.script.reset()
        if len(asked) == 1:  # the answer only: the check did not fit
            break
        checked.append(state.request_id)

    # Then every check that ran was held and charged like an answer, the last request went
    # without one, and the budget was never passed
    assert 2 <= len(checked) < 10
    costs = dict(store.query("SELECT request_id, cost_usd FROM usage"))
    assert all(costs[f"{rid}:consistency"] == pytest.approx(0.102) for rid in checked)
    spent = ledger.usage(key)
    assert spent.spent_nusd == sum(nano_usd(c) for c in costs.values()) and spent.reserved_nusd == 0
    assert spent.spent_nusd <= nano_usd(BUDGET_USD)
    store.close()
