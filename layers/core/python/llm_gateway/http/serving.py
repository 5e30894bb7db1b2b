"""What the gateway's HTTP server and the model endpoint's share: reading a request body within a
byte limit, and a uvicorn server that announces `ready http://HOST:PORT` once its socket listens.

Only starlette and uvicorn: the model endpoint's image imports this module without the gateway's
other dependencies.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn
from starlette.requests import Request


async def read_limited_body(request: Request, limit: int, too_large: Callable[[], Exception]) -> bytes:
    """The body, refusing (`too_large()`) more than `limit` bytes, declared or sent, without
    buffering the excess. A client that disconnects raises starlette's `ClientDisconnect`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large()
    return bytes(body)


def ready_line(host: str, port: int, path: str = "") -> str:
    """`ready http://HOST:PORT<path>`: what a server prints once it listens (IPv6 hosts bracketed)."""
    shown = f"[{host}]" if ":" in host else host
    return f"ready http://{shown}:{port}{path}"


class AnnouncingServer(uvicorn.Server):
    """A uvicorn server that prints `announce(host, port)`'s lines once its socket listens, with
    the bound port (the real one when asked for port 0)."""

    def __init__(self, config: uvicorn.Config, announce: Callable[[str, int], list[str]]) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.should_exit or not self.servers:
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        for line in self._announce(host, port):
            print(line, flush=True)
