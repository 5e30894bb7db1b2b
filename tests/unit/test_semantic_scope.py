"""The semantic scope: what must match exactly before an answer is reused by meaning, and when reuse is off."""

from __future__ import annotations

from typing import Any

import pytest

from llm_gateway.contracts import ChatCompletionRequest, ChatMessage
from llm_gateway.semantic import scope as scope_module
from llm_gateway.semantic.scope import query_text, semantic_allowed, semantic_scope

QUESTION = "What is the capital of France?"


def req(question: str = QUESTION, system: str | None = "You are terse.", **fields: Any) -> ChatCompletionRequest:
    history = fields.pop("history", [])
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system is not None else []
    messages += [*history, {"role": "user", "content": question}]
    return ChatCompletionRequest.model_validate({"model": "chat", "messages": messages, **fields})


def scope(request: ChatCompletionRequest, tenant: str = "acme", model: str = "m1") -> str:
    return semantic_scope(tenant, model, request)


def test_the_scope_ignores_the_query_text_so_paraphrases_can_meet() -> None:
    assert scope(req(QUESTION)) == scope(req("Which city is France's capital?"))


def test_the_scope_is_a_sha256_hex_digest() -> None:
    value = scope(req())
    assert len(value) == 64 and int(value, 16) >= 0


@pytest.mark.parametrize(
    ("name", "other"),
    [
        ("tenant", lambda: scope(req(), tenant="globex")),
        ("model version", lambda: scope(req(), model="m2")),
        ("system prompt", lambda: scope(req(system="You are verbose."))),
        ("no system prompt", lambda: scope(req(system=None))),
        ("developer message", lambda: scope(req(history=[{"role": "developer", "content": "Answer in French."}]))),
        ("earlier turns", lambda: scope(req(history=[{"role": "user", "content": "hi"}]))),
        ("response_format", lambda: scope(req(response_format={"type": "json_object"}))),
        ("output limit", lambda: scope(req(max_tokens=100))),
        ("top_p", lambda: scope(req(top_p=0.5))),
        ("stop", lambda: scope(req(stop=["\n"]))),
        ("seed", lambda: scope(req(seed=42))),
        ("presence penalty", lambda: scope(req(presence_penalty=1.0))),
        ("kb version", lambda: scope(req(metadata={"kb_version": "2024-06"}))),
        (
            "user message name",
            lambda: scope(
                req().model_copy(
                    update={
                        "messages": [
                            ChatMessage(role="system", content="You are terse."),
                            ChatMessage(role="user", content=QUESTION, name="bob"),
                        ]
                    }
                )
            ),
        ),
    ],
)
def test_everything_but_the_query_text_splits_the_scope(name: str, other: Any) -> None:
    assert other() != scope(req()), name


def test_a_different_kb_version_splits_but_other_metadata_and_user_do_not() -> None:
    base = scope(req(metadata={"kb_version": "v1"}))
    assert scope(req(metadata={"kb_version": "v2"})) != base
    assert scope(req(metadata={"kb_version": "v1", "trace": "abc"}, user="u-1")) == base


def test_another_embedding_model_splits_the_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    base = scope(req())
    monkeypatch.setattr(scope_module, "embedding_model_id", lambda: "all-minilm-l6-v2@1.0.0+another-recipe")
    assert scope(req()) != base


def test_max_tokens_and_max_completion_tokens_are_one_exact_cap() -> None:
    assert scope(req(max_tokens=256)) == scope(req(max_completion_tokens=256))
    assert scope(req(max_tokens=256)) != scope(req(max_tokens=257))


def test_temperature_and_streaming_do_not_split_the_scope() -> None:
    assert scope(req(temperature=0.0)) == scope(req(temperature=0.7, stream=True))


def test_the_position_of_the_question_in_the_conversation_counts() -> None:
    after = [{"role": "user", "content": "hi"}]
    same_text_as_context = req(history=[{"role": "user", "content": QUESTION}], question="hi")
    assert scope(req(history=after)) != scope(same_text_as_context)


def test_images_in_the_question_split_the_scope() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    other = {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}}
    text = {"type": "text", "text": QUESTION}
    assert scope(req([text, image])) != scope(req([text, other]))  # type: ignore[arg-type]


def test_query_text_is_the_last_user_message() -> None:
    history = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"}]
    assert query_text(req("second", history=history)) == "second"
    parts = [{"type": "text", "text": "What is "}, {"type": "text", "text": "this?"}]
    assert query_text(req(parts)) == "What is this?"  # type: ignore[arg-type]


def test_query_text_is_empty_without_a_user_message() -> None:
    only_system = ChatCompletionRequest(model="chat", messages=[ChatMessage(role="system", content="x")])
    assert query_text(only_system) == ""
    assert not semantic_allowed(only_system)


@pytest.mark.parametrize(
    ("temperature", "limit", "allowed"),
    [(0.0, 0.7, True), (0.7, 0.7, True), (0.71, 0.7, False), (None, 0.7, False), (None, 1.0, True), (1.5, 1.0, False)],
)
def test_reuse_is_off_above_the_tenants_temperature_limit(
    temperature: float | None, limit: float, allowed: bool
) -> None:
    assert semantic_allowed(req(temperature=temperature), limit) is allowed


def test_reuse_is_off_for_blank_questions_and_questions_with_images() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    assert not semantic_allowed(req("   ", temperature=0))
    question = [{"type": "text", "text": "What is in it?"}, image]
    assert not semantic_allowed(req(question, temperature=0))  # type: ignore[arg-type]
    assert semantic_allowed(req(temperature=0))


def test_an_unset_temperature_counts_as_the_providers_default_of_one() -> None:
    assert not semantic_allowed(req())  # the default limit is 0.7, as in the tenant config
    assert semantic_allowed(req(), max_temperature=1.0)
