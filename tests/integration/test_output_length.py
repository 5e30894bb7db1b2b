"""Output length control: a route's cap on generated tokens (reported as finish_reason "length"
when it cuts an answer) and a brevity instruction for simple requests, checked on the wire."""

from __future__ import annotations

from llm_gateway.config import parse_config
from llm_gateway.contracts import BREVITY_INSTRUCTION
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, hash_key, make_deps, make_state
from tests.support.fake_providers import FakeServer, ok


def _runner(model_yaml: str, route: str) -> InProcessRunner:
    return InProcessRunner(
        make_deps(
            parse_config(
                f"""
models:
{model_yaml}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes: {{default: {route}}}
"""
            )
        )
    )


ECHO = "  echo: {provider: echo, default_max_tokens: 512}"
WORDS = " ".join(f"w{i}" for i in range(40))


def test_a_route_cap_cuts_the_answer_and_says_so() -> None:
    runner = _runner(ECHO, "{model: echo, max_tokens: 10}")
    capped = runner.run(make_state(WORDS))
    lower = runner.run(make_state(WORDS, max_tokens=4))  # the request's own lower limit wins
    higher = runner.run(make_state(WORDS, max_completion_tokens=100))  # a higher one is capped
    for state, words in ((capped, 10), (lower, 4), (higher, 10)):
        assert state.finish is not None and state.finish.response is not None
        choice = state.finish.response.choices[0]
        assert (len((choice.message.content or "").split()), choice.finish_reason) == (words, "length")
    uncapped = _runner(ECHO, "{model: echo}").run(make_state(WORDS))
    assert uncapped.finish is not None and uncapped.finish.response is not None
    assert uncapped.finish.response.choices[0].finish_reason == "stop"


def _model(checker: FakeServer) -> str:
    return (
        f"  gpt: {{provider: openai, provider_model: gpt-fake, base_url: {checker.base_url}, "
        "api_key_env: FAKE_OPENAI_KEY}"
    )


def test_simple_requests_get_the_brevity_instruction_on_the_wire(checker: FakeServer) -> None:
    runner = _runner(_model(checker), "{model: gpt, brief_simple: true, max_tokens: 200}")
    checker.script.push(ok(), ok(), ok(), ok('{"ok": true}'))
    runner.run(make_state("What is the capital of France?"))
    simple = checker.script.last.body
    assert simple["messages"][0] == {"role": "system", "content": BREVITY_INSTRUCTION}
    assert simple["max_tokens"] == 200
    runner.run(make_state("Explain this code:\n```python\nprint(1)\n```"))
    runner.run(make_state("x " * 400))
    runner.run(make_state("Reply in JSON.", response_format={"type": "json_object"}))
    for call in checker.script.calls("/v1/chat/completions")[1:]:
        assert all(m["content"] != BREVITY_INSTRUCTION for m in call.body["messages"])
