"""Exact-cache keys separate everything that changes an answer, and nothing else."""

from __future__ import annotations

from typing import Any

from llm_gateway.cache.keys import cache_tags, exact_key, kb_tag, prompt_tag
from llm_gateway.cache.step import cache_directives
from llm_gateway.contracts import ChatCompletionRequest


def request(system: str = "be brief", question: str = "hi", **params: Any) -> ChatCompletionRequest:
    body: dict[str, Any] = {
        "model": "default",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}],
    }
    body.update(params)
    return ChatCompletionRequest.model_validate(body)


def test_identical_requests_share_a_key() -> None:
    assert exact_key("a", "m@1", request()) == exact_key("a", "m@1", request())


def test_tenant_model_version_system_prompt_and_parameters_all_split_keys() -> None:
    base = exact_key("a", "m@1", request())
    assert exact_key("b", "m@1", request()) != base
    assert exact_key("a", "m@2", request()) != base
    assert exact_key("a", "m@1", request(system="be verbose")) != base
    assert exact_key("a", "m@1", request(question="hi!")) != base
    assert exact_key("a", "m@1", request(temperature=0.5)) != base
    assert exact_key("a", "m@1", request(max_tokens=10)) != base
    assert exact_key("a", "m@1", request(response_format={"type": "json_object"})) != base


def test_streaming_user_and_metadata_do_not_split_keys() -> None:
    base = exact_key("a", "m@1", request())
    assert exact_key("a", "m@1", request(stream=True, user="u-9", metadata={"k": "v"})) == base


def test_the_kb_version_splits_keys_so_a_new_index_never_gets_an_old_answer() -> None:
    v1 = exact_key("a", "m@1", request(metadata={"kb_version": "v1"}))
    assert exact_key("a", "m@1", request(metadata={"kb_version": "v2"})) != v1
    assert exact_key("a", "m@1", request()) != v1
    assert exact_key("a", "m@1", request(metadata={"kb_version": "v1", "trace": "x"})) == v1


def test_tags_name_each_system_prompt_and_the_kb_version_by_digest() -> None:
    body: dict[str, Any] = {
        "model": "default",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": "use metric units"},
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
        "metadata": {"kb_version": "2026-11-01"},
    }
    tags = cache_tags(ChatCompletionRequest.model_validate(body))
    assert tags == (prompt_tag("be brief"), prompt_tag("use metric units"), kb_tag("2026-11-01"))
    assert all(" " not in t and "brief" not in t and "2026" not in t for t in tags)  # digests, not the text
    assert cache_tags(request(system="x")) == (prompt_tag("x"),)


def test_cache_control_directives() -> None:
    assert cache_directives(None) == (True, True)
    assert cache_directives("no-cache") == (False, True)
    assert cache_directives("No-Store, max-age=0") == (False, False)
    assert cache_directives("max-age=60") == (True, True)
