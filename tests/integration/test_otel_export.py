"""OpenTelemetry export (`telemetry.otlp_endpoint`): requests served over HTTP reach a real local
OTLP/HTTP collector as spans (a root `chat {model}` span with the GenAI attributes, one child per
step, laid end to end from the trace's timings), with no prompt, answer, key or address in the
bytes; a collector that is down, failing or slow never fails or slows a request; without the
option the SDK is never imported, and with it but without the `otel` extra `serve` refuses to start."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from llm_gateway.adapters.local.traces import SqliteTraceStore
from llm_gateway.config import hash_key, parse_config
from llm_gateway.deps import Deps
from llm_gateway.http.app import create_app
from llm_gateway.otel import RequestSpans
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, GLOBEX_KEY, make_deps
from tests.support.fake_providers import FakeServer, Script, fake_server, status
from tests.support.otlp_collector import Collector, Span, otlp_collector
from tests.support.servers import closed_url, serve

QUIET_KEY = "sk-test-quiet"
AUTH_ENV = "OTLP_TEST_AUTHORIZATION"
AUTH_VALUE = "Bearer otlp-test-token-7f3a"
SERVER, INTERNAL = 2, 1  # OTLP span kinds
ERROR = 2  # OTLP status code


def config_text(endpoint: str, provider_url: str, timeout_s: float = 5) -> str:
    return f"""
telemetry:
  otlp_endpoint: {endpoint}
  service_name: gateway-under-test
  headers: {{x-scope-orgid: team-a}}
  headers_env: {{authorization: {AUTH_ENV}}}
  timeout_s: {timeout_s}
models:
  echo: {{provider: echo, price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}}}
  broken:
    provider: openai
    provider_model: gpt-fake
    base_url: {provider_url}/v1
    api_key_env: FAKE_OPENAI_KEY
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes: {{default: {{model: echo}}, broken: {{model: broken}}}}
    guards: {{pii: {{enabled: true, default: mask}}}}
    traces: {{store_content: true}}
  globex:
    api_keys: [{{id: k1, sha256: {hash_key(GLOBEX_KEY)}}}]
    routes: {{default: {{model: echo}}}}
    input_blocklist: {{keywords: [codename]}}
    traces: {{enabled: false}}
  quiet:
    api_keys: [{{id: k1, sha256: {hash_key(QUIET_KEY)}}}]
    routes: {{default: {{model: echo}}}}
    traces: {{export: false}}
"""


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeServer]:
    """An OpenAI-compatible upstream that always fails (the `broken` route)."""
    with fake_server("openai", Script(responder=lambda body: status(500))) as server:
        yield server


@pytest.fixture(scope="module", autouse=True)
def environment() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in (AUTH_ENV, "FAKE_OPENAI_KEY")}
    os.environ[AUTH_ENV] = AUTH_VALUE
    os.environ["FAKE_OPENAI_KEY"] = "sk-test-upstream"
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def gateway_deps(endpoint: str, provider: FakeServer, db: Path, timeout_s: float = 5) -> Deps:
    return make_deps(parse_config(config_text(endpoint, provider.url, timeout_s)), db=db, traces=SqliteTraceStore(db))


def spans_of(deps: Deps) -> RequestSpans:
    assert deps.spans is not None
    return deps.spans


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    with otlp_collector() as running:
        yield running


@pytest.fixture(scope="module")
def gateway(
    collector: Collector, provider: FakeServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Deps]]:
    deps = gateway_deps(collector.url, provider, tmp_path_factory.mktemp("otel") / "gateway.db")
    with serve(create_app(InProcessRunner(deps))) as url:
        yield url, deps
    spans_of(deps).close()


def chat(url: str, key: str, content: str, model: str = "default") -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": content}]},
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


def request_spans(spans: list[Span], request_id: str) -> tuple[Span, list[Span]]:
    """The request's root span and its children, in start order."""
    roots = [s for s in spans if s.attributes.get("llm_gateway.request_id") == request_id]
    assert len(roots) == 1, f"{len(roots)} root spans for {request_id}"
    root = roots[0]
    children = sorted((s for s in spans if s.parent_span_id == root.span_id), key=lambda s: s.start_ns)
    return root, children


def test_a_request_arrives_as_a_chat_span_with_genai_attributes_and_one_child_per_step(
    gateway: tuple[str, Deps], collector: Collector
) -> None:
    # Given a tenant that keeps content in its traces and masks PII
    url, deps = gateway
    # When it asks something, and the spans are flushed to the collector
    answered = chat(url, ACME_KEY, "Write to ana@example.com about the zebra-pineapple invoice.")
    assert answered.status_code == 200
    request_id = answered.headers["x-request-id"]
    assert spans_of(deps).flush(10)

    # Then the root span is a GenAI chat span with the gateway's attributes
    root, children = request_spans(collector.spans(), request_id)
    assert root.name == "chat default" and root.kind == SERVER and root.parent_span_id == ""
    assert root.resource["service.name"] == "gateway-under-test"
    body = answered.json()
    assert {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "echo",
        "gen_ai.system": "echo",
        "gen_ai.request.model": "default",
        "gen_ai.response.model": "echo",
        "gen_ai.response.id": body["id"],
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": body["usage"]["prompt_tokens"],
        "gen_ai.usage.output_tokens": body["usage"]["completion_tokens"],
        "llm_gateway.tenant": "acme",
        "llm_gateway.route": "default",
        "llm_gateway.outcome": "ok",
        "llm_gateway.cache_status": "miss",
    }.items() <= root.attributes.items()
    assert root.attributes["llm_gateway.cost_usd"] > 0
    assert "error.type" not in root.attributes and root.status_code == 0

    # and each step is a child of it, in chain order, end to end, timed as the stored trace says
    assert [c.name for c in children] == ["guard", "cache", "router", "invoke", "moderate", "finish"]
    assert {c.trace_id for c in children} == {root.trace_id} and {c.kind for c in children} == {INTERNAL}
    assert children[0].start_ns == root.start_ns and children[-1].end_ns == root.end_ns
    assert all(a.end_ns == b.start_ns for a, b in itertools.pairwise(children))
    stored = deps.traces.get("acme", request_id, time.time()) if deps.traces else None
    assert stored is not None
    for child, step in zip(children, stored.steps, strict=True):
        assert child.attributes["llm_gateway.step"] == step.name
        if step.ms is not None:
            assert child.end_ns - child.start_ns == round(step.ms * 1_000_000)
            assert child.attributes["llm_gateway.step.ms"] == step.ms
    guard, cache, router, invoke = children[:4]
    assert guard.attributes["llm_gateway.guard.outcome"] == "allowed"
    assert ("decision", {"llm_gateway.decision.layer": "pii", "llm_gateway.decision.action": "mask"}) in [
        (name, {k: v for k, v in attrs.items() if k.endswith((".layer", ".action"))}) for name, attrs in guard.events
    ]
    assert cache.attributes["llm_gateway.cache.status"] == "miss"
    assert router.attributes["llm_gateway.router.candidates"] == ["echo"]
    assert invoke.attributes["llm_gateway.invoke.provider"] == "echo"
    assert invoke.attributes["llm_gateway.invoke.usage.prompt_tokens"] == body["usage"]["prompt_tokens"]
    assert [(name, attrs["llm_gateway.attempt.outcome"]) for name, attrs in invoke.events] == [("attempt", "ok")]

    # and the export carried its headers, the one from the environment included
    assert collector.headers[-1]["authorization"] == AUTH_VALUE
    assert collector.headers[-1]["x-scope-orgid"] == "team-a"
    assert collector.headers[-1]["content-type"] == "application/x-protobuf"


def test_a_failed_request_is_an_error_span_and_a_refusal_is_not(
    gateway: tuple[str, Deps], collector: Collector
) -> None:
    url, deps = gateway
    failed = chat(url, ACME_KEY, "Summarise the quarterly walrus ledger.", model="broken")
    assert failed.status_code >= 500
    # globex keeps no traces (traces.enabled: false): its requests are exported all the same
    refused = chat(url, GLOBEX_KEY, "Tell me the codename of the heron project.")
    assert refused.status_code == 400
    assert spans_of(deps).flush(10)
    spans = collector.spans()

    root, children = request_spans(spans, failed.headers["x-request-id"])
    stored = deps.traces.get("acme", failed.headers["x-request-id"], time.time()) if deps.traces else None
    assert stored is not None and stored.error_code is not None
    assert root.status_code == ERROR and root.status_message == stored.error_code
    assert root.attributes["error.type"] == stored.error_code == failed.json()["error"]["code"]
    assert root.attributes["llm_gateway.outcome"] == "error"
    assert "gen_ai.response.id" not in root.attributes and "gen_ai.usage.input_tokens" not in root.attributes
    assert [c.name for c in children] == ["guard", "cache", "router", "failed"]
    assert children[-1].end_ns == root.end_ns  # the failing call's time is the `failed` span's
    assert children[-1].attributes["llm_gateway.failed.status"] == failed.status_code

    root, children = request_spans(spans, refused.headers["x-request-id"])
    assert root.attributes["llm_gateway.tenant"] == "globex"
    assert root.attributes["llm_gateway.outcome"] == "blocked" and root.status_code != ERROR
    assert "error.type" not in root.attributes
    assert [c.name for c in children] == ["guard", "failed"]
    assert children[0].attributes["llm_gateway.guard.layer"] == "blocklist"


def test_a_tenant_that_opts_out_and_an_unknown_caller_export_nothing(
    gateway: tuple[str, Deps], collector: Collector
) -> None:
    url, deps = gateway
    quiet = chat(url, QUIET_KEY, "What are the opening hours?")
    unknown = chat(url, "sk-nobody", "What are the opening hours?")
    assert (quiet.status_code, unknown.status_code) == (200, 401)
    assert spans_of(deps).flush(10)
    ids = {s.attributes.get("llm_gateway.request_id") for s in collector.spans()}
    assert quiet.headers["x-request-id"] not in ids and unknown.headers.get("x-request-id") not in ids
    assert "quiet" not in {s.attributes.get("llm_gateway.tenant") for s in collector.spans()}


def test_no_prompt_answer_key_or_address_is_in_the_exported_bytes(
    gateway: tuple[str, Deps], collector: Collector
) -> None:
    # Runs after the requests above (same module, same collector): every byte they exported.
    url, deps = gateway
    assert chat(url, ACME_KEY, "My card is 4111 1111 1111 1111, call 555-0100 about the okapi.").status_code == 200
    assert spans_of(deps).flush(10)
    raw = collector.raw()
    assert raw
    for secret in (
        "ana@example.com",
        "zebra-pineapple",
        "walrus ledger",
        "heron project",
        "okapi",
        "4111",
        "[EMAIL_1]",  # the masked prompt and the echoed answer
        ACME_KEY,
        GLOBEX_KEY,
        hash_key(ACME_KEY),
        AUTH_VALUE,
        "sk-test-upstream",
        "127.0.0.1",  # the client's address
    ):
        assert secret.encode() not in raw, secret


@pytest.mark.parametrize("down", ["closed port", "answers 500"])
def test_a_collector_that_is_down_or_failing_never_fails_a_request(
    down: str, provider: FakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with otlp_collector(answer=500) as failing:
        endpoint = closed_url() if down == "closed port" else failing.url
        deps = gateway_deps(endpoint, provider, tmp_path / "gateway.db", timeout_s=1)
        try:
            with serve(create_app(InProcessRunner(deps))) as url:
                client = openai.OpenAI(base_url=url + "/v1", api_key=ACME_KEY, max_retries=0)
                for n in range(5):
                    answer = client.chat.completions.create(
                        model="default",
                        messages=[{"role": "user", "content": f"Question {n}?"}],
                    )
                    assert answer.choices[0].message.content
                spans_of(deps).flush(5)  # the export fails; nothing is raised
                more = client.chat.completions.create(model="default", messages=[{"role": "user", "content": "Again?"}])
                assert more.choices[0].message.content
        finally:
            spans_of(deps).close()
        if down == "answers 500":
            assert failing.bodies  # it was sent, and refused
    # the exporter logged its failure (at most); the gateway's own export raised nothing
    assert any(r.name.startswith("opentelemetry") and "export" in r.getMessage().lower() for r in caplog.records)
    assert not [r for r in caplog.records if r.getMessage() == "exporting a request's spans failed"]


def test_a_slow_collector_does_not_slow_a_request(provider: FakeServer, tmp_path: Path) -> None:
    # Given a collector that takes 2 s to answer each export
    with otlp_collector(delay_s=2.0) as slow:
        deps = gateway_deps(slow.url, provider, tmp_path / "gateway.db", timeout_s=5)
        try:
            with serve(create_app(InProcessRunner(deps))) as url:
                took = []
                for n in range(6):
                    started = time.perf_counter()
                    assert chat(url, ACME_KEY, f"Question {n}?").status_code == 200
                    took.append(time.perf_counter() - started)
                    if n == 2:
                        spans_of(deps).flush(0.05)  # an export under way while requests go on
                # Then no request waited for it, and the spans still arrive
                assert max(took) < 1.0, took
                assert spans_of(deps).flush(10)
        finally:
            spans_of(deps).close()
        assert len({s.trace_id for s in slow.spans()}) == 6


SERVE_WITHOUT_EXTRA = """
import sys
sys.modules["opentelemetry.sdk"] = None  # as where the `otel` extra is not installed
from llm_gateway.cli.main import main
sys.exit(main(["serve", "--config", sys.argv[1], "--port", "0"]))
"""

REQUEST_WITHOUT_OPTION = """
import contextlib, sys, time
from llm_gateway.adapters.local.wiring import local_deps
from llm_gateway.config import hash_key, parse_config
from llm_gateway.contracts import CallerContext, ChatCompletionRequest, GatewayState
from llm_gateway.http.app import create_app
from llm_gateway.runner import InProcessRunner

config = parse_config(sys.argv[1])
with contextlib.ExitStack() as stack:
    runner = InProcessRunner(local_deps(config, stack))
    create_app(runner)
    state = GatewayState(
        request_id="r1",
        received_at=time.time(),
        request=ChatCompletionRequest.model_validate(
            {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
        ),
        caller=CallerContext(api_key_sha256=hash_key("sk-test-acme"), client_ip="198.51.100.4"),
    )
    assert runner.run(state).finish.response is not None
exporting = ("opentelemetry.sdk", "opentelemetry.exporter", "llm_gateway.otel")
print(sorted(m for m in sys.modules if m.startswith(exporting)))
"""


def test_without_the_option_the_sdk_is_never_imported(tmp_path: Path) -> None:
    config = f"""
storage_path: {tmp_path / "gateway.db"}
models: {{echo: {{provider: echo}}}}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes: {{default: {{model: echo}}}}
"""
    ran = subprocess.run(
        [sys.executable, "-c", REQUEST_WITHOUT_OPTION, config], capture_output=True, text=True, timeout=120, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().splitlines()[-1] == "[]"


def test_serve_with_the_option_but_without_the_extra_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        textwrap.dedent(f"""
        storage_path: {tmp_path / "gateway.db"}
        telemetry: {{otlp_endpoint: "http://collector.invalid:4318"}}
        models: {{echo: {{provider: echo}}}}
        tenants:
          acme:
            api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
            routes: {{default: {{model: echo}}}}
        """)
    )
    ran = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_EXTRA, str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "`otel` extra" in ran.stderr and "pip install 'llm-gateway[otel]'" in ran.stderr
