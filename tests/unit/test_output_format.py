"""response_format held against the answer: invalid JSON is repaired once (same model, problem
stated) or refused with a clear 502; a bad schema is a 400 before any model call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from llm_gateway.config import ModelConfig
from llm_gateway.contracts import ChatCompletionRequest
from llm_gateway.errors import InvalidRequest, OutputFormatInvalid
from llm_gateway.guard.step import guard_step
from llm_gateway.observability import InMemoryMetrics
from llm_gateway.output_format import format_problem
from llm_gateway.providers.base import ProviderReply, StreamDelta
from llm_gateway.runner import InProcessRunner
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


def _runner(answers: list[str]) -> tuple[InProcessRunner, Scripted]:
    provider = Scripted(answers)
    deps = make_deps(metrics=InMemoryMetrics())
    deps.providers.register("echo", lambda: provider)
    return InProcessRunner(deps), provider


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
    rows = store_of(runner.deps).query("SELECT outcome, error_code, attempts, prompt_tokens, cost_usd FROM audit")
    outcome, code, attempts, prompt_tokens, cost = rows[-1]
    assert (outcome, code, attempts, prompt_tokens) == ("error", "response_format_mismatch", 2, 20)  # both paid
    usage = store_of(runner.deps).query("SELECT prompt_tokens, cost_usd FROM usage")
    assert usage and usage[-1][0] == 20 and usage[-1][1] == cost  # charged, as any answer is


def test_a_valid_first_answer_costs_one_call() -> None:
    runner, provider = _runner(['{"name": "Ada", "age": 36}'])
    state = runner.run(make_state("Who?", response_format=JSON_SCHEMA))
    assert state.finish is not None and state.finish.status == 200 and len(provider.requests) == 1


def test_an_invalid_schema_is_a_400_before_any_model_call() -> None:
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
    with pytest.raises(InvalidRequest) as caught:
        guard_step(make_state("Who?", response_format=bad), make_deps())
    assert caught.value.param == "response_format.json_schema.schema"


# Hostile schemas and answers: patterns run on RE2, nothing is fetched, every check is bounded.


def json_schema(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}


def refusal(schema: Any) -> str:
    """The 400's message for `schema`, which must be refused when the request arrives."""
    with pytest.raises(InvalidRequest) as caught:
        guard_step(make_state("Who?", response_format=json_schema(schema)), make_deps())
    assert caught.value.param == "response_format.json_schema.schema"
    assert caught.value.body().error.type == "invalid_request_error"
    return caught.value.body().error.message


def nested(keyword: str, levels: int, leaf: Any) -> Any:
    for _ in range(levels):
        leaf = {keyword: leaf}
    return leaf


def test_patterns_run_on_re2_with_ecma_unicode_escapes_and_classes() -> None:
    letters = request(json_schema({"type": "string", "pattern": "^\\p{L}+$"}))  # `re` has no \p{...}
    guard_step(make_state("Who?", response_format=json_schema({"type": "string", "pattern": "^\\p{L}+$"})), make_deps())
    assert format_problem(letters, '"Ada"') is None
    assert format_problem(letters, '"Ada1"') == "at (root): 'Ada1' does not match '^\\\\p{L}+$'"
    upper = request(json_schema({"type": "string", "pattern": "^[\\u0041-\\u005A]+$"}))  # ECMA \uXXXX
    assert format_problem(upper, '"ADA"') is None
    assert format_problem(upper, '"ada"') is not None
    # As in ECMA-262 (and unlike `re`), `$` does not match before a final newline.
    assert format_problem(request(json_schema({"type": "string", "pattern": "^a$"})), '"a\\n"') is not None


@pytest.mark.parametrize(
    ("schema", "answer"),
    [
        ({"patternProperties": {"^a$": {"type": "string"}}}, None),
        ({"patternProperties": {"^a$": {}}, "additionalProperties": False}, "'a\\n' does not match any of the regexes"),
        ({"patternProperties": {"^a$": {}}, "unevaluatedProperties": False}, "Unevaluated properties are not allowed"),
    ],
)
def test_property_patterns_run_on_re2_in_every_keyword_that_matches_them(schema: Any, answer: str | None) -> None:
    # Given the key "a\n", which `re` matches with ^a$ and RE2 (like ECMA-262) does not
    problem = format_problem(request(json_schema(schema)), '{"a\\n": 1}')
    assert problem is None if answer is None else answer in (problem or "")


@pytest.mark.parametrize("pattern", ["^(a)\\1$", "(?=a)b", "(?<!a)b", "a\\Z"])
@pytest.mark.parametrize("where", ["pattern", "patternProperties"])
def test_a_pattern_re2_cannot_run_is_refused_naming_it(pattern: str, where: str) -> None:
    schema = {"type": "string", "pattern": pattern} if where == "pattern" else {"patternProperties": {pattern: {}}}
    message = refusal({"type": "object", "properties": {"field": schema}})
    assert f"pattern {pattern!r} at /properties/field/{where}" in message
    assert "cannot run on RE2" in message


def test_a_pattern_too_large_for_re2_is_refused() -> None:
    assert "too large" in refusal({"type": "string", "pattern": "^\\p{L}{1,1000}$"})


@pytest.mark.parametrize(
    "ref", ["http://127.0.0.1:9/schema.json", "https://example.com/s.json#/$defs/x", "other.json", "//h/s"]
)
@pytest.mark.parametrize("keyword", ["$ref", "$dynamicRef"])
def test_a_reference_outside_the_schema_is_refused_and_never_resolved(ref: str, keyword: str) -> None:
    schema = {"type": "object", "properties": {"a": {keyword: ref}}}
    message = refusal(schema)
    assert f"{keyword} {ref!r} at /properties/a" in message and "nothing is fetched" in message
    # and the answer's check refuses it too (were the request-time check ever skipped)
    problem = format_problem(request(json_schema(schema)), '{"a": "x"}')
    assert problem is not None and problem.startswith("the schema cannot be checked")


def test_the_validator_resolves_nothing_outside_the_schema_even_unchecked() -> None:
    from llm_gateway.schema_validator import CheckAborted, bounded_errors
    from tests.support.servers import closed_url

    with pytest.raises(CheckAborted, match="does not resolve"):
        bounded_errors({"$ref": closed_url() + "/schema.json"}, "x")


@pytest.mark.parametrize(
    "schema",
    [
        {"$dynamicAnchor": "meta", "$dynamicRef": "#meta"},
        {"$ref": "#"},
        {"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/b"}]}, "b": {"not": {"$ref": "#/$defs/a"}}}, "$ref": "#/$defs/a"},
    ],
)
def test_a_schema_that_refers_back_to_itself_in_place_is_refused(schema: Any) -> None:
    assert "refers back to itself without descending into the answer" in refusal(schema)


def test_a_recursive_schema_that_descends_into_the_answer_is_accepted() -> None:
    kids = {"type": "array", "items": {"$ref": "#/$defs/node"}}
    tree = {"$defs": {"node": {"type": "object", "properties": {"kids": kids}}}, "$ref": "#/$defs/node"}
    fmt = json_schema(tree)
    guard_step(make_state("Who?", response_format=fmt), make_deps())
    assert format_problem(request(fmt), '{"kids": [{"kids": []}, {}]}') is None
    assert format_problem(request(fmt), '{"kids": [{"kids": [1]}]}') == "at kids/0/kids/0: 1 is not of type 'object'"


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        (nested("items", 64, {}), "nests more than 64 levels deep"),
        (nested("items", 1000, {}), "nests more than 64 levels deep"),
        ({"enum": list(range(10_001))}, "more than 10000 nodes"),
        ({"$schema": "http://json-schema.org/draft-07/schema#", "type": "string"}, "only Draft 2020-12"),
        ({"properties": {"a": {"$schema": "https://json-schema.org/draft/2020-12/schema"}}}, "only at the root"),
        ({"properties": {"a": {"$id": "http://127.0.0.1:9/a.json"}}}, "only the root may have an $id"),
        ({"$ref": "#/const", "const": {"type": "string"}}, "names no subschema of this schema"),
        ({"$ref": "#missing"}, "names no subschema of this schema"),
        ({"properties": {f"p{i}": {"pattern": f"^a{i}"} for i in range(129)}}, "more than 128 distinct patterns"),
        ({"properties": {f"p{i}": {"pattern": f"^\\p{{L}}{{1,{40 + i}}}$"} for i in range(5)}}, "too large for RE2"),
    ],
)
def test_schemas_past_the_limits_are_refused(schema: Any, reason: str) -> None:
    assert reason in refusal(schema)


def test_a_schema_at_the_limits_is_accepted() -> None:
    guard_step(make_state("Who?", response_format=json_schema(nested("items", 63, {}))), make_deps())
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "https://example.com/p.json"}
    guard_step(make_state("Who?", response_format=json_schema({**root, "type": "string"})), make_deps())


@pytest.mark.parametrize("fmt", [{"type": "json_object"}, json_schema({"type": "array"})])
def test_an_answer_nested_100000_deep_is_not_valid_json(fmt: dict[str, Any]) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert format_problem(request(fmt), deep) == "the answer is not valid JSON (nested too deeply: more than 64 levels)"
    assert format_problem(request(fmt), "[" * 64 + "]" * 64) in (None, "the answer must be a JSON object")


def test_the_depth_scan_skips_brackets_inside_strings() -> None:
    from llm_gateway.schema_safety import json_too_deep

    assert not json_too_deep('"' + "[" * 1000 + '"')
    assert not json_too_deep('["\\"' + "[" * 1000 + '"]')  # an escaped quote does not end the string
    assert json_too_deep('["' + "[" * 10 + '", ' + "[" * 64 + "]" * 64 + "]")
    assert not json_too_deep('"unterminated ' + "[" * 1000)  # a parser stops at the string, so does the scan


def test_a_check_past_the_recursion_limit_is_a_bounded_format_problem() -> None:
    # 31 subschemas applied inside one another per level of the answer: ~2,000 levels of recursion
    schema = nested("not", 30, {"not": {"items": {"$ref": "#"}}})
    guard_step(make_state("Who?", response_format=json_schema(schema)), make_deps())
    problem = format_problem(request(json_schema(schema)), "[" * 64 + "]" * 64)
    assert problem is not None
    assert problem.startswith("the answer could not be checked against the schema within the gateway's bounds")


def test_a_check_whose_work_doubles_per_level_is_stopped() -> None:
    # Each level applies the whole schema twice to the next: 2^18 applications for 18 levels.
    schema = {"allOf": [{"items": {"$ref": "#"}}, {"items": {"$ref": "#"}}]}
    problem = format_problem(request(json_schema(schema)), "[" * 18 + "]" * 18)
    assert problem is not None and "more than 100000 steps" in problem


def test_a_bounded_check_failure_is_repaired_once_then_a_502() -> None:
    runner, provider = _runner(["[" * 18 + "]" * 18, "[" * 18 + "]" * 18])
    schema = {"allOf": [{"items": {"$ref": "#"}}, {"items": {"$ref": "#"}}]}
    with pytest.raises(OutputFormatInvalid) as caught:
        runner.run(make_state("Who?", response_format=json_schema(schema)))
    assert caught.value.body().error.code == "response_format_mismatch"
    assert "within the gateway's bounds" in caught.value.body().error.message
    assert len(provider.requests) == 2


@pytest.mark.parametrize(
    ("answer", "unique"),
    [
        ('[{"a": 1}, {"a": 1.0}]', False),
        ("[1, true]", True),
        ("[[1], [true]]", True),
        ('[{"a": [1, {"b": null}]}, {"a": [1, {"b": null}]}]', False),
        ('[{"a": 1, "b": 2}, {"b": 2, "a": 1}]', False),
        ("[" + ", ".join(f'{{"k": {i}}}' for i in range(20_000)) + "]", True),
    ],
)
def test_unique_items_keeps_json_schema_equality(answer: str, unique: bool) -> None:
    problem = format_problem(request(json_schema({"type": "array", "uniqueItems": True})), answer)
    assert (problem is None) == unique
