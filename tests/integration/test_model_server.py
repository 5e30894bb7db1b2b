"""The model endpoint as the gateway runs it: `python -m model_server --port 0` with the packaged model.

The server is a real subprocess; it announces `ready http://HOST:PORT` once `/ping` answers.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm_gateway.endpoint_contract import NDJSON, InvocationResponse, StreamEvent

pytestmark = pytest.mark.model

MODEL_ID = "smollm2-135m-instruct-q4_1"
MAX_BODY_BYTES = 16_384
START_TIMEOUT_S = 60


class Endpoint:
    """A running endpoint subprocess."""

    def __init__(self, log_dir: Path, start_timeout_s: float = START_TIMEOUT_S, **env: str) -> None:
        self.log = log_dir / "endpoint.stderr"
        with self.log.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "model_server", "--host", "127.0.0.1", "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env={**os.environ, **env},
            )
        lines: queue.Queue[str] = queue.Queue()
        stdout = self.proc.stdout
        assert stdout is not None
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            self.ready = lines.get(timeout=start_timeout_s)
        except queue.Empty:
            self.proc.kill()
            pytest.fail(f"endpoint did not start: {self.log.read_text()}")
        match = re.fullmatch(r"ready (http://127\.0\.0\.1:(\d+))\n", self.ready)
        assert match, f"unexpected ready line {self.ready!r}; stderr: {self.log.read_text()}"
        self.url = match.group(1)
        self.port = int(match.group(2))

    def stop(self) -> int:
        """SIGTERM the server and return its exit status."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    server = Endpoint(
        tmp_path_factory.mktemp("endpoint"),
        MODEL_SERVER_MAX_BODY_BYTES=str(MAX_BODY_BYTES),
        # One thread: with every core busy, llama.cpp's spinning OpenMP barriers stall whenever another
        # process (this test runner included) takes a core; one thread never waits for another.
        MODEL_SERVER_N_THREADS="1",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(endpoint: Endpoint) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=endpoint.url, timeout=60) as http:
        yield http


def _body(content: str = "Tell me about the sea.", **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 12, **fields}


def _invoke(client: httpx.Client, **fields: Any) -> InvocationResponse:
    response = client.post("/invocations", json=_body(**fields))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return InvocationResponse.model_validate_json(response.content)


def _stream(client: httpx.Client, **fields: Any) -> list[StreamEvent]:
    response = client.post("/invocations", json=_body(stream=True, **fields))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(NDJSON)
    assert response.text.endswith("\n")
    return [StreamEvent.model_validate_json(line) for line in response.text.splitlines()]


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    assert "Traceback" not in response.text
    return error


def test_ready_line_names_the_bound_port(endpoint: Endpoint) -> None:
    assert endpoint.port > 0
    assert endpoint.ready == f"ready http://127.0.0.1:{endpoint.port}\n"


def test_ping(client: httpx.Client) -> None:
    response = client.get("/ping")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model": MODEL_ID, "context_tokens": 2048}


def test_invocation(client: httpx.Client) -> None:
    answer = _invoke(client, max_tokens=12)
    assert answer.text.strip()
    assert answer.finish_reason in {"stop", "length"}
    assert answer.usage.prompt_tokens > 0
    assert 0 < answer.usage.completion_tokens <= 12
    assert answer.model == MODEL_ID


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_same_seed_same_text(client: httpx.Client, temperature: float) -> None:
    first = _invoke(client, temperature=temperature, seed=42)
    second = _invoke(client, temperature=temperature, seed=42)
    assert first.text == second.text
    assert first.usage == second.usage


def test_stream_matches_non_stream(client: httpx.Client) -> None:
    answer = _invoke(client, temperature=0, seed=1)
    events = _stream(client, temperature=0, seed=1)
    *deltas, last = events
    assert deltas, "expected at least one delta"
    assert all(e.delta and e.finish_reason is None and e.usage is None for e in deltas)
    assert "".join(e.delta for e in deltas) == answer.text
    assert last.finish_reason == answer.finish_reason
    assert last.usage == answer.usage


def test_final_stream_event_on_the_wire(client: httpx.Client) -> None:
    response = client.post("/invocations", json=_body(stream=True, max_tokens=2))
    last = json.loads(response.text.splitlines()[-1])
    assert set(last) == {"delta", "finish_reason", "usage"}
    assert last["usage"]["completion_tokens"] == 2


def test_length_limit(client: httpx.Client) -> None:
    answer = _invoke(client, max_tokens=3)
    assert answer.finish_reason == "length"
    assert answer.usage.completion_tokens == 3
    last = _stream(client, max_tokens=3)[-1]
    assert last.finish_reason == "length"
    assert last.usage is not None
    assert last.usage.completion_tokens == 3


def test_stop_sequence(client: httpx.Client) -> None:
    answer = _invoke(client, max_tokens=32, stop=[" the"])
    assert answer.finish_reason == "stop"
    assert " the" not in answer.text


def test_concurrent_requests_are_serialized_not_mixed(client: httpx.Client) -> None:
    expected = _invoke(client, max_tokens=8)
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(lambda _: _invoke(client, max_tokens=8), range(3)))
    assert [a.text for a in answers] == [expected.text] * 3


@pytest.mark.parametrize(
    "body",
    [b'{"messages": [', b"not json at all", b"", b"\xff\xfe"],
    ids=["truncated", "text", "empty", "not-utf8"],
)
def test_bad_json(client: httpx.Client, body: bytes) -> None:
    error = _error(client.post("/invocations", content=body), 400)
    assert error["param"] is None
    assert error["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        (_body(temperature=5), "temperature"),
        (_body(max_tokens=0), "max_tokens"),
        (_body(stop=["a", "b", "c", "d", "e"]), "stop"),
        (_body(model="gpt-4"), "model"),
        ([_body()], None),
    ],
    ids=["no-messages", "bad-role", "no-content", "temperature", "max-tokens", "stop", "extra", "array"],
)
def test_schema_violation_names_the_field(client: httpx.Client, body: Any, param: str | None) -> None:
    error = _error(client.post("/invocations", json=body), 400)
    assert error["param"] == param
    if param is not None:
        assert param in error["message"]


def test_prompt_over_context_window_is_a_400(client: httpx.Client) -> None:
    long = "word " * 2500  # ~2500 tokens against the default n_ctx of 2048, within the body limit
    for stream in (False, True):
        error = _error(client.post("/invocations", json=_body(long, stream=stream)), 400)
        assert (error["param"], error["code"]) == ("messages", "context_length_exceeded")
        assert re.fullmatch(
            r"This model's maximum context length is 2048 tokens\. However, your messages resulted in 2\d{3} tokens\. "
            r"Please reduce the length of the messages\.",
            error["message"],
        )


def test_oversized_body_is_a_413(client: httpx.Client) -> None:
    body = json.dumps(_body("a" * MAX_BODY_BYTES)).encode()
    error = _error(client.post("/invocations", content=body), 413)
    assert error["code"] == "request_too_large"

    # Without a Content-Length (chunked upload) the limit is enforced while reading.
    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1024):
            yield body[start : start + 1024]

    error = _error(client.post("/invocations", content=chunks()), 413)
    assert error["code"] == "request_too_large"


def test_unknown_route_and_method(client: httpx.Client) -> None:
    assert client.get("/nope").status_code == 404
    assert client.get("/invocations").status_code == 405


def test_abandoned_stream_frees_the_engine(endpoint: Endpoint) -> None:
    with (
        httpx.Client(base_url=endpoint.url, timeout=60) as http,
        http.stream("POST", "/invocations", json=_body("Tell me a long story.", max_tokens=1500, stream=True)) as r,
    ):
        assert r.status_code == 200
        next(r.iter_lines())
    # Generating the rest of the story would take many seconds; a freed engine answers at once.
    started = time.monotonic()
    with httpx.Client(base_url=endpoint.url, timeout=60) as http:
        response = http.post("/invocations", json=_body(max_tokens=2))
    assert response.status_code == 200
    assert time.monotonic() - started < 15


def test_sigterm_exits_cleanly(tmp_path: Path) -> None:
    server = Endpoint(tmp_path)
    assert httpx.get(server.url + "/ping").status_code == 200
    assert server.stop() == 0
