"""response_format held against the answer: invalid JSON is repaired once (same model, problem
stated) or refused with a clear 502; a bad schema is a 400 before any model call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from llm_gateway.config import ModelConfig
from llm_gateway.contracts import ChatCompletionRequest
from llm_gateway.errors import InvalidRequest, OutputFormatInvalid
from llm_gateway.guard import guard_step
from llm_gateway.observability import InMemoryMetrics
from llm_gateway.output_format import format_problem
from llm_gateway.providers.base import ProviderReply, StreamDelta
from llm_gateway.runner import LocalRunner
from tests.conftest import make_deps, make_state, store_of

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}


class Scripted:
    """A provider answering with the given texts in turn, recording what it was sent."""

    name = "echo"

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.requests: list[ChatCompletionRequest] = []

    def complete(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> ProviderReply:
        self.requests.append(request)
        return ProviderReply(text=self.answers.pop(0), finish_reason="stop", prompt_tokens=10, completion_tokens=5)

    def stream(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> Iterator[StreamDelta]:
        raise NotImplementedError


def request(fmt: dict[str, Any] | None) -> ChatCompletionRequest:
    body: dict[str, Any] = {"model": "default", "messages": [{"role": "user", "content": "Who?"}]}
    if fmt is not None:
        body["response_format"] = fmt
    return ChatCompletionRequest.model_validate(body)


def test_format_problems() -> None:
    assert format_problem(request(None), "not json") is None
    assert format_problem(request({"type": "text"}), "not json") is None
    problem = format_problem(request({"type": "json_object"}), "{'single': quotes}")
    assert problem is not None and problem.startswith("the answer is not valid JSON")
    assert format_problem(request({"type": "json_object"}), "[1, 2]") == "the answer must be a JSON object"
    assert format_problem(request({"type": "json_object"}), '{"a": 1}') is None
    assert (
        format_problem(request(JSON_SCHEMA), '{"name": "Ada", "age": "36"}') == "at age: '36' is not of type 'integer'"
    )
    assert format_problem(request(JSON_SCHEMA), '{"name": "Ada", "age": 36}') is None
    unquoted = format_problem(request(JSON_SCHEMA), '{"name": "Ada", "age": "555-0199"}', quote_answer=False)
    assert unquoted == "at age: fails the schema's 'type' rule ('integer')"  # no value from the answer


def _runner(answers: list[str]) -> tuple[LocalRunner, Scripted]:
    provider = Scripted(answers)
    deps = make_deps(metrics=InMemoryMetrics())
    deps.providers.register("echo", lambda: provider)
    return LocalRunner(deps), provider


def test_an_invalid_answer_is_repaired_once_and_both_calls_are_paid_for() -> None:
    runner, provider = _runner(["Sure! Here it is: {name: Ada}", '{"name": "Ada", "age": 36}'])
    state = runner.run(make_state("Who?", response_format=JSON_SCHEMA))

    assert state.finish is not None and state.finish.response is not None
    assert state.finish.response.text() == '{"name": "Ada", "age": 36}'
    assert state.finish.response.usage.prompt_tokens == 20  # both calls
    assert state.invoke is not None and len(state.invoke.attempts) == 2
    repair = provider.requests[1].messages
    assert repair[-2].role == "assistant" and repair[-2].text() == "Sure! Here it is: {name: Ada}"
    assert repair[-1].role == "user" and "not valid JSON" in repair[-1].text()


def test_a_second_invalid_answer_is_refused_with_a_clear_502_and_recorded() -> None:
    runner, _ = _runner(["nope", '{"name": "Ada"}'])
    with pytest.raises(OutputFormatInvalid) as caught:
        runner.run(make_state("Who?", response_format=JSON_SCHEMA))

    error = caught.value.body().error
    assert (caught.value.status, error.code) == (502, "response_format_mismatch")
    assert "after one repair" in error.message
    assert error.message.endswith("at (root): fails the schema's 'required' rule (['name', 'age'])")
    rows = store_of(runner.deps).query("SELECT outcome, error_code FROM audit")
    assert rows[-1] == ("error", "response_format_mismatch")


def test_a_valid_first_answer_costs_one_call() -> None:
    runner, provider = _runner(['{"name": "Ada", "age": 36}'])
    state = runner.run(make_state("Who?", response_format=JSON_SCHEMA))
    assert state.finish is not None and state.finish.status == 200 and len(provider.requests) == 1


def test_an_invalid_schema_is_a_400_before_any_model_call() -> None:
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
    with pytest.raises(InvalidRequest) as caught:
        guard_step(make_state("Who?", response_format=bad), make_deps())
    assert caught.value.param == "response_format.json_schema.schema"
