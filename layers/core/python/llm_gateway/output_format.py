"""The request's `response_format` held against the answer: JSON, a JSON object, or a JSON schema.

`format_problem` says what is wrong (or None); the invoke step then asks the same model once more
with the problem stated, and refuses with `OutputFormatInvalid` (HTTP 502) if the second answer
is wrong too. Schemas are checked when the request arrives (`check_schema`: a 400, not a 502).
"""

from __future__ import annotations

import json
from typing import Any

from .contracts import ChatCompletionRequest, ChatMessage
from .errors import InvalidRequest

MAX_PROBLEM_CHARS = 300


def _schema(request: ChatCompletionRequest) -> dict[str, Any] | None:
    fmt = request.response_format
    if fmt is None or fmt.type != "json_schema" or fmt.json_schema is None:
        return None
    return fmt.json_schema.schema_


def check_schema(request: ChatCompletionRequest) -> None:
    """Refuse a `json_schema` response_format whose schema is not a valid JSON Schema."""
    schema = _schema(request)
    if schema is None:
        return
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidRequest(
            f"response_format.json_schema.schema is not a valid JSON Schema: {exc.message}",
            param="response_format.json_schema.schema",
        ) from None


def format_problem(request: ChatCompletionRequest, text: str, *, quote_answer: bool = True) -> str | None:
    """Why `text` does not satisfy the request's response_format, or None when it does.

    `quote_answer=False` leaves the answer's values out (jsonschema's messages quote them): that
    form goes into errors, which reach logs and traces; the quoting one only goes to the model."""
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        reason = getattr(exc, "msg", str(exc))
        return f"the answer is not valid JSON ({reason})"
    if fmt.type == "json_object":
        return None if isinstance(value, dict) else "the answer must be a JSON object"
    schema = _schema(request)
    return None if schema is None else _schema_problem(schema, value, quote_answer)


def _schema_problem(schema: dict[str, Any], value: Any, quote_answer: bool) -> str | None:
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return None
    first = errors[0]
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
