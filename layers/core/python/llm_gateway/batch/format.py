"""The OpenAI batch file formats: input lines validated one by one, result and error lines.

Input, one JSON object per line:
    {"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}
`body` is a chat completion request (the gateway's request schema; `stream` is refused: a batch
answers in a file). Blank lines are skipped. A line that does not validate goes to the job's
errors file with its line number and the reason; the other lines still run.

Output, one JSON object per line, in input order:
    {"id": "batch_req_...", "custom_id": "req-1",
     "response": {"status_code": 200, "request_id": "...", "body": {chat completion}}, "error": null}
and in the errors file, for refused, failed and invalid lines:
    {"id": ..., "custom_id": "req-2", "response": {"status_code": 400, "request_id": ..., "body": {"error": ...}},
     "error": {"code": "...", "message": "..."}}
(an invalid line has `"response": null` and its line number in `"line"`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..contracts import ChatCompletionRequest
from ..schema_safety import json_too_deep

CHAT_URL = "/v1/chat/completions"
MAX_LINES = 50_000  # as the OpenAI Batch API
MAX_CUSTOM_ID = 512
MAX_LINE_DEPTH = 128  # nesting of one input line (a request body is rarely deeper than 10)
ALLOWED_KEYS = frozenset({"custom_id", "method", "url", "body"})


@dataclass(frozen=True)
class InputLine:
    line: int  # 1-based line number in the file
    custom_id: str
    request: ChatCompletionRequest


@dataclass(frozen=True)
class InvalidLine:
    line: int
    custom_id: str | None
    code: str
    message: str

    def error_record(self) -> dict[str, Any]:
        return {
            "id": None,
            "custom_id": self.custom_id,
            "line": self.line,
            "response": None,
            "error": {"code": self.code, "message": self.message},
        }


class BatchFileError(ValueError):
    """The file as a whole cannot be a batch (not UTF-8, too many lines, no request at all)."""


def parse_input(data: bytes) -> tuple[list[InputLine], list[InvalidLine]]:
    """Validate every line; valid lines in order, invalid ones with their reason."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BatchFileError(f"the batch file is not UTF-8 text (byte {exc.start})") from exc
    valid: list[InputLine] = []
    invalid: list[InvalidLine] = []
    seen: set[str] = set()
    numbered = [(n, raw) for n, raw in enumerate(text.splitlines(), 1) if raw.strip()]
    if len(numbered) > MAX_LINES:
        raise BatchFileError(f"a batch holds at most {MAX_LINES} requests; this file has {len(numbered)}")
    for number, raw in numbered:
        outcome = _parse_line(number, raw, seen)
        if isinstance(outcome, InvalidLine):
            invalid.append(outcome)
        else:
            seen.add(outcome.custom_id)
            valid.append(outcome)
    if not valid and not invalid:
        raise BatchFileError("the batch file holds no request")
    return valid, invalid


def _json_row(number: int, raw: str) -> Any:
    """The line's JSON value, or the `InvalidLine` saying why there is none."""
    if json_too_deep(raw, MAX_LINE_DEPTH):  # a parser recurses once per level: refuse before parsing
        return InvalidLine(number, None, "invalid_json", f"line {number} nests deeper than {MAX_LINE_DEPTH} levels")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        return InvalidLine(number, None, "invalid_json", f"line {number} is not JSON: {exc.msg}")


def _parse_line(number: int, raw: str, seen: set[str]) -> InputLine | InvalidLine:
    row = _json_row(number, raw)
    if isinstance(row, InvalidLine):
        return row
    if not isinstance(row, dict):
        return InvalidLine(number, None, "invalid_request", f"line {number} is not a JSON object")
    custom_id = row.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
        return InvalidLine(number, None, "invalid_custom_id", f"line {number}: custom_id must be a non-empty string")
    if custom_id in seen:
        return InvalidLine(number, custom_id, "duplicate_custom_id", f"custom_id '{custom_id}' is used twice")
    problem = _envelope_problem(row)
    if problem is None:
        try:
            return InputLine(number, custom_id, ChatCompletionRequest.model_validate(row["body"]))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            problem = f"body.{where}: {first['msg']}" if where else str(first["msg"])
    return InvalidLine(number, custom_id, "invalid_request", problem)


def _envelope_problem(row: dict[str, Any]) -> str | None:
    """What is wrong with a line's fields around its body, if anything."""
    if extra := sorted(set(row) - ALLOWED_KEYS):
        return f"unknown field(s) {', '.join(extra)}"
    if row.get("method") != "POST":
        return "method must be POST"
    if row.get("url") != CHAT_URL:
        return f"url must be {CHAT_URL}"
    if not isinstance(row.get("body"), dict):
        return "body must be a chat completion request object"
    if row["body"].get("stream"):
        return "stream is not supported in a batch"
    return None


def result_record(line_id: str, custom_id: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    """An output line: the answer (status 200) or the error the online API would have sent."""
    error = None
    if status != 200:
        detail = body.get("error") or {}
        error = {"code": detail.get("code") or detail.get("type"), "message": detail.get("message")}
    return {
        "id": f"batch_req_{line_id}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": line_id, "body": body},
        "error": error,
    }


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in records).encode("utf-8")
