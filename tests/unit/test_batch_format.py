"""Batch input files are caller data: a line nested deeper than a parser should recurse is an
invalid line with its reason, not a crash of the whole job."""

from __future__ import annotations

import json

from llm_gateway.batch.format import MAX_LINE_DEPTH, parse_input


def _line(custom_id: str, content: object) -> str:
    body = {"model": "default", "messages": [{"role": "user", "content": content}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def test_a_deeply_nested_line_is_invalid_and_the_others_are_read() -> None:
    deep = '{"custom_id": "deep", "body": ' + "[" * 100_000 + "]" * 100_000 + "}"
    data = "\n".join([_line("a", "hello"), deep, _line("b", "again")]).encode()

    valid, invalid = parse_input(data)

    assert [line.custom_id for line in valid] == ["a", "b"]
    [refused] = invalid
    assert refused.line == 2 and refused.code == "invalid_json"
    assert f"deeper than {MAX_LINE_DEPTH}" in refused.message


def test_nesting_within_the_limit_is_parsed_as_usual() -> None:
    nested = {"x": [[["still fine"]]]}
    valid, invalid = parse_input(_line("a", "hi").replace('"hi"', json.dumps(str(nested))).encode())
    assert len(valid) == 1 and invalid == []
