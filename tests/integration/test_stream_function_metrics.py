"""The streaming function (functions/stream/app.py behind Lambda Web Adapter) has no Lambda handler
to flush its Powertools metrics: each request's metrics reach stdout as an EMF line of the
gateway's namespace, streamed or not, before the client has the end of the answer.

The function's app runs on a real uvicorn on 127.0.0.1 over the Lambda runtime's SQLite store and
the echo model (tests/events/config.yaml), as run.sh starts it.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm_gateway.aws import runtime
from llm_gateway.aws.observability import metrics
from tests.support.servers import ServerThread

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"
KEY = "sk-test-acme"  # tenant acme in tests/events/config.yaml
NAMESPACE = "LlmGateway"


def emf_lines(out: str) -> list[dict[str, Any]]:
    """The CloudWatch embedded-metric-format records printed in `out`."""
    records = []
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            records.append(json.loads(line))
    return records


@pytest.fixture
def stream_function(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    monkeypatch.setenv("GATEWAY_CONFIG_PATH", str(EVENTS / "config.yaml"))
    monkeypatch.setenv("GATEWAY_SQLITE_PATH", str(tmp_path / "stream.db"))
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)
    runtime.settings.cache_clear()
    runtime.deps.cache_clear()
    metrics.clear_metrics()
    spec = importlib.util.spec_from_file_location("stream_function_app", ROOT / "functions" / "stream" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with ServerThread(module.app, lifespan="off") as server:
        yield server.url
    metrics.clear_metrics()
    runtime.deps.cache_clear()
    runtime.settings.cache_clear()


def chat(url: str, *, stream: bool) -> httpx.Response:
    body = {"model": "default", "messages": [{"role": "user", "content": "Say hello"}], "stream": stream}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)


def test_each_request_flushes_its_metrics_as_emf_on_stdout(
    stream_function: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the streaming function, when a non-streamed request is answered
    answered = chat(stream_function, stream=False)
    assert answered.status_code == 200, answered.text
    first = emf_lines(capsys.readouterr().out)
    # Then its metrics are on stdout as one EMF record in the gateway's namespace
    assert len(first) == 1, first
    directive = first[0]["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == NAMESPACE
    names = {m["Name"] for m in directive["Metrics"]}
    assert any(name.startswith("cache_lookups.") for name in names), names

    # When a streamed request is answered (the client read the whole stream)
    streamed = chat(stream_function, stream=True)
    assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
    second = emf_lines(capsys.readouterr().out)
    # Then that request's metrics were flushed too, on their own (not held for a later request)
    assert len(second) == 1, second
    assert second[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == NAMESPACE
    assert second[0]["_aws"]["Timestamp"] >= first[0]["_aws"]["Timestamp"]


def test_a_request_that_records_no_metric_prints_nothing(
    stream_function: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """/healthz records no metric: no empty EMF record and no Powertools warning."""
    assert httpx.get(f"{stream_function}/healthz", timeout=30).status_code == 200
    captured = capsys.readouterr()
    assert emf_lines(captured.out) == []
    assert "No application metrics" not in captured.err
