"""The `GuardAllowList` port (reviewed false refusals), on its SQLite adapter (the embedded default;
no AWS adapter yet): per-tenant texts compared with whitespace normalised and nothing else,
idempotent on tenant and text, kept across reopening the store, entries oldest first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_gateway.adapters.local.allowlist import SqliteGuardAllowList
from llm_gateway.ports import AllowedText, GuardAllowList


@pytest.fixture(params=["sqlite"])
def allowlist(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GuardAllowList]:
    local = SqliteGuardAllowList(tmp_path / "gw.db")
    yield local
    local.close()


def entry(text: str, tenant: str = "acme", added_at: float = 1.0, item_id: str = "req-1:input:topic") -> AllowedText:
    return AllowedText(tenant=tenant, text=text, layer="topic", item_id=item_id, added_at=added_at)


def test_a_text_is_allowed_for_its_tenant_whitespace_aside(allowlist: GuardAllowList) -> None:
    assert allowlist.add(entry("How do I kill a Python process?\n\nIt hangs on [EMAIL_1]."))
    assert allowlist.allows("acme", "How do I kill a Python process?\n\nIt hangs on [EMAIL_1].")
    assert allowlist.allows("acme", "  How do I kill a  Python\tprocess? It hangs on [EMAIL_1]. ")
    assert not allowlist.allows("globex", "How do I kill a Python process? It hangs on [EMAIL_1].")
    assert not allowlist.allows("acme", "how do I kill a Python process? It hangs on [EMAIL_1].")  # case counts
    assert not allowlist.allows("acme", "How do I kill a Python process?")  # whole text, not a part
    assert not allowlist.allows("acme", "How do I kill a Python process? It hangs on [EMAIL_2].")


def test_adding_the_same_text_again_keeps_the_first_entry(allowlist: GuardAllowList) -> None:
    assert allowlist.add(entry("Tell me about knives in cooking", added_at=1.0))
    assert not allowlist.add(entry(" Tell me about knives  in cooking", added_at=2.0, item_id="req-2:input:topic"))
    assert allowlist.add(entry("Tell me about knives in cooking", tenant="globex", added_at=3.0))
    assert allowlist.entries("acme") == [entry("Tell me about knives in cooking", added_at=1.0)]
    assert [(e.tenant, e.added_at) for e in allowlist.entries()] == [("acme", 1.0), ("globex", 3.0)]


def test_entries_come_back_oldest_first_and_survive_a_reopen(tmp_path: Path) -> None:
    first = SqliteGuardAllowList(tmp_path / "gw.db")
    for n in (3, 1, 2):
        first.add(entry(f"text {n}", added_at=float(n)))
    first.close()
    reopened = SqliteGuardAllowList(tmp_path / "gw.db")
    assert [e.text for e in reopened.entries("acme")] == ["text 1", "text 2", "text 3"]
    assert reopened.allows("acme", "text 2")
    reopened.close()


def test_a_lookup_is_one_primary_key_search(tmp_path: Path) -> None:
    # The request path pays one indexed read, however many texts a tenant allows.
    allowlist = SqliteGuardAllowList(tmp_path / "gw.db")
    for n in range(50):
        allowlist.add(entry(f"text {n}"))
    statements: list[str] = []
    allowlist._db.set_trace_callback(statements.append)
    assert allowlist.allows("acme", "text 7")
    allowlist._db.set_trace_callback(None)
    [statement] = statements
    plan = allowlist._db.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
    allowlist.close()
    assert [row[-1] for row in plan] == ["SEARCH guard_allowlist USING PRIMARY KEY (tenant=? AND digest=?)"]
