"""PII masking covers every message role and the RAG `context`: what the upstream receives (a real
HTTP server speaking the OpenAI wire: conftest's `checker`) carries placeholders only, whichever part
of the request held the value."""

from __future__ import annotations

from typing import Any

import pytest

from llm_gateway.config import hash_key, parse_config
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, make_deps, make_state, store_of
from tests.support.fake_providers import FakeServer, ok

CARD, EMAIL, PHONE = "4111 1111 1111 1111", "jane.roe+billing@example.co.uk", "+1 (415) 555-0132"
RAW = (CARD, EMAIL, PHONE, CARD.replace(" ", ""))


def _config(url: str, pii: str) -> Any:
    return parse_config(f"""
models:
  upstream:
    provider: openai
    provider_model: gpt-fake
    base_url: {url}
    api_key_env: FAKE_OPENAI_KEY
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes:
      default: {{model: upstream}}
    guards:
      pii: {pii}
""")


ROLES = ("system", "developer", "user", "assistant", "tool")


@pytest.mark.parametrize("role", ROLES)
def test_pii_in_any_role_reaches_the_upstream_masked(checker: FakeServer, role: str) -> None:
    # Given a tenant masking PII, and card, email and phone in a message of `role`
    runner = InProcessRunner(make_deps(_config(checker.base_url, "{enabled: true, default: mask}")))
    carrier = {"role": role, "content": f"Card {CARD}, write to {EMAIL}, call {PHONE}."}
    if role == "tool":
        carrier["tool_call_id"] = "call_1"
    messages = [carrier, {"role": "user", "content": "What should I do next?"}]
    if role == "user":
        messages = [carrier]
    checker.script.push(ok("Noted."))

    # When the request goes through the chain
    state = runner.run(make_state(messages=messages))

    # Then the upstream saw placeholders, never a value, and the request succeeded
    assert state.finish is not None and state.finish.response is not None
    sent = str(checker.script.last.body["messages"])
    assert "[CREDIT_CARD_1]" in sent and "[EMAIL_1]" in sent and "[PHONE_1]" in sent
    assert not any(value in sent for value in RAW)


def test_pii_in_the_rag_context_reaches_the_upstream_masked(checker: FakeServer) -> None:
    runner = InProcessRunner(make_deps(_config(checker.base_url, "{enabled: true, default: mask}")))
    checker.script.push(ok("Noted."))
    state = make_state(
        "Who handles refunds?",
        context=[f"Refunds: write to {EMAIL} or call {PHONE}.", f"Test card {CARD} is declined."],
    )

    state = runner.run(state)

    assert state.finish is not None and state.finish.response is not None
    sent = str(checker.script.last.body)
    assert "[EMAIL_1]" in sent and "[PHONE_1]" in sent and "[CREDIT_CARD_1]" in sent
    assert not any(value in sent for value in RAW)
    # nor in the audit or cache rows
    store = store_of(runner.deps)
    rows = " ".join(map(str, store.query("SELECT * FROM audit") + store.query("SELECT * FROM exact_cache")))
    assert not any(value in rows for value in RAW)


def test_a_rejected_type_in_the_system_prompt_refuses_the_request(checker: FakeServer) -> None:
    config = _config(checker.base_url, "{enabled: true, default: mask, entities: {CREDIT_CARD: reject}}")
    runner = InProcessRunner(make_deps(config))
    state = make_state(messages=[{"role": "system", "content": f"Card {CARD}"}, {"role": "user", "content": "hi"}])

    state = runner.run(state)

    assert state.finish is not None and state.finish.status == 400
    assert state.finish.error is not None and state.finish.error.error.code == "pii"
    assert checker.script.requests == []


def test_masked_context_values_come_back_only_where_the_tenant_restores_them(checker: FakeServer) -> None:
    # The model repeats the placeholders it was given; EMAIL is restorable, PHONE is not
    config = _config(checker.base_url, "{enabled: true, default: mask, restore: [EMAIL]}")
    runner = InProcessRunner(make_deps(config))
    checker.script.push(ok("Write to [EMAIL_1] or call [PHONE_1]."))

    state = runner.run(make_state("Who handles refunds?", context=[f"Refunds: {EMAIL}, phone {PHONE}."]))

    assert state.finish is not None and state.finish.response is not None
    answer = state.finish.response.text()
    assert EMAIL in answer and PHONE not in answer and "[PHONE_1]" in answer


def test_a_purge_by_a_system_prompt_holding_pii_finds_its_answers(checker: FakeServer) -> None:
    # Answers are cached under the masked system prompt; the operator purges by its real text
    from llm_gateway.cache.purge import PurgeRequest, purge_caches

    runner = InProcessRunner(make_deps(_config(checker.base_url, "{enabled: true, default: mask}")))
    prompt = f"You are the support bot. Escalate to {EMAIL}."
    messages = [{"role": "system", "content": prompt}, {"role": "user", "content": "Where do refunds go?"}]
    first = runner.run(make_state(messages=messages))
    assert first.finish is not None and first.finish.cached

    removed = purge_caches(runner.deps, PurgeRequest(tenant="acme", system_prompt=prompt))

    assert removed >= 1
    again = runner.run(make_state(messages=messages))
    assert again.cache is not None and again.cache.status == "miss"
