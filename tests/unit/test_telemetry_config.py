"""`telemetry`: off unless an http(s) endpoint is set; where spans are posted; headers from the file
and from the environment, an unset variable refused at start-up."""

from __future__ import annotations

import pytest

from llm_gateway.config import Telemetry, parse_config
from llm_gateway.errors import ConfigError

BASE = "models:\n  m1: {provider: echo}\ntenants:\n  t: {routes: {default: {model: m1}}}\n"


def test_without_an_endpoint_nothing_is_exported() -> None:
    telemetry = parse_config(BASE).telemetry
    assert telemetry.otlp_endpoint is None and telemetry.traces_url() is None
    assert telemetry.service_name == "llm-gateway"
    assert parse_config(BASE).tenants["t"].traces.export  # tenants are exported unless they opt out


@pytest.mark.parametrize(
    ("endpoint", "posted_to"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("https://otlp.example.com/", "https://otlp.example.com/v1/traces"),
        ("https://otlp.example.com/otlp/v1/traces", "https://otlp.example.com/otlp/v1/traces"),
        ("http://127.0.0.1:4318/tenant-a", "http://127.0.0.1:4318/tenant-a/v1/traces"),
    ],
)
def test_spans_go_to_the_endpoints_traces_path(endpoint: str, posted_to: str) -> None:
    assert Telemetry(otlp_endpoint=endpoint).traces_url() == posted_to


@pytest.mark.parametrize(
    ("telemetry", "message"),
    [
        ("{otlp_endpoint: 'grpc://collector:4317'}", "http:// or https://"),
        ("{otlp_endpoint: 'collector:4318'}", "http:// or https://"),
        ("{otlp_endpoint: 'http://'}", "with a host"),
        ("{otlp_endpoint: 'https://user:pw@collector'}", "no credentials"),
        ("{otlp_endpoint: 'https://collector?x=1'}", "no query"),
        ("{otlp_endpoint: 'http://c', headers: {'bad header': x}}", "not HTTP header names"),
        ("{otlp_endpoint: 'http://c', headers: {x-a: \"1\\r\\nx-b: 2\"}}", "line break"),
        ("{otlp_endpoint: 'http://c', headers_env: {authorization: 'not-a-var'}}", "environment variable names"),
        ("{otlp_endpoint: 'http://c', headers: {Authorization: a}, headers_env: {authorization: T}}", "both set"),
        ("{otlp_endpoint: 'http://c', timeout_s: 0}", "timeout_s"),
        ("{otlp_endpoint: 'http://c', colour: blue}", "telemetry.colour"),
    ],
)
def test_a_bad_telemetry_setting_is_refused_with_its_path(telemetry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(f"telemetry: {telemetry}\n" + BASE)


def test_headers_come_from_the_file_and_the_environment_read_at_start() -> None:
    telemetry = Telemetry(
        otlp_endpoint="https://otlp.example.com",
        headers={"x-scope-orgid": "team-a"},
        headers_env={"authorization": "OTLP_AUTH"},
    )
    assert telemetry.resolved_headers({"OTLP_AUTH": "Bearer t0k"}) == {
        "x-scope-orgid": "team-a",
        "authorization": "Bearer t0k",
    }
    with pytest.raises(ConfigError, match=r"authorization \(OTLP_AUTH\)"):
        telemetry.resolved_headers({})
    with pytest.raises(ConfigError, match="line break"):
        telemetry.resolved_headers({"OTLP_AUTH": "a\r\nb"})
