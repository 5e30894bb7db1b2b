"""Topic filtering: a cooking assistant refuses medical questions with its own message and
anything off-topic, and answers cooking questions; measured on held-out requests
(tests/data/topics.json: 20 per topic, the first 8 of a topic serve as its examples)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_gateway.config import Guards, Topic, TopicGuard
from llm_gateway.errors import ConfigError
from llm_gateway.guard.step import guard_step
from llm_gateway.guard.topics import library, topic_classifier
from llm_gateway.runner import InProcessRunner
from llm_gateway.semantic.embeddings import default_embedder
from tests.conftest import BASE_CONFIG, make_config, make_deps, make_state

TOPICS: dict[str, list[str]] = json.loads((Path(__file__).parents[1] / "data" / "topics.json").read_text())
SHOTS = 8
REFUSAL = "This is a cooking assistant. I cannot help with {topic}."
# The held-out medical requests that ask for personal advice (what should *I* do about *my*
# situation); the other eight are general health questions ("What are the side effects of statins?").
PERSONAL_MEDICAL = {
    "How can I lower my blood pressure without medication?",
    "What should I do for a persistent dry cough?",
    "How much melatonin should I take to sleep?",
    "Are my symptoms a sign of a urinary tract infection?",
}
POLICY = TopicGuard(
    enabled=True,
    allowed=[Topic(name="cooking", examples=TOPICS["cooking"][:SHOTS])],
    denied=[Topic(name="medical advice", examples=TOPICS["medical"][:SHOTS])],
    refusal=REFUSAL,
)


def test_held_out_requests_land_on_the_right_side() -> None:
    classifier = topic_classifier(POLICY)
    embed = default_embedder().embed
    held_out = {name: texts[SHOTS:] for name, texts in TOPICS.items()}
    matches = {
        name: [classifier.match(v, t) for v, t in zip(embed(texts), texts, strict=True)]
        for name, texts in held_out.items()
    }
    allowed = sum(m.kind == "allowed" for m in matches["cooking"]) / len(matches["cooking"])
    medical = list(zip(held_out["medical"], matches["medical"], strict=True))
    medical_refused = sum(m.kind != "allowed" for _, m in medical) / len(medical)
    # Personal advice is refused with the tenant's message; a general health question is off-topic
    # for a cooking assistant (refused too), as the library's health information topic.
    personal = [m for t, m in medical if t in PERSONAL_MEDICAL]
    denied = sum(m.kind == "denied" for m in personal) / len(personal)
    general = [m for t, m in medical if t not in PERSONAL_MEDICAL]
    health = sum(m.topic == "health" for m in general) / len(general)
    others = [m for name in ("legal", "programming", "travel") for m in matches[name]]
    refused = sum(m.kind != "allowed" for m in others) / len(others)
    # 12 held-out requests per topic, 4 of the medical ones personal. int8 kernels differ between
    # CPUs (AVX2, AVX-512 VNNI, AMX): measured on VNNI with the shipped int8 model and the packaged
    # float-compute model, the worst of the two was allowed 1.000, medical refused 1.000, personal
    # denied 0.750, general to health 1.000, others refused 0.972; each bound is one request under that.
    assert allowed >= 0.9, allowed
    assert medical_refused >= 0.9, medical_refused
    assert denied >= 0.5, denied
    assert health >= 0.85, health
    assert refused >= 0.94, refused
    # The library's own cooking topic gives way to the tenant's; its health information topic
    # stays, paired with the tenant's medical advice (the head decides between the two).
    assert "cooking" in classifier.names and classifier.names.count("cooking") == 1
    assert "health" in classifier.names and "law" in classifier.names


def test_the_client_reads_the_tenant_s_refusal() -> None:
    config = make_config()
    tenants = {n: t.model_copy(update={"guards": Guards(topics=POLICY)}) for n, t in config.tenants.items()}
    deps = make_deps(config.model_copy(update={"tenants": tenants}))

    refused = InProcessRunner(deps).run(make_state("What dose of paracetamol can I give my toddler for a fever?"))
    answered = InProcessRunner(deps).run(make_state("How do I stop my pancakes from sticking to the pan?"))

    assert refused.finish is not None and refused.finish.error is not None
    assert refused.finish.status == 400
    error = refused.finish.error.error
    assert (error.type, error.code) == ("guardrail", "topic")
    assert error.message == "This is a cooking assistant. I cannot help with medical advice."
    assert answered.finish is not None and answered.finish.status == 200
    assert guard_step(make_state("Which train goes from Paris to Amsterdam?"), deps).reason == "other: travel"


@pytest.mark.parametrize(
    ("guard_yaml", "problem"),
    [
        ("{enabled: true}", "needs allowed or denied topics"),
        ("{enabled: true, denied: [{name: a, examples: [x, y]}, {name: A, examples: [x, y]}]}", "unique"),
        ("{enabled: true, denied: [{name: a, examples: [x, y]}], refusal: 'no {subject}'}", "placeholders"),
        ("{enabled: true, denied: [{name: a, examples: [x]}]}", "at least 2"),
    ],
)
def test_bad_topic_config_is_refused_with_its_path(guard_yaml: str, problem: str) -> None:
    from llm_gateway.config import parse_config

    text = BASE_CONFIG.replace("    routes:\n", f"    guards: {{topics: {guard_yaml}}}\n    routes:\n", 1)
    with pytest.raises(ConfigError, match=problem):
        parse_config(text)


def test_the_library_is_distinct_from_the_held_out_requests() -> None:
    everything = {text.lower() for texts in TOPICS.values() for text in texts}
    assert not everything & {e.lower() for examples in library().values() for e in examples}
