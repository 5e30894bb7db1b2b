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
    # Then its metrics are on stdout as EMF records in the gateway's namespace, one per label set,
    # the labels as real dimensions (not folded into the names)
    assert first and all(r["_aws"]["CloudWatchMetrics"][0]["Namespace"] == NAMESPACE for r in first)
    request = record_of(first, "request_duration_seconds")
    dimensions = request["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
    assert set(dimensions) >= {"tenant", "route", "model", "outcome"}
    assert (request["tenant"], request["route"], request["model"], request["outcome"]) == (
        "acme",
        "default",
        "echo",
        "ok",
    )
    units = {m["Name"]: m["Unit"] for m in request["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert units["request_duration_seconds"] == "Seconds" and units["requests"] == "Count"
    lookups = record_of(first, "cache_lookups")
    assert lookups["status"] == "miss" and "status" in lookups["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
    assert not any("." in m["Name"] for r in first for m in r["_aws"]["CloudWatchMetrics"][0]["Metrics"])
    # and the service-level copies the alarms read: the service dimension only
    service_level = [r for r in first if r["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]]
    assert len(service_level) == 1
    names = {m["Name"] for m in service_level[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"requests", "request_duration_seconds"} <= names and "cache_lookups" not in names

    # When a streamed request is answered (the client read the whole stream)
    streamed = chat(stream_function, stream=True)
    assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
    second = emf_lines(capsys.readouterr().out)
    # Then that request's metrics were flushed too, on their own (not held for a later request)
    assert record_of(second, "time_to_first_token_seconds")["outcome"] == "cache_hit"  # the same question again
    assert min(r["_aws"]["Timestamp"] for r in second) >= min(r["_aws"]["Timestamp"] for r in first)


def record_of(records: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The one labelled EMF record that carries `metric` (not the service-level copy)."""
    (found,) = [
        r
        for r in records
        if any(m["Name"] == metric for m in r["_aws"]["CloudWatchMetrics"][0]["Metrics"])
        and r["_aws"]["CloudWatchMetrics"][0]["Dimensions"] != [["service"]]
    ]
    return found


def test_a_request_that_records_no_metric_prints_nothing(
    stream_function: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """/healthz records no metric: no empty EMF record and no Powertools warning."""
    assert httpx.get(f"{stream_function}/healthz", timeout=30).status_code == 200
    captured = capsys.readouterr()
    assert emf_lines(captured.out) == []
    assert "No application metrics" not in captured.err
