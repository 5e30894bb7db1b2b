"""The Responses API on the AWS side: the streaming function's app (functions/stream/app.py, as
run.sh starts it) answers and continues a conversation, and the AWS dependencies keep responses in
the DynamoDB table `CONVERSATION_TABLE` names (on moto's server)."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from llm_gateway.adapters.aws.conversations import DynamoConversationStore, conversation_key_schema
from llm_gateway.aws import runtime
from llm_gateway.pipeline import INVOKE_POLICY
from llm_gateway.ports import StoredResponse
from tests.support.moto_server import moto_server
from tests.support.servers import ServerThread

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"
KEY = "sk-test-acme"  # tenant acme in tests/events/config.yaml


@pytest.fixture
def settings_reset() -> Iterator[None]:
    runtime.settings.cache_clear()
    runtime.deps.cache_clear()
    yield
    runtime.deps.cache_clear()
    runtime.settings.cache_clear()


def test_the_streaming_function_continues_a_conversation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings_reset: None
) -> None:
    monkeypatch.setenv("GATEWAY_CONFIG_PATH", str(EVENTS / "config.yaml"))
    monkeypatch.setenv("GATEWAY_SQLITE_PATH", str(tmp_path / "stream.db"))
    spec = importlib.util.spec_from_file_location("stream_function_app", ROOT / "functions" / "stream" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with ServerThread(module.app, lifespan="off") as server:
        api = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
        first = api.responses.create(model="default", input="Remember the word teal.")
        second = api.responses.create(model="default", input="Which word?", previous_response_id=first.id)
        assert first.usage is not None and second.usage is not None
        # the second prompt held the first turn (question and answer) before its own question
        assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
        assert api.responses.retrieve(second.id).previous_response_id == first.id


def test_the_aws_dependencies_keep_responses_in_the_conversation_table(
    monkeypatch: pytest.MonkeyPatch, settings_reset: None
) -> None:
    with moto_server() as moto:
        dynamodb = moto.client("dynamodb")
        dynamodb.create_table(TableName="conversations", BillingMode="PAY_PER_REQUEST", **conversation_key_schema())
        for name, value in {
            "GATEWAY_CONFIG_PATH": str(EVENTS / "config.yaml"),
            "GATEWAY_STORE": "aws",
            "USAGE_TABLE": "usage",
            "AUDIT_TABLE": "audit",
            "MOMENTO_LOCAL_ENDPOINT": "127.0.0.1:1",  # built on first use only: never here
            "CONVERSATION_TABLE": "conversations",
            "AWS_ENDPOINT_URL_DYNAMODB": moto.url,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }.items():
            monkeypatch.setenv(name, value)
        # the AWS dependencies as `runtime.deps` builds them once the pseudonym key is loaded
        store = runtime._aws_deps(runtime.settings(), INVOKE_POLICY).conversations
        assert isinstance(store, DynamoConversationStore)
        now = time.time()
        kept = StoredResponse(
            id="resp_1",
            tenant="acme",
            created_at=now,
            expires_at=now + 60,
            response={},
            input_items=[],
            conversation=[],
        )
        store.put(kept)
        assert dynamodb.scan(TableName="conversations")["Count"] == 1
        assert store.get("acme", "resp_1", now) == kept and store.get("globex", "resp_1", now) is None
