"""The `ConversationStore` port: the SQLite adapter (embedded default) and the DynamoDB one (on
moto's server) keep the same promises: a response is found only under its tenant and until it
expires, and deleting one removes it and every response that continues from it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_gateway.adapters.aws.conversations import DynamoConversationStore, conversation_key_schema
from llm_gateway.adapters.local.conversations import SqliteConversationStore
from llm_gateway.ports import ConversationStore, ConversationTooLarge, StoredResponse
from tests.support.moto_server import MotoServer

NOW = 1_790_000_000.0


@pytest.fixture(params=["sqlite", "aws"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ConversationStore]:
    if request.param == "sqlite":
        local = SqliteConversationStore(tmp_path / "conversations.db")
        yield local
        local.close()
        return
    moto: MotoServer = request.getfixturevalue("moto")
    dynamodb = moto.client("dynamodb")
    table = f"conversations-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **conversation_key_schema())
    yield DynamoConversationStore(table, dynamodb)


def stored(response_id: str, tenant: str = "acme", previous: str | None = None, ttl_s: float = 3600) -> StoredResponse:
    turn = [{"role": "user", "content": f"question of {response_id}"}, {"role": "assistant", "content": "answer"}]
    return StoredResponse(
        id=response_id,
        tenant=tenant,
        created_at=NOW,
        expires_at=NOW + ttl_s,
        previous_response_id=previous,
        response={"id": response_id, "object": "response", "output": []},
        input_items=[{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "q"}]}],
        conversation=turn,
    )


def test_a_response_comes_back_whole_under_its_tenant_only(store: ConversationStore) -> None:
    item = stored("resp_a", previous="resp_0")
    store.put(stored("resp_0"))
    assert store.put(item) is True
    assert store.get("acme", "resp_a", NOW) == item
    assert store.get("globex", "resp_a", NOW) is None
    assert store.get("acme", "resp_missing", NOW) is None


def test_an_expired_response_is_not_found(store: ConversationStore) -> None:
    store.put(stored("resp_old", ttl_s=60))
    assert store.get("acme", "resp_old", NOW + 30) is not None
    assert store.get("acme", "resp_old", NOW + 61) is None


def test_deleting_a_response_removes_the_responses_that_continue_it(store: ConversationStore) -> None:
    for response_id, previous in [("r1", None), ("r2", "r1"), ("r3", "r2"), ("r2b", "r1"), ("other", None)]:
        store.put(stored(response_id, previous=previous))
    store.put(stored("r2", tenant="globex"))  # the same id under another tenant is another response

    assert store.delete("globex", "r1") == 0  # another tenant cannot delete acme's
    assert store.delete("acme", "r2") == 2  # r2 and r3, which holds r2's turns
    assert [store.get("acme", i, NOW) is not None for i in ("r1", "r2", "r3", "r2b", "other")] == [
        True,
        False,
        False,
        True,
        True,
    ]
    assert store.get("globex", "r2", NOW) is not None
    assert store.delete("acme", "r2") == 0  # already gone
    assert store.delete("acme", "r1") == 2  # r1 and r2b


def test_a_response_too_large_for_one_item_is_refused_by_the_dynamodb_store(moto: MotoServer) -> None:
    dynamodb = moto.client("dynamodb")
    table = f"conversations-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST", **conversation_key_schema())
    large = stored("resp_big")
    large.conversation.append({"role": "user", "content": os.urandom(400_000).hex()})  # random: barely compresses
    with pytest.raises(ConversationTooLarge):
        DynamoConversationStore(table, dynamodb).put(large)


def test_a_response_continuing_a_deleted_one_is_not_kept(store: ConversationStore) -> None:
    assert store.put(stored("root")) is True
    store.delete("acme", "root")
    assert store.put(stored("child", previous="root")) is False  # answered while its parent was deleted
    assert store.get("acme", "child", NOW) is None
    assert store.put(stored("child", previous="root", tenant="globex")) is False  # another tenant's root is none
    assert store.put(stored("root2")) is True
    assert store.put(stored("child2", previous="root2")) is True
    assert store.put(stored("child2", previous="root2")) is True  # a retried write: the first copy stays
    assert store.get("acme", "child2", NOW) is not None
