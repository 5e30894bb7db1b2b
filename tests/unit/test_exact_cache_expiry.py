"""The local exact cache stays bounded: expired answers are deleted as new ones are written, never
one that is still live (an injected clock stands in for time passing)."""

from __future__ import annotations

from pathlib import Path

from llm_gateway.adapters.local.sqlite import PURGE_EVERY_PUTS, SqliteStore
from tests.contract.records import completion


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rows(store: SqliteStore) -> int:
    [(count,)] = store.query("SELECT count(*) FROM exact_cache")
    assert isinstance(count, int)
    return count


def test_the_table_stays_bounded_while_entries_outlive_their_ttl(tmp_path: Path) -> None:
    # Given a store whose clock advances one second per write, and answers cached for 10 seconds
    clock = Clock(1_000_000.0)
    store = SqliteStore(tmp_path / "gateway.db", clock=clock)
    answer = completion()
    written = 20 * PURGE_EVERY_PUTS
    try:
        # When many more answers are written than stay live at any moment
        for i in range(written):
            store.put(f"k{i}", "acme", "echo", answer, expires_at=clock.now + 10)
            clock.now += 1
            # Then the table never holds more than the live answers and one round of writes
            assert rows(store) <= 10 + 2 * PURGE_EVERY_PUTS
        # And every answer still live is there
        live = [f"k{i}" for i in range(written - 9, written)]
        assert all(store.get(key, clock.now) is not None for key in live)
    finally:
        store.close()


def test_live_entries_are_never_purged(tmp_path: Path) -> None:
    clock = Clock(1_000_000.0)
    store = SqliteStore(tmp_path / "gateway.db", clock=clock)
    answer = completion()
    try:
        for i in range(3 * PURGE_EVERY_PUTS):
            store.put(f"k{i}", "acme", "echo", answer, expires_at=clock.now + 3600)
        assert rows(store) == 3 * PURGE_EVERY_PUTS
    finally:
        store.close()


def test_a_backlog_of_expired_entries_drains_a_bounded_batch_per_round(tmp_path: Path) -> None:
    # Given a store written before expired rows were purged: many expired entries
    clock = Clock(1_000_000.0)
    store = SqliteStore(tmp_path / "gateway.db", clock=clock)
    answer = completion()
    try:
        for i in range(10 * PURGE_EVERY_PUTS):
            store.put(f"old{i}", "acme", "echo", answer, expires_at=clock.now + 1)
        clock.now += 3600
        before = rows(store)
        # When one round of new writes happens, one bounded batch goes (no long stall in one put)
        for i in range(PURGE_EVERY_PUTS):
            store.put(f"new{i}", "acme", "echo", answer, expires_at=clock.now + 3600)
        assert before + PURGE_EVERY_PUTS - rows(store) == 2 * PURGE_EVERY_PUTS
        # And with more writes the backlog is gone
        for i in range(20 * PURGE_EVERY_PUTS):
            store.put(f"more{i}", "acme", "echo", answer, expires_at=clock.now + 3600)
        assert rows(store) == 21 * PURGE_EVERY_PUTS
    finally:
        store.close()
