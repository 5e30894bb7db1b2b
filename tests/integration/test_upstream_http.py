"""The lean provider call (`providers/upstream_http.py`) against real servers on 127.0.0.1:
redirects, proxies from the environment, and every transport failure as a provider error."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from llm_gateway.errors import ProviderTimeout, ProviderUnavailable
from llm_gateway.providers.upstream_http import UpstreamHttp
from tests.support.servers import free_port, serve

HEADERS = {"Authorization": "Bearer secret-key", "Content-Type": "application/json"}


def _recording_app(seen: list[dict[str, Any]], redirect_to: str | None = None) -> Starlette:
    async def endpoint(request: Request) -> Response:
        body = await request.body()
        seen.append({"path": request.url.path, "headers": dict(request.headers), "body": body, "url": str(request.url)})
        if redirect_to is not None and request.url.path == "/moved":
            return RedirectResponse(redirect_to, status_code=307)
        return JSONResponse({"echo": body.decode()}, headers={"retry-after": "3"})

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["POST"])])


@pytest.fixture
def http() -> UpstreamHttp:
    return UpstreamHttp()


def test_posts_the_body_and_reads_the_answer(http: UpstreamHttp) -> None:
    seen: list[dict[str, Any]] = []
    with serve(_recording_app(seen)) as url:
        answer = http.post(url + "/v1/chat/completions", b'{"a": 1}', HEADERS, 5.0, "m")
        again = http.post(url + "/v1/chat/completions", b'{"a": 2}', HEADERS, 5.0, "m")
    assert answer.status == 200 and answer.body == b'{"echo":"{\\"a\\": 1}"}'
    assert answer.headers.get("Retry-After") == "3"  # header names are case-insensitive
    assert again.body == b'{"echo":"{\\"a\\": 2}"}'
    assert [s["headers"]["authorization"] for s in seen] == ["Bearer secret-key"] * 2


def test_follows_a_redirect_with_the_body_and_drops_the_key_on_another_host(http: UpstreamHttp) -> None:
    elsewhere: list[dict[str, Any]] = []
    here: list[dict[str, Any]] = []
    with serve(_recording_app(elsewhere)) as other, serve(_recording_app(here, redirect_to=other + "/v1/x")) as url:
        answer = http.post(url + "/moved", b'{"q": "x"}', HEADERS, 5.0, "m")
    assert answer.status == 200
    assert [s["path"] for s in here] == ["/moved"]
    assert elsewhere[0]["body"] == b'{"q": "x"}'  # a 307 keeps the method and the body
    assert "authorization" not in elsewhere[0]["headers"]  # the key is not handed to another origin


def test_goes_through_the_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    with serve(_recording_app(seen)) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        answer = UpstreamHttp().post("http://upstream.invalid:9/v1/chat/completions", b"{}", HEADERS, 5.0, "m")
        assert answer.status == 200
        assert seen[0]["headers"]["host"] == "upstream.invalid:9"  # asked of the proxy, by absolute URL
        monkeypatch.setenv("NO_PROXY", "upstream.invalid")
        with pytest.raises(ProviderUnavailable, match="unreachable"):  # bypassed: straight to a name that fails
            UpstreamHttp().post("http://upstream.invalid:9/v1/chat/completions", b"{}", HEADERS, 5.0, "m")
    assert len(seen) == 1


def test_a_refused_connection_is_unreachable(http: UpstreamHttp) -> None:
    with pytest.raises(ProviderUnavailable, match="unreachable") as caught:
        http.post(f"http://127.0.0.1:{free_port()}/v1/chat/completions", b"{}", HEADERS, 5.0, "m")
    assert not isinstance(caught.value, ProviderTimeout)


def test_a_url_it_cannot_use_is_unreachable(http: UpstreamHttp) -> None:
    with pytest.raises(ProviderUnavailable, match="unreachable"):
        http.post("ftp://127.0.0.1/v1/chat/completions", b"{}", HEADERS, 5.0, "m")


@pytest.fixture
def raw_server() -> Iterator[tuple[int, list[bytes]]]:
    """A socket server whose every answer is the next scripted byte string, then a close (or, for
    b"", silence until the client gives up)."""
    script: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                reply = script.pop(0) if script else b""
                if reply:
                    conn.sendall(reply)
                else:
                    stop.wait(2.0)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1]), script
    stop.set()
    thread.join(5)
    listener.close()


def test_a_body_cut_short_is_a_closed_connection(http: UpstreamHttp, raw_server: tuple[int, list[bytes]]) -> None:
    port, script = raw_server
    script.append(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"choices": [')
    with pytest.raises(ProviderUnavailable, match="closed the connection"):
        http.post(f"http://127.0.0.1:{port}/v1/chat/completions", b"{}", HEADERS, 5.0, "m")


def test_a_silent_upstream_times_out(http: UpstreamHttp, raw_server: tuple[int, list[bytes]]) -> None:
    port, _ = raw_server
    with pytest.raises(ProviderTimeout):
        http.post(f"http://127.0.0.1:{port}/v1/chat/completions", b"{}", HEADERS, 0.3, "m")
