"""Every way an upstream can fail ends in a documented answer, an audit row and correct usage.

The real HTTP app (uvicorn on loopback) is driven by the official openai SDK. Behind it, for each
provider wire (OpenAI, Anthropic, the SageMaker endpoint contract), one fake upstream plays the
fault under test on every call and another answers in full. Each fault runs with and without a
fallback to the healthy model, streamed and not. The answers the gateway may give (README, "What
the gateway tells you"):

* the fault is retryable and a fallback is configured: 200 with the fallback's complete answer
  and its usage;
* no model is left: 503 `all_models_failed`, nothing charged;
* the stream had already started (the first text was in hand) when the upstream failed: the SSE
  stream ends with an error event (the SDK raises `APIError`), no finish reason and no `[DONE]`;
  what the model generated until then is recorded and charged to the budgets.

Never a 200 with an empty or truncated "successful" answer, never another 5xx, and always one
audit row for the request's `x-request-id`.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llm_gateway.adapters.local.budget import SqliteBudgetLedger
from llm_gateway.adapters.local.sqlite import SqliteStore
from llm_gateway.config import hash_key, parse_config
from llm_gateway.http.app import create_app
from llm_gateway.runner import InProcessRunner
from tests.conftest import make_deps
from tests.support.fake_providers import Behaviour, FakeServer, Ok, Script, fake_server, upstream_faults
from tests.support.fault_upstream import fault, pieces
from tests.support.servers import serve

KEY = "sk-test-reliability"
WIRES = ("openai", "anthropic", "sagemaker")
HEALTHY = Ok(text="The healthy model answers in full.", prompt_tokens=12, completion_tokens=7)
BROKEN_PRICE = "{input_per_mtok: 1.0, output_per_mtok: 2.0}"
HEALTHY_PRICE = "{input_per_mtok: 3.0, output_per_mtok: 4.0}"
BROKEN_TIMEOUT_S = 0.5  # the failing models' timeout_s: a hang or a slow start ends this fast
FAULTS = upstream_faults(BROKEN_TIMEOUT_S)
MID_STREAM_CODES = {"hang": "upstream_timeout", "cut": "upstream_unavailable", "no_finish": "upstream_unavailable"}
PARTIAL_TEXT = "Partial answer from a failing model."  # what `fault()` streams before failing


def _model(name: str, wire: str, server: FakeServer, timeout_s: float, price: str) -> str:
    where = f"endpoint: {server.base_url}" if wire == "sagemaker" else f"base_url: {server.base_url}"
    key = "" if wire == "sagemaker" else f", api_key_env: FAULT_{wire.upper()}_KEY, provider_model: m-{name}"
    return f"  {name}: {{provider: {wire}, {where}{key}, timeout_s: {timeout_s}, price: {price}}}\n"


def _config(servers: dict[str, tuple[FakeServer, FakeServer]]) -> str:
    models, routes = "", ""
    for wire, (broken, healthy) in servers.items():
        models += _model(f"broken-{wire}", wire, broken, BROKEN_TIMEOUT_S, BROKEN_PRICE)
        models += _model(f"healthy-{wire}", wire, healthy, 30, HEALTHY_PRICE)
        routes += f"      {wire}-fallback: {{model: broken-{wire}, fallbacks: [healthy-{wire}]}}\n"
        routes += f"      {wire}-alone: {{model: broken-{wire}}}\n"
    return f"""
models:
{models}tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(KEY)}}}]
    routes:
{routes}    rate_limit: {{requests_per_minute: 600000, burst: 100000}}
    budgets: [{{scope: tenant, period: day, usd: 1000}}]
"""


class Plan:
    """What the failing upstreams play on every call (set by each test)."""

    behaviour: Behaviour = Ok()

    def __call__(self, body: Any) -> Behaviour:
        return self.behaviour


@dataclass
class Gateway:
    url: str
    runner: InProcessRunner
    store: SqliteStore
    ledger: SqliteBudgetLedger
    plan: Plan
    broken: dict[str, FakeServer]

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=KEY, max_retries=0, timeout=30)

    def audit(self, request_id: str) -> list[tuple[Any, ...]]:
        return self.store.query(
            "SELECT outcome, error_code, model, prompt_tokens, completion_tokens, cost_usd, attempts"
            " FROM audit WHERE request_id = ?",
            (request_id,),
        )

    def usage(self, request_id: str) -> list[tuple[Any, ...]]:
        return self.store.query(
            "SELECT model, prompt_tokens, completion_tokens, cost_usd FROM usage WHERE request_id = ?", (request_id,)
        )

    def budget(self) -> tuple[int, int, int, int]:
        rows = self.store.query(
            "SELECT sum(spent_nusd), sum(spent_tokens), sum(reserved_nusd), sum(reserved_tokens) FROM budget_counter"
        )
        spent_nusd, spent_tokens, reserved_nusd, reserved_tokens = (int(str(v or 0)) for v in rows[0])
        return spent_nusd, spent_tokens, reserved_nusd, reserved_tokens


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    plan = Plan()
    mp = pytest.MonkeyPatch()
    for wire in WIRES:
        mp.setenv(f"FAULT_{wire.upper()}_KEY", f"sk-upstream-{wire}")
    with (
        fake_server("openai", Script(responder=plan)) as broken_openai,
        fake_server("openai", Script(responder=lambda body: HEALTHY)) as healthy_openai,
        fake_server("anthropic", Script(responder=plan)) as broken_anthropic,
        fake_server("anthropic", Script(responder=lambda body: HEALTHY)) as healthy_anthropic,
        fake_server("sagemaker", Script(responder=plan)) as broken_endpoint,
        fake_server("sagemaker", Script(responder=lambda body: HEALTHY)) as healthy_endpoint,
    ):
        servers = {
            "openai": (broken_openai, healthy_openai),
            "anthropic": (broken_anthropic, healthy_anthropic),
            "sagemaker": (broken_endpoint, healthy_endpoint),
        }
        db: Path = tmp_path_factory.mktemp("faults") / "gateway.db"
        ledger = SqliteBudgetLedger(db)
        deps = make_deps(parse_config(_config(servers)), db=db, budgets=ledger)
        runner = InProcessRunner(deps)
        assert isinstance(deps.audit, SqliteStore)
        with serve(create_app(runner)) as url:
            yield Gateway(url + "/v1", runner, deps.audit, ledger, plan, {w: s[0] for w, s in servers.items()})
    mp.undo()


@dataclass
class Outcome:
    """What one request got: status, request id, text, finish reasons, usage, the stream's error."""

    status: int
    request_id: str
    headers: Mapping[str, str]
    text: str = ""
    finishes: tuple[str | None, ...] = ()
    usage: tuple[int, int] | None = None
    error: openai.APIError | None = None


def _ask(gateway: Gateway, route: str, prompt: str, streamed: bool) -> Outcome:
    messages: Any = [{"role": "user", "content": prompt}]
    completions = gateway.client().chat.completions.with_raw_response
    try:
        if not streamed:
            raw = completions.create(model=route, messages=messages, max_tokens=32)
            answer = raw.parse()
            usage = (answer.usage.prompt_tokens, answer.usage.completion_tokens) if answer.usage else None
            return Outcome(
                raw.status_code,
                raw.headers["x-request-id"],
                raw.headers,
                answer.choices[0].message.content or "",
                (answer.choices[0].finish_reason,),
                usage,
            )
        raw_stream = completions.create(
            model=route, messages=messages, max_tokens=32, stream=True, stream_options={"include_usage": True}
        )
    except openai.APIStatusError as refused:
        headers = refused.response.headers
        return Outcome(refused.status_code, headers["x-request-id"], headers, error=refused)
    outcome = Outcome(raw_stream.status_code, raw_stream.headers["x-request-id"], raw_stream.headers)
    finishes: list[str | None] = []
    try:
        for chunk in raw_stream.parse():
            for choice in chunk.choices:
                outcome.text += choice.delta.content or ""
                finishes.append(choice.finish_reason)
            if chunk.usage is not None:
                outcome.usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
    except openai.APIError as failed:  # the stream's error event
        outcome.error = failed
    outcome.finishes = tuple(f for f in finishes if f is not None)
    return outcome


def _expectation(fault_name: str, fallback: bool, streamed: bool) -> str:
    if streamed and fault_name in MID_STREAM_CODES:
        return "stream_error"  # the first text was in hand: the stream had started
    return "fallback_answer" if fallback else "all_models_failed"


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("streamed", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "alone"])
@pytest.mark.parametrize("fault_name", list(FAULTS))
def test_upstream_fault_has_a_documented_answer_an_audit_row_and_correct_usage(
    gateway: Gateway, fault_name: str, fallback: bool, streamed: bool, wire: str
) -> None:
    # Given a failing upstream playing the fault on every call
    gateway.plan.behaviour = FAULTS[fault_name]
    gateway.broken[wire].script.reset()
    spent_before = gateway.budget()
    route = f"{wire}-{'fallback' if fallback else 'alone'}"
    prompt = f"Reliability check {fault_name} {wire} {route} streamed={streamed} {time.time_ns()}"

    # When a client asks
    got = _ask(gateway, route, prompt, streamed)

    # Then the answer is the documented one, with an audit row and the right usage and charges
    expected = _expectation(fault_name, fallback, streamed)
    rows = gateway.audit(got.request_id)
    assert len(rows) == 1, f"{expected}: one audit row for {got.request_id}, got {rows}"
    outcome, error_code, model, prompt_tokens, completion_tokens, cost, attempts = rows[0]
    charged = [a - b for a, b in zip(gateway.budget(), spent_before, strict=True)]
    retries = len(gateway.broken[wire].script.requests)

    if expected == "fallback_answer":
        assert (got.status, got.error) == (200, None)
        assert got.text == HEALTHY.text and got.finishes == ("stop",)
        assert got.usage == (HEALTHY.prompt_tokens, HEALTHY.completion_tokens)
        assert got.headers["x-gateway-model"] == f"healthy-{wire}"
        assert retries == 3  # every fault is retried on the failing model before falling back
        expected_cost = (HEALTHY.prompt_tokens * 3.0 + HEALTHY.completion_tokens * 4.0) / 1e6
        assert (outcome, error_code, model, attempts) == ("ok", None, f"healthy-{wire}", retries + 1)
        assert (prompt_tokens, completion_tokens) == (HEALTHY.prompt_tokens, HEALTHY.completion_tokens)
        assert cost == pytest.approx(expected_cost)
        assert gateway.usage(got.request_id) == [(f"healthy-{wire}", prompt_tokens, completion_tokens, cost)]
        assert charged[1:] == [prompt_tokens + completion_tokens, 0, 0] and charged[0] >= expected_cost * 1e9

    elif expected == "all_models_failed":
        assert got.status == 503 and isinstance(got.error, openai.APIStatusError)
        assert got.error.code == "all_models_failed" and f"broken-{wire}" in got.error.message
        if fault_name == "429":
            assert got.headers["retry-after"] == "1"
        assert (outcome, error_code, prompt_tokens, completion_tokens, cost) == ("error", "all_models_failed", 0, 0, 0)
        assert gateway.usage(got.request_id) == []
        assert charged == [0, 0, 0, 0]  # nothing charged, the reservation released

    else:  # stream_error
        assert got.status == 200 and got.headers["x-gateway-model"] == f"broken-{wire}"
        assert isinstance(got.error, openai.APIError) and not isinstance(got.error, openai.APIStatusError)
        assert got.error.code == MID_STREAM_CODES[fault_name]
        assert got.finishes == () and got.usage is None  # never passed off as a finished answer
        assert PARTIAL_TEXT.startswith(got.text)  # at most what the model sent; held back here
        assert (outcome, error_code, model) == ("error", MID_STREAM_CODES[fault_name], f"broken-{wire}")
        # What the model generated until it failed is billed: one token per delta, the prompt estimated
        assert completion_tokens == len(pieces(PARTIAL_TEXT)) and prompt_tokens >= len(prompt) // 4
        assert cost == pytest.approx((prompt_tokens * 1.0 + completion_tokens * 2.0) / 1e6) and cost > 0
        assert gateway.usage(got.request_id) == [(f"broken-{wire}", prompt_tokens, completion_tokens, cost)]
        assert charged[1:] == [prompt_tokens + completion_tokens, 0, 0] and charged[0] >= cost * 1e9


def test_an_error_event_ends_the_raw_stream_without_done_after_released_text(gateway: Gateway) -> None:
    """Text past the hold-back window has reached the client when the upstream drops: the stream
    then carries the error event as its last event, with no finish reason and no [DONE]."""
    long_text = "This answer is long enough to leave the hold-back window before it breaks. " * 4
    gateway.plan.behaviour = fault("cut", text=long_text)
    with httpx.stream(
        "POST",
        gateway.url + "/chat/completions",
        json={"model": "openai-fallback", "messages": [{"role": "user", "content": "cut me"}], "stream": True},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line]
        request_id = response.headers["x-request-id"]
    assert events[-1].startswith('data: {"error":') and "upstream_unavailable" in events[-1]
    assert "[DONE]" not in "".join(events) and '"finish_reason":"' not in "".join(events)
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    released = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert len(released) > 100 and long_text.startswith(released)  # text had left before the failure
    rows = gateway.audit(request_id)
    assert rows[0][:3] == ("error", "upstream_unavailable", "broken-openai")
    assert rows[0][4] == len(pieces(long_text))


def test_a_request_the_client_abandons_while_sending_is_still_audited(gateway: Gateway) -> None:
    """A failure before the chain saw the request (the body never arrived) still leaves a row: a
    499 client_closed_request."""
    before = len(gateway.store.query("SELECT 1 FROM audit WHERE error_code = 'client_closed_request'"))
    host, port = gateway.url.removeprefix("http://").removesuffix("/v1").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {KEY}\r\nContent-Length: 1000\r\n\r\n".encode()
            + b'{"model": "openai-alone"'
        )
    for _ in range(200):  # the server notices the hang-up on its own schedule
        rows = gateway.store.query("SELECT tenant, outcome FROM audit WHERE error_code = 'client_closed_request'")
        if len(rows) > before:
            break
        time.sleep(0.025)
    assert len(rows) == before + 1 and rows[-1] == ("acme", "error")


def test_a_stream_the_client_leaves_before_reading_is_recorded_as_abandoned(gateway: Gateway) -> None:
    """The client reads the headers (and its x-request-id), then hangs up before any chunk."""
    gateway.plan.behaviour = Ok("A long answer. " * 40)
    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST",
            gateway.url + "/chat/completions",
            headers={"authorization": f"Bearer {KEY}"},
            json={"model": "openai-alone", "stream": True, "messages": [{"role": "user", "content": "left early"}]},
        ) as response,
    ):
        request_id = response.headers["x-request-id"]
    for _ in range(200):
        rows = gateway.audit(request_id)
        if rows:
            break
        time.sleep(0.025)
    assert rows and rows[0][:2] == ("error", "client_closed_request")
