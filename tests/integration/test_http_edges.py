"""HTTP edges: /metrics for admins only, 405 names the allowed methods, and HTTP that uvicorn
cannot parse gets the same OpenAI-style JSON error as everything else."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from llm_gateway.config import hash_key, parse_config
from llm_gateway.http.app import create_app
from llm_gateway.http.protocol import JsonErrorH11Protocol, http_protocol
from llm_gateway.observability import InMemoryMetrics
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, BASE_CONFIG, make_deps
from tests.support.servers import ServerThread

ADMIN_KEY = "sk-test-edges-admin"


@pytest.fixture(scope="module", params=["httptools", "h11"])
def root(request: pytest.FixtureRequest) -> Iterator[str]:
    config = parse_config(BASE_CONFIG + f"admin_api_keys: [{{id: ops, sha256: {hash_key(ADMIN_KEY)}}}]\n")
    app = create_app(InProcessRunner(make_deps(config, metrics=InMemoryMetrics())))
    protocol = http_protocol() if request.param == "httptools" else JsonErrorH11Protocol
    with ServerThread(app, http=protocol) as server:
        yield server.url


def _ask(root: str) -> None:
    httpx.post(
        root + "/v1/chat/completions",
        headers={"authorization": f"Bearer {ACME_KEY}"},
        json={"model": "default", "messages": [{"role": "user", "content": "hi"}]},
    ).raise_for_status()


def test_metrics_need_an_admin_key(root: str) -> None:
    _ask(root)
    for headers in ({}, {"authorization": f"Bearer {ACME_KEY}"}, {"authorization": "Bearer sk-wrong"}):
        refused = httpx.get(root + "/metrics", headers=headers)
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        assert "llm_gateway_" not in refused.text
    allowed = httpx.get(root + "/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert allowed.status_code == 200 and "llm_gateway_cache_lookups_total" in allowed.text


def test_a_wrong_method_is_a_405_naming_the_allowed_ones(root: str) -> None:
    response = httpx.get(root + "/v1/chat/completions")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
    ],
)
def test_unparseable_http_gets_a_json_error(root: str, raw: bytes) -> None:
    parts = urlsplit(root)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as conn:
        conn.sendall(raw)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"content-type: application/json" in head.lower()
    assert body.startswith(b'{"error"') and b'"type": "invalid_request_error"' in body


def test_only_chat_completions_hand_out_a_request_id_and_it_names_an_audit_row(root: str) -> None:
    # Routes that keep no audit record give no id to look one up by
    for response in (
        httpx.get(root + "/v1/models"),
        httpx.get(root + "/metrics"),
        httpx.get(root + "/no/such/route"),
        httpx.put(root + "/v1/chat/completions"),
    ):
        assert response.status_code >= 400 and "x-request-id" not in response.headers
    refused = httpx.post(root + "/v1/chat/completions", content=b"{not json", headers={"authorization": "Bearer x"})
    assert refused.status_code == 400 and refused.headers["x-request-id"]


def test_oversized_headers_are_refused_before_any_route_reads_them(root: str) -> None:
    response = httpx.get(root + "/v1/models", headers={"authorization": "Bearer " + "k" * 40_000})
    assert response.status_code == 431
    assert response.json()["error"]["code"] == "request_headers_too_large"
    assert httpx.get(root + "/v1/models", headers={"authorization": f"Bearer {ACME_KEY}"}).status_code == 200


def test_an_admin_purge_body_over_the_limit_is_a_413(root: str) -> None:
    big = {"tenant": "acme", "system_prompt": "x" * 2_000_000}
    response = httpx.post(root + "/admin/cache/purge", json=big, headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
