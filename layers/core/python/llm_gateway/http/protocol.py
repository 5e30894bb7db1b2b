"""uvicorn's HTTP protocols, answering unparseable HTTP with an OpenAI-style JSON error.

A request uvicorn cannot parse (a malformed request line or header, an invalid chunked body) never
reaches the ASGI app: uvicorn answers it itself, with a text/plain body. These subclasses keep
uvicorn's behaviour (400, connection closed) and change only the body, so every answer of the
gateway has the same error shape. `http_protocol()` picks httptools when installed, as uvicorn does.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

_BODY = json.dumps(
    {
        "error": {
            "message": "The request is not valid HTTP/1.1.",
            "type": "invalid_request_error",
            "param": None,
            "code": "malformed_http",
        }
    }
).encode()


def _response_head(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [b"HTTP/1.1 400 Bad Request\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in default_headers]
    lines += [
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(_BODY)).encode() + b"\r\n",
        b"connection: close\r\n\r\n",
    ]
    return b"".join(lines)


class JsonErrorH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        self.transport.write(_response_head(self.server_state.default_headers) + _BODY)
        self.transport.close()


@functools.cache
def http_protocol() -> type[Any]:
    """The protocol class for `uvicorn.Config(http=...)`: httptools' when installed, else h11's."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is optional in uvicorn
        return JsonErrorH11Protocol

    class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
        def send_400_response(self, msg: str) -> None:
            self.transport.write(_response_head(self.server_state.default_headers) + _BODY)
            self.transport.close()

    return JsonErrorHttpToolsProtocol
