"""A new user's path: `llm-gateway serve` on the shipped config, then the openai SDK against it.

Runs the real CLI in a fresh working directory: it starts the local model endpoint (llama.cpp with
the packaged SmolLM2-135M-Instruct) and the gateway, prints `ready <url>` and a key per demo tenant.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from llm_gateway.cli.store_location import DATA_DIR_ENV

pytestmark = pytest.mark.model

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


ADMIN = "(admin)"  # the announcement's admin key, among the tenants' keys until `Served` takes it


class Served:
    def __init__(self, process: subprocess.Popen[str], url: str, keys: dict[str, str]) -> None:
        self.process, self.url, self.keys = process, url, keys
        self.admin_key = keys.pop(ADMIN, "")

    def client(self, tenant: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=self.keys[tenant], max_retries=0, timeout=120)


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def read_announcement(process: subprocess.Popen[str], timeout_s: float = 180) -> tuple[str, dict[str, str]]:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    url = ""
    keys: dict[str, str] = {}
    for line in process.stdout:
        if time.monotonic() > deadline:
            break
        if line.startswith("ready "):
            url = line.split()[1]
        elif (match := re.fullmatch(r"tenant (\S+) key=(\S+)\n", line)) is not None:
            keys[match[1]] = match[2]
        elif (match := re.fullmatch(r"admin key=(\S+)\n", line)) is not None:
            keys[ADMIN] = match[1]
        if url and len(keys) >= 3 and ADMIN in keys:
            return url, keys
    raise AssertionError(f"no ready line (exit code {process.poll()})")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir: Path = tmp_path_factory.mktemp("fresh-user")
    command = [sys.executable, "-m", "llm_gateway.cli.main", "serve", "--port", "0"]
    env = {k: v for k, v in os.environ.items() if k != "LLM_GATEWAY_CONFIG"} | {DATA_DIR_ENV: str(workdir)}
    process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, text=True, env=env)
    try:
        url, keys = read_announcement(process)
        yield Served(process, url, keys)
        endpoint_children = children_of(process.pid)
        assert endpoint_children, "serve should run the model endpoint as a child process"
        # SIGTERM (docker stop, systemd): a clean exit that takes the model endpoint down with it.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert not [pid for pid in endpoint_children if Path(f"/proc/{pid}").exists()]
    finally:
        if process.poll() is None:
            process.kill()


def test_ready_line_names_a_v1_base_url_and_two_demo_tenants(served: Served) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", served.url)
    assert len(served.keys) >= 2
    assert all(key.startswith("sk-gw-") for key in served.keys.values())


def test_the_sdk_gets_a_completion_from_the_local_model_with_usage_and_cost(served: Served) -> None:
    tenant = next(iter(served.keys))
    raw = served.client(tenant).chat.completions.with_raw_response.create(
        model="default",
        messages=QUESTION,
        max_tokens=12,
        temperature=0,  # type: ignore[arg-type]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert "paris" in completion.choices[0].message.content.lower()
    assert completion.model == "smollm2-135m-instruct-q4_1" == raw.headers["x-gateway-model"]
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 12
    assert usage.model_extra is not None and usage.model_extra["cost_usd"] > 0


def test_the_sdk_streams_from_the_local_model(served: Served) -> None:
    tenant = next(iter(served.keys))
    stream = served.client(tenant).chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_repeat_is_served_from_cache_and_other_tenant_is_not(served: Served) -> None:
    first_tenant, second_tenant = list(served.keys)[:2]
    messages = [{"role": "user", "content": "Say hello to the cache."}]
    results = [
        served.client(tenant).chat.completions.with_raw_response.create(
            model="default",
            messages=messages,
            max_tokens=8,
            temperature=0,  # type: ignore[arg-type]
        )
        for tenant in (first_tenant, first_tenant, second_tenant)
    ]
    assert [r.headers["x-gateway-cache"] for r in results] == ["miss", "exact", "miss"]
    assert results[1].parse().choices[0].message.content == results[0].parse().choices[0].message.content


def test_every_demo_tenant_embeds_through_its_embedding_route(served: Served) -> None:
    for tenant in served.keys:
        answer = served.client(tenant).embeddings.create(model="embedding", input=["Where is my parcel?", "Hi"])
        assert [len(row.embedding) for row in answer.data] == [384, 384] and answer.usage.prompt_tokens > 0


def test_a_conversation_continues_through_the_responses_api_and_stays_with_its_tenant(served: Served) -> None:
    first_tenant, second_tenant = list(served.keys)[:2]
    api = served.client(first_tenant)
    first = api.responses.create(model="default", input="What is the capital of France?", max_output_tokens=12)
    assert first.status in ("completed", "incomplete") and first.output_text.strip()
    events = list(
        api.responses.create(
            model="default", input="And of Italy?", previous_response_id=first.id, max_output_tokens=12, stream=True
        )
    )
    # the last event carries the whole response: completed, or incomplete at the token cap (as
    # OpenAI sends it; the SDK's `responses.stream()` helper only returns a completed one)
    assert events[-1].type in ("response.completed", "response.incomplete")
    second = events[-1].response  # type: ignore[union-attr]
    assert second.previous_response_id == first.id and second.output_text.strip()
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens  # the first turn came along
    other = served.client(second_tenant)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="default", input="Go on", previous_response_id=second.id)
    api.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(second.id)  # it continued the deleted one


@pytest.mark.parametrize("stream", [False, True])
def test_the_anthropic_sdk_gets_a_message_through_the_same_route(served: Served, stream: bool) -> None:
    tenant = next(iter(served.keys))
    client = anthropic.Anthropic(
        base_url=served.url.removesuffix("/v1"), api_key=served.keys[tenant], max_retries=0, timeout=120
    )
    ask = [{"role": "user", "content": "Name a colour."}]
    if stream:
        with client.messages.stream(model="default", max_tokens=8, messages=ask) as events:  # type: ignore[arg-type]
            message = events.get_final_message()
    else:
        message = client.messages.create(model="default", max_tokens=8, messages=ask)  # type: ignore[arg-type]
    assert message.content and message.content[0].text.strip()  # type: ignore[union-attr]
    assert message.model == "smollm2-135m-instruct-q4_1" and message.usage.output_tokens > 0


def test_the_local_model_answers_several_choices(served: Served) -> None:
    tenant = next(iter(served.keys))
    answer = served.client(tenant).chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=6, n=2, temperature=1.0
    )  # type: ignore[call-overload]
    assert [c.index for c in answer.choices] == [0, 1]
    assert all(c.message.content for c in answer.choices)
    assert answer.usage is not None and answer.usage.completion_tokens > 0


def test_a_request_is_traced_and_takes_feedback_from_its_tenant_only(served: Served) -> None:
    first_tenant, second_tenant = list(served.keys)[:2]
    raw = served.client(first_tenant).chat.completions.with_raw_response.create(
        model="default",
        messages=[{"role": "user", "content": "Trace this request."}],
        max_tokens=6,  # type: ignore[arg-type]
    )
    request_id = raw.headers["x-request-id"]
    root = served.url.removesuffix("/v1")

    def bearer(tenant: str) -> dict[str, str]:
        return {"authorization": f"Bearer {served.keys[tenant]}"}

    trace = httpx.get(f"{root}/v1/traces/{request_id}", headers=bearer(first_tenant), timeout=30)
    assert trace.status_code == 200
    assert [s["name"] for s in trace.json()["steps"]][-1] == "finish" and trace.json()["model"] == raw.headers[
        "x-gateway-model"
    ]
    assert httpx.get(f"{root}/v1/traces/{request_id}", headers=bearer(second_tenant), timeout=30).status_code == 404
    vote = {"request_id": request_id, "score": 1}
    assert httpx.post(f"{root}/v1/feedback", json=vote, headers=bearer(second_tenant), timeout=30).status_code == 404
    assert httpx.post(f"{root}/v1/feedback", json=vote, headers=bearer(first_tenant), timeout=30).status_code == 200


def test_wrong_key_is_refused(served: Served) -> None:
    client = openai.OpenAI(base_url=served.url, api_key="sk-gw-not-a-real-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="default", messages=QUESTION)  # type: ignore[arg-type]


def test_a_paraphrase_is_served_from_the_semantic_cache_of_the_first_demo_tenant(served: Served) -> None:
    """The shipped config turns the semantic cache on for the first demo tenant: a new user sees it at once."""
    tenant = next(iter(served.keys))
    brief = {"role": "system", "content": "Answer in a few words."}
    first = served.client(tenant).chat.completions.with_raw_response.create(
        model="default",
        messages=[brief, {"role": "user", "content": "What is the capital of France?"}],  # type: ignore[list-item]
        max_tokens=48,
    )
    assert first.parse().choices[0].finish_reason == "stop"  # only complete answers are reused by meaning
    again = served.client(tenant).chat.completions.with_raw_response.create(
        model="default",
        messages=[brief, {"role": "user", "content": "What is France's capital?"}],  # type: ignore[list-item]
        max_tokens=48,
    )
    assert again.headers["x-gateway-cache"] == "semantic"
    assert float(again.headers["x-gateway-cache-score"]) >= 0.8
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content


def wait_for(condition: Callable[[], bool], timeout_s: float = 60, until: bool = True) -> None:
    """Poll `condition` until it returns `until`."""
    deadline = time.monotonic() + timeout_s
    while condition() != until:
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.02)


def test_a_crashed_model_endpoint_is_reaped_logged_and_restarted(tmp_path: Path) -> None:
    """The endpoint child dies of a native crash (SIGSEGV), then is killed (SIGKILL): each time the
    gateway reaps it at once, logs why, says so on /healthz and to requests, and brings it back."""
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "llm_gateway.cli.main", "serve", "--port", "0", "--endpoint-restart-s", "2", "30"]
    env = {k: v for k, v in os.environ.items() if k != "LLM_GATEWAY_CONFIG"} | {DATA_DIR_ENV: str(tmp_path)}
    with log.open("w") as stderr:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    try:
        url, keys = read_announcement(process)
        served = Served(process, url, keys)
        health_url = url.removesuffix("/v1") + "/healthz"
        assert httpx.get(health_url).json()["model_endpoint"] == {"state": "ready", "restarts": 0, "last_exit": None}
        tenant = next(iter(keys))
        for restarts, (signum, name) in enumerate([(signal.SIGSEGV, "SIGSEGV"), (signal.SIGKILL, "SIGKILL")], 1):
            [child] = children_of(process.pid)
            os.kill(child, signum)
            wait_for(Path(f"/proc/{child}").exists, until=False)  # reaped: not even a zombie
            wait_for(lambda: httpx.get(health_url).json()["status"] == "degraded")
            down = httpx.get(health_url)
            # Degraded, not down: the shipped config's `embedding` routes answer in process
            assert down.status_code == 200
            detail = down.json()["model_endpoint"]
            assert (detail["state"], detail["last_exit"]) == ("restarting", f"signal {name}")
            with pytest.raises(openai.APIStatusError) as refused:
                served.client(tenant).chat.completions.create(model="default", messages=QUESTION)  # type: ignore[arg-type]
            assert refused.value.status_code == 503
            assert "local model endpoint is restarting" in refused.value.message

            wait_for(lambda: httpx.get(health_url).json()["status"] == "ok")
            assert httpx.get(health_url).json()["model_endpoint"]["restarts"] == restarts
            answer = served.client(tenant).chat.completions.create(
                model="default",
                messages=QUESTION,  # type: ignore[arg-type]
                max_tokens=12,
                temperature=0,
                extra_headers={"cache-control": "no-cache"},
            )
            assert "paris" in (answer.choices[0].message.content or "").lower()
        [child] = children_of(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert not Path(f"/proc/{child}").exists()
    finally:
        if process.poll() is None:
            process.kill()
    logged = log.read_text()
    assert "died: signal SIGSEGV" in logged and "died: signal SIGKILL" in logged
    assert logged.count("serves again") == 2


def test_the_printed_admin_key_reads_the_metrics_and_the_dashboard(served: Served) -> None:
    base = served.url.removesuffix("/v1")
    served.client("acme").chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Say hello to the dashboard."}], max_tokens=8
    )
    admin = {"authorization": f"Bearer {served.admin_key}"}
    assert served.admin_key.startswith("sk-gw-admin-")
    assert httpx.get(base + "/metrics").status_code == 401
    assert "llm_gateway_request_duration_seconds_bucket" in httpx.get(base + "/metrics", headers=admin).text
    data = httpx.get(base + "/dashboard/data", params={"window": "hour"}, headers=admin, timeout=60).json()
    assert data["totals"]["requests"] >= 1 and "acme" in data["tenants"]
    page = httpx.get(base + "/dashboard", headers=admin)
    assert page.status_code == 200 and "/dashboard/static/uPlot.iife.min.js" in page.text
