"""The request's `response_format` held against the answer: JSON, a JSON object, or a JSON schema.

`format_problem` says what is wrong (or None); the invoke step then asks the same model once more
with the problem stated, and refuses with `OutputFormatInvalid` (HTTP 502) if the second answer
is wrong too. Schemas are checked when the request arrives (`check_schema`: a 400, not a 502):
what makes one safe to use (RE2 patterns, local references only, size and depth limits) is in
`schema_safety`; the bounded validator is in `schema_validator`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pydantic_core

from .contracts import ChatCompletionRequest, ChatMessage
from .errors import InvalidRequest
from .memo import TextMemo
from .schema_safety import MAX_ANSWER_DEPTH, json_too_deep, schema_refusal

MAX_PROBLEM_CHARS = 300
SCHEMA_PARAM = "response_format.json_schema.schema"


def _schema(request: ChatCompletionRequest) -> dict[str, Any] | None:
    fmt = request.response_format
    if fmt is None or fmt.type != "json_schema" or fmt.json_schema is None:
        return None
    return fmt.json_schema.schema_


def check_schema(request: ChatCompletionRequest) -> None:
    """Refuse a `json_schema` response_format, or a tool's `parameters`, whose schema is not a valid
    JSON Schema, or not one the gateway can hold answers against safely
    (`schema_safety.schema_refusal`)."""
    schema = _schema(request)
    if schema is not None:
        _check_one(schema, SCHEMA_PARAM)
    if request.tools:
        refused = _tools_verdict([t.function.parameters for t in request.tools])
        if refused is not None:
            param, verdict = refused
            raise InvalidRequest(f"{param} {verdict}", param=param)


def _tools_verdict(schemas: list[dict[str, Any] | None]) -> tuple[str, str] | None:
    """The first refused tool schema's parameter and verdict, or None; an agent
    offers the same tools on every call, so the whole list's verdict is remembered at once."""
    digest = _digest(schemas)
    if digest is None:
        return _first_refusal(schemas)
    return _TOOL_VERDICTS.get(digest, lambda _: _first_refusal(schemas))


def _first_refusal(schemas: list[dict[str, Any] | None]) -> tuple[str, str] | None:
    for i, schema in enumerate(schemas):
        verdict = None if schema is None else schema_verdict(schema)
        if verdict is not None:
            return f"tools[{i}].function.parameters", verdict
    return None


def _check_one(schema: dict[str, Any], param: str) -> None:
    verdict = schema_verdict(schema)
    if verdict is not None:
        raise InvalidRequest(f"{param} {verdict}", param=param)


# Verdicts on the schemas seen lately, by digest: an agent sends the same tool definitions (and a
# client the same response_format) on every call, and checking one costs ~1 ms.
_VERDICTS: TextMemo[str | None] = TextMemo(size=1024)
_TOOL_VERDICTS: TextMemo[tuple[str, str] | None] = TextMemo(size=1024)


def schema_verdict(schema: Any) -> str | None:
    """Why a caller's schema is refused ("is not accepted: ..." / "is not a valid JSON Schema:
    ..."), or None; remembered by a digest of the schema as it came (key order included)."""
    digest = _digest(schema)
    if digest is None:
        return _verdict(schema)
    return _VERDICTS.get(digest, lambda _: _verdict(schema))


def _digest(value: Any) -> str | None:
    """A digest of parsed JSON as it came (key order included: the same schema sent again
    matches), from pydantic-core's JSON writer (~2 µs for an agent's three tools; `repr` took
    ~8 µs; orjson is not in every function's layer); None for what it cannot write (nested past
    its depth limit, far past the schema depth limit too)."""
    try:
        return hashlib.sha256(pydantic_core.to_json(value)).hexdigest()
    except ValueError:
        return None


def _verdict(schema: Any) -> str | None:
    refusal = schema_refusal(schema)  # first: it bounds the depth the meta-schema check recurses to
    if refusal is not None:
        return f"is not accepted: {refusal}."
    from .schema_validator import meta_schema_problem

    problem = meta_schema_problem(schema)
    return None if problem is None else f"is not a valid JSON Schema: {problem}"


def format_problem(request: ChatCompletionRequest, text: str, *, quote_answer: bool = True) -> str | None:
    """Why `text` does not satisfy the request's response_format, or None when it does.

    `quote_answer=False` leaves the answer's values out (jsonschema's messages quote them): that
    form goes into errors, which reach logs and traces; the quoting one only goes to the model."""
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    too_deep = f"the answer is not valid JSON (nested too deeply: more than {MAX_ANSWER_DEPTH} levels)"
    if json_too_deep(text):  # json.loads recurses once per level
        return too_deep
    try:
        value = json.loads(text)
    except ValueError as exc:
        reason = getattr(exc, "msg", str(exc))
        return f"the answer is not valid JSON ({reason})"
    except RecursionError:
        return too_deep
    if fmt.type == "json_object":
        return None if isinstance(value, dict) else "the answer must be a JSON object"
    schema = _schema(request)
    return None if schema is None else _schema_problem(schema, value, quote_answer)


def _schema_problem(schema: dict[str, Any], value: Any, quote_answer: bool) -> str | None:
    from .schema_validator import CheckAborted, bounded_errors

    refusal = schema_refusal(schema)  # cleared when the request arrived; never checked without it
    if refusal is not None:
        return f"the schema cannot be checked: {refusal}"[:MAX_PROBLEM_CHARS]
    try:
        errors = bounded_errors(schema, value)
    except CheckAborted as exc:
        return f"the answer could not be checked against the schema within the gateway's bounds: {exc}"[
            :MAX_PROBLEM_CHARS
        ]
    if not errors:
        return None
    first = min(errors, key=lambda e: list(map(str, e.absolute_path)))
    where = "/".join(map(str, first.absolute_path)) or "(root)"
    if quote_answer:
        return f"at {where}: {first.message}"[:MAX_PROBLEM_CHARS]
    return f"at {where}: fails the schema's {first.validator!r} rule ({first.validator_value!r})"[:MAX_PROBLEM_CHARS]


def repair_request(request: ChatCompletionRequest, answer: str, problem: str) -> ChatCompletionRequest:
    """The same request, with the wrong answer and what is wrong with it appended."""
    messages = [
        *request.messages,
        ChatMessage(role="assistant", content=answer),
        ChatMessage(
            role="user",
            content=(
                f"Your previous answer does not satisfy the required response format: {problem}. "
                "Reply again with only the corrected JSON, nothing else."
            ),
        ),
    ]
    return request.model_copy(update={"messages": messages})
