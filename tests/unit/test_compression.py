"""Prompt compression: lossless whitespace and duplicate-instruction removal, the opt-in salience
cut of long documents, and what the model receives through the gateway."""

from __future__ import annotations

from llm_gateway.compression import compress, salient, squeeze_whitespace
from llm_gateway.config import Compression, parse_config
from llm_gateway.contracts import ChatMessage
from llm_gateway.runner import InProcessRunner
from llm_gateway.semantic.embeddings import default_embedder
from tests.conftest import BASE_CONFIG, make_deps, make_state
from tests.support.fake_providers import FakeServer

INSTRUCTION = "Always answer in formal English and cite the section of the handbook you used."


def test_whitespace_is_squeezed_outside_code_fences() -> None:
    text = "Hello   there,\t\tfriend.  \n\n\n\nNext    line.\n```python\nif x:\n        return   1\n```"
    assert squeeze_whitespace(text) == "Hello there, friend.\n\nNext line.\n```python\nif x:\n        return   1\n```"


def test_repeated_instructions_are_kept_once() -> None:
    messages = [
        ChatMessage(role="system", content=INSTRUCTION),
        ChatMessage(role="user", content=f"Example 1: hi\n\n{INSTRUCTION}\n\nExample 2: bye\n\n{INSTRUCTION}"),
        ChatMessage(role="user", content="Short line.\n\nShort line."),  # short paragraphs are not deduplicated
    ]
    out = compress(messages, Compression(enabled=True))
    assert [m.text() for m in out.messages] == [
        INSTRUCTION,
        "Example 1: hi\n\nExample 2: bye",
        "Short line.\n\nShort line.",
    ]
    assert out.saved_tokens == (2 * (len(INSTRUCTION) + 2)) // 4


def test_lossy_keeps_the_sentences_that_matter_for_the_question() -> None:
    filler = " ".join(f"The cafeteria menu for day {i} lists soup, bread and a seasonal salad." for i in range(60))
    key = "Employees accrue 25 days of paid leave per year."
    document = f"{filler} {key} {filler}"
    kept = salient(document, "How many days of paid leave do employees get?", 400, default_embedder().embed)
    assert key in kept and len(kept) <= 400
    messages = [ChatMessage(role="user", content=document), ChatMessage(role="user", content="How many leave days?")]
    out = compress(messages, Compression(enabled=True, lossy_max_tokens=100), default_embedder().embed)
    assert len(out.messages[0].text()) <= 400 and out.messages[1].text() == "How many leave days?"
    assert out.saved_tokens > 1000


def test_the_model_receives_the_compressed_prompt(checker: FakeServer) -> None:
    text = BASE_CONFIG.replace(
        "models:\n",
        f"models:\n  gpt: {{provider: openai, provider_model: gpt-fake, base_url: {checker.base_url}, "
        "api_key_env: FAKE_OPENAI_KEY}\n",
        1,
    ).replace("default: {model: echo, fallbacks: [echo-b]}", "default: {model: gpt}")
    text = text.replace(
        "    allowed_models: [echo-b]\n", "    allowed_models: [echo-b]\n    compression: {enabled: true}\n", 1
    )
    runner = InProcessRunner(make_deps(parse_config(text)))
    state = runner.run(make_state(f"{INSTRUCTION}\n\n\n\nWhat is   the leave policy?\n\n{INSTRUCTION}"))
    sent = checker.script.last.body["messages"][-1]["content"]
    assert sent == f"{INSTRUCTION}\n\nWhat is the leave policy?"
    assert state.guard is not None and state.guard.saved_tokens == (len(INSTRUCTION) + 7) // 4
