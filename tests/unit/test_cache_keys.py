"""Exact-cache keys separate everything that changes an answer, and nothing else."""

from __future__ import annotations

from typing import Any

from llm_gateway.cache import cache_directives
from llm_gateway.cache.keys import exact_key
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


def test_cache_control_directives() -> None:
    assert cache_directives(None) == (True, True)
    assert cache_directives("no-cache") == (False, True)
    assert cache_directives("No-Store, max-age=0") == (False, False)
    assert cache_directives("max-age=60") == (True, True)
