"""Request bodies and headers a JSON schema cannot express, as bytes, for the gateway's
reliability tests (`tests/reliability/test_fuzz.py`): nesting 10, 1,000 and 100,000 levels deep,
bodies at and over the size limit, invalid UTF-8, lone surrogates, NUL bytes, numbers JSON
parsers disagree on, unknown fields at every level, odd content for every role, wrong JSON
types, wrong content types and very long headers.

Bodies are built as bytes: a 100,000-level nesting cannot go through a JSON encoder, and some
are not JSON at all.
"""

from __future__ import annotations

from collections.abc import Iterator

from tests.support.fuzz_gateway import KEY, MAX_BODY_BYTES

USER = b'{"role": "user", "content": "What is the capital of France?"}'


def chat_body(*members: bytes, messages: bytes | None = None) -> bytes:
    """A chat request's bytes: `messages` (default one user message) and extra `"key": value` members."""
    head = b'{"model": "default", "messages": ' + (messages or b"[" + USER + b"]")
    return head + b"".join(b", " + member for member in members) + b"}"


def nested(depth: int, open_: bytes = b'{"a": ', close: bytes = b"}", leaf: bytes = b'"x"') -> bytes:
    return open_ * depth + leaf + close * depth


def message(role: str, content: bytes) -> bytes:
    answers = b', "tool_call_id": "call_1"' if role == "tool" else b""  # a tool message answers a call
    return b'[{"role": "' + role.encode() + b'", "content": ' + content + answers + b"}]"


def schema_format(schema: bytes) -> bytes:
    return b'"response_format": {"type": "json_schema", "json_schema": {"name": "deep", "schema": ' + schema + b"}}"


def padded(total: int) -> bytes:
    """A valid chat body of exactly `total` bytes (one long user message)."""
    empty = chat_body(messages=message("user", b'""'))
    return chat_body(messages=message("user", b'"' + b"a" * (total - len(empty)) + b'"'))


def padded_metadata(total: int) -> bytes:
    """A valid chat body of exactly `total` bytes (one long metadata value): it passes every guard."""
    empty = chat_body(b'"metadata": {"pad": ""}')
    return chat_body(b'"metadata": {"pad": "' + b"p" * (total - len(empty)) + b'"}')


# The JSON-schema answers below ask for "{}" (the echo model repeats it), so an accepted schema
# ends in a 200 rather than the documented 502 for an answer out of format.
JSON_PROMPT = message("user", b'"{}"')
ODD_CONTENT = {
    "empty string": b'""',
    "empty list": b"[]",
    "empty text part": b'[{"type": "text", "text": ""}]',
    "image part without image_url": b'[{"type": "image_url"}]',
    "image part without url": b'[{"type": "image_url", "image_url": {}}]',
    "image part with empty url": b'[{"type": "image_url", "image_url": {"url": ""}}]',
    "part of no type": b'[{"text": "x"}]',
    "part of unknown type": b'[{"type": "audio", "audio": "x"}]',
    "null": b"null",
    "number": b"42",
    "object": b'{"text": "x"}',
    "1,000 parts": b"[" + b", ".join([b'{"type": "text", "text": "part"}'] * 1000) + b"]",
    "NUL escapes": b'"nul \\u0000 byte"',
    "surrogate pair": b'"\\ud83d\\ude00"',
}
HOSTILE: dict[str, bytes] = {
    "empty body": b"",
    "JSON array": b"[]",
    "JSON number": b"42",
    "JSON string": b'"model"',
    "JSON null": b"null",
    "JSON true": b"true",
    "byte order mark": b"\xef\xbb\xbf" + chat_body(),
    "invalid UTF-8 in a string": chat_body(messages=message("user", b'"\xff\xfe\xfd"')),
    "invalid UTF-8 outside strings": b"\xff" + chat_body(),
    "lone high surrogate": chat_body(messages=message("user", b'"\\ud800"')),
    "lone low surrogate": chat_body(messages=message("user", b'"x\\udc00y"')),
    "surrogate in the model name": b'{"model": "\\ud800", "messages": [' + USER + b"]}",
    "raw NUL byte in a string": chat_body(messages=message("user", b'"a\x00b"')),
    "NUL escape in the model name": b'{"model": "default\\u0000", "messages": [' + USER + b"]}",
    "duplicate keys": b'{"model": "nope", "model": "default", "messages": [], "messages": [' + USER + b"]}",
    "truncated JSON": chat_body()[:-7],
    "trailing garbage": chat_body() + b"}{",
    "NaN": chat_body(b'"temperature": NaN'),
    "temperature 1e309": chat_body(b'"temperature": 1e309'),
    "temperature -0.0": chat_body(b'"temperature": -0.0'),
    "temperature 1, an integer": chat_body(b'"temperature": 1'),
    "max_tokens 5.0, an integer": chat_body(b'"max_tokens": 5.0'),
    "n 1.0, an integer": chat_body(b'"n": 1.0'),
    "seed 1e300, an integer": chat_body(b'"seed": 1e300'),
    "max_tokens -0": chat_body(b'"max_tokens": -0'),
    "max_tokens 1e309": chat_body(b'"max_tokens": 1e309'),
    "max_tokens 2**64 - 1": chat_body(b'"max_tokens": 18446744073709551615'),
    "max_tokens 2**64 - 1 on a route without a cap": chat_body(b'"max_tokens": 18446744073709551615').replace(
        b'"default"', b'"brief"', 1
    ),
    "max_tokens 1e300 on a route without a cap": chat_body(b'"max_tokens": 1e300').replace(b'"default"', b'"brief"', 1),
    "max_tokens 10**30": chat_body(b'"max_tokens": 1000000000000000000000000000000'),
    "max_completion_tokens 2**63": chat_body(b'"max_completion_tokens": 9223372036854775808'),
    "seed 2**64 - 1": chat_body(b'"seed": 18446744073709551615'),
    "seed -2**63 - 1": chat_body(b'"seed": -9223372036854775809'),
    "unknown top-level field": chat_body(b'"frobnicate": {"deep": [1, 2, 3]}'),
    "unknown field in a message": chat_body(messages=b'[{"role": "user", "content": "x", "tool_call_id": "c1"}]'),
    "unknown field in a part": chat_body(messages=message("user", b'[{"type": "text", "text": "x", "cache": 1}]')),
    "unknown field in image_url": chat_body(
        messages=message("user", b'[{"type": "image_url", "image_url": {"url": "http://x", "size": 1}}]')
    ),
    "unknown field in response_format": chat_body(b'"response_format": {"type": "text", "strict": true}'),
    "unknown field in json_schema": chat_body(
        b'"response_format": {"type": "json_schema", "json_schema": {"name": "x", "extra": 1}}'
    ),
    "unknown field in stream_options": chat_body(b'"stream_options": {"include_usage": true, "chunks": 2}'),
    "unknown role": chat_body(messages=message("robot", b'"x"')),
    "no messages": chat_body(messages=b"[]"),
    "65 messages (over max_messages)": chat_body(messages=b"[" + b", ".join([USER] * 65) + b"]"),
    "metadata of 10,000 keys": chat_body(
        b'"metadata": {' + b", ".join(b'"k%d": "v"' % i for i in range(10_000)) + b"}"
    ),
    "metadata with a 100,000-char value": chat_body(b'"metadata": {"k": "' + b"v" * 100_000 + b'"}'),
    "stop of 5 strings": chat_body(b'"stop": ["a", "b", "c", "d", "e"]'),
    "context of 65 passages": chat_body(b'"context": [' + b", ".join([b'"passage"'] * 65) + b"]"),
    "body at the limit": padded(MAX_BODY_BYTES),
    "body one byte over the limit": padded(MAX_BODY_BYTES + 1),
    "body of 8 MiB": padded(8 * MAX_BODY_BYTES),
    # 16 bytes under: with `"stream": true, ` added it is exactly at the limit.
    "body near the limit, padded in metadata": padded_metadata(MAX_BODY_BYTES - 16),
    "prompt over max_prompt_chars": padded(300_000),
}
# Types the schema does not allow are refused naming the field, not coerced ("5" is not 5, 1 is not
# true, true is not 1.0): (body, the field). A number with no fraction is an integer (HOSTILE).
NOT_COERCED: dict[str, tuple[bytes, str]] = {
    "max_tokens as a string": (chat_body(b'"max_tokens": "5"'), "max_tokens"),
    "max_tokens true": (chat_body(b'"max_tokens": true'), "max_tokens"),
    "max_tokens 5.5": (chat_body(b'"max_tokens": 5.5'), "max_tokens"),
    "temperature true": (chat_body(b'"temperature": true'), "temperature"),
    "temperature as a string": (chat_body(b'"temperature": "0.5"'), "temperature"),
    "stream 1": (chat_body(b'"stream": 1'), "stream"),
    "stream as a string": (chat_body(b'"stream": "true"'), "stream"),
    "n true": (chat_body(b'"n": true'), "n"),
    "include_usage 0": (chat_body(b'"stream_options": {"include_usage": 0}'), "stream_options.include_usage"),
    "seed as a string": (chat_body(b'"seed": "42"'), "seed"),
    "top_p as a string": (chat_body(b'"top_p": "0.9"'), "top_p"),
    "presence_penalty true": (chat_body(b'"presence_penalty": true'), "presence_penalty"),
    "strict as a string": (
        chat_body(b'"response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": "yes"}}'),
        "response_format.json_schema.strict",
    ),
}
for depth in (10, 1_000, 100_000):
    HOSTILE[f"{depth} levels of lists in content"] = chat_body(messages=message("user", nested(depth, b"[", b"]")))
    HOSTILE[f"{depth} levels of objects in content"] = chat_body(messages=message("user", nested(depth)))
    HOSTILE[f"{depth} levels in metadata"] = chat_body(b'"metadata": ' + nested(depth))
    for shape, open_, close in (
        ("not", b'{"not":', b"}"),  # compact: 100,000 levels stay under the body limit
        ("unknown keywords", b'{"a":', b"}"),
        ("arrays of unknown keywords", b'{"a":[', b"]}"),
        ("properties", b'{"type": "object", "properties": {"a": ', b"}}"),
    ):
        if len(open_) * depth < MAX_BODY_BYTES:
            deep = schema_format(nested(depth, open_, close, b"{}"))
            HOSTILE[f"{depth} levels of {shape} in a response_format schema"] = chat_body(deep, messages=JSON_PROMPT)
# Text built to make a scanner's regular expressions backtrack (a long run with no digit, no
# space, no "@"), just under the fuzz gateway's max_prompt_chars: each guard that reads the
# message (PII, injection, harmful content) must answer in time, not hold the server.
for name, run in {
    "199,000 letters in one word": b"a" * 199_000,
    "a 199,000-character run of letters and joiners": b"ab.-:#" * 33_000,
    "a 199,000-character word ending in a digit": b"a" * 198_999 + b"7",
    "199,000 characters of an address with no domain": b"a." * 99_000 + b"@",
}.items():
    HOSTILE[name] = chat_body(messages=message("user", b'"' + run + b'"'))
for role in ("system", "developer", "user", "assistant", "tool"):
    for name, content in ODD_CONTENT.items():
        HOSTILE[f"{role} message, {name}"] = chat_body(messages=b"[" + USER + b", " + message(role, content)[1:])


def with_stream(body: bytes) -> bytes | None:
    """The body with `"stream": true` first, or None when it is not a JSON object."""
    return b'{"stream": true, ' + body[1:] if body.startswith(b'{"model"') else None


def chunks(total: int) -> Iterator[bytes]:
    body = padded_metadata(total)
    yield from (body[i : i + 65_536] for i in range(0, len(body), 65_536))


# Headers and framing: (headers, body) for a request whose JSON body is otherwise fine.
LONG = {"8 KiB": 8 * 1024, "64 KiB": 64 * 1024, "1 MiB": 1024 * 1024}
HOSTILE_HEADERS: dict[str, tuple[dict[str, str], bytes]] = {
    "no content-type": ({"content-type": ""}, chat_body()),
    "content-type text/plain": ({"content-type": "text/plain"}, chat_body()),
    "content-type form-urlencoded": (
        {"content-type": "application/x-www-form-urlencoded"},
        b"model=default&messages=hello",
    ),
    "content-type multipart": (
        {"content-type": "multipart/form-data; boundary=xyz"},
        b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\ndefault\r\n--xyz--\r\n',
    ),
    "content-type JSON in latin-1": (
        {"content-type": "application/json; charset=latin-1"},
        chat_body(messages=message("user", "caf\u00e9".encode("latin-1").join([b'"', b'"']))),
    ),
    "no authorization": ({"authorization": ""}, chat_body()),
    "authorization without a scheme": ({"authorization": KEY}, chat_body()),
    "x-api-key instead of bearer": ({"authorization": "", "x-api-key": KEY}, chat_body()),
    "non-ASCII cache-control": ({"cache-control": "no-cache, \u00ff\u00fe"}, chat_body()),
}
for size, n in LONG.items():
    HOSTILE_HEADERS[f"authorization of {size}"] = ({"authorization": "Bearer " + "k" * n}, chat_body())
    HOSTILE_HEADERS[f"cache-control of {size}"] = ({"cache-control": "no-store," * (n // 9)}, chat_body())
    HOSTILE_HEADERS[f"unknown header of {size}"] = ({"x-padding": "p" * n}, chat_body())


# Bytes no HTTP client library sends: uvicorn answers them itself, before the app (400, closed).
RAW_REQUESTS: dict[str, bytes] = {
    "not HTTP": b"GARBAGE\r\n\r\n",
    "an HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "a content-length of letters": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "content-length and chunked": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "a chunk size of letters": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    ),
    "a NUL byte in a header": b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk\x00x\r\n\r\n",
    "a raw non-ASCII path": "GET /v1/mödels HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "a path of 100,000 bytes": b"GET /v1/batches/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
}
