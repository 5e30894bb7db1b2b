"""The model endpoint supervisor on real child processes (a stand-in endpoint that starts in
milliseconds, `tests/support/fake_endpoint.py`): an exit is reaped and logged at once, the child
comes back after a backoff (on its port, or on a new one the gateway is told about), a crash loop
shows, and the gateway's /healthz and router see all of it."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from llm_gateway.cli.main import repoint
from llm_gateway.cli.supervisor import Backoff, EndpointSupervisor, with_endpoint_url
from llm_gateway.config import GatewayConfig, hash_key, parse_config
from llm_gateway.errors import ConfigError
from llm_gateway.http.app import create_app
from llm_gateway.model_endpoint import EndpointHealth
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, GLOBEX_KEY, make_deps
from tests.support.servers import serve

FAKE = [sys.executable, str(Path(__file__).parents[1] / "support" / "fake_endpoint.py")]


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.01)


def reaped(pid: int) -> bool:
    """No process, not even a zombie, has this pid any more."""
    return not Path(f"/proc/{pid}").exists()


@pytest.fixture
def crash_file(tmp_path: Path) -> Path:
    return tmp_path / "crash"


@pytest.fixture
def supervisor(crash_file: Path) -> Iterator[EndpointSupervisor]:
    with EndpointSupervisor(
        {"local-model"}, command=[*FAKE, "--crash-file", str(crash_file)], backoff=Backoff(0.5, 2.0)
    ) as running:
        yield running


def test_a_killed_endpoint_is_reaped_logged_and_restarted_on_its_port(
    supervisor: EndpointSupervisor, caplog: pytest.LogCaptureFixture
) -> None:
    first_pid, url = supervisor.pid, supervisor.url
    assert first_pid is not None
    assert supervisor.health() == EndpointHealth("ready") and supervisor.context_tokens == 512
    with caplog.at_level(logging.WARNING, logger="llm_gateway.cli.supervisor"):
        os.kill(first_pid, signal.SIGKILL)
        wait_for(lambda: reaped(first_pid) and supervisor.health().state != "ready")
        # While it waits out the backoff, the state says why
        down = supervisor.health()
        assert (down.state, down.last_exit, down.consecutive_exits) == ("restarting", "signal SIGKILL", 1)
        assert down.next_restart_in_s is not None and 0 < down.next_restart_in_s <= 0.5
        wait_for(lambda: supervisor.health().ready)
    assert supervisor.url == url  # the same port: nothing to re-point
    assert supervisor.pid not in (None, first_pid)
    assert supervisor.health() == EndpointHealth("ready", restarts=1, consecutive_exits=1, last_exit="signal SIGKILL")
    assert httpx.get(url + "/ping").json()["status"] == "ok"
    logged = caplog.text
    assert f"(pid {first_pid}) died: signal SIGKILL" in logged and "serves again" in logged


def test_a_crash_loop_backs_off_to_its_cap_shows_and_recovers(
    supervisor: EndpointSupervisor, crash_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    moved: list[tuple[str, str]] = []
    supervisor.on_url_change(lambda old, new: moved.append((old, new)))
    pid = supervisor.pid
    assert pid is not None
    crash_file.touch()  # every new child now dies of SIGSEGV before it is ready
    with caplog.at_level(logging.WARNING, logger="llm_gateway.cli.supervisor"):
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: supervisor.health().consecutive_exits >= 4)
        looping = supervisor.health()
        assert looping.crash_loop and looping.state == "restarting"
        assert looping.last_exit == "exited (signal SIGSEGV) before it was ready"
        assert looping.next_restart_in_s is not None and looping.next_restart_in_s <= 2.0  # capped
        assert looping.as_json()["crash_loop"] is True
        assert "crash-looping: 3 exits in a row" in caplog.text
        crash_file.unlink()
        wait_for(lambda: supervisor.health().ready)
    # A failed start takes any free port next: the gateway was told where the endpoint went
    assert moved and moved[-1][1] == supervisor.url
    assert supervisor.health().restarts >= 3


def test_a_restart_on_a_taken_port_moves_to_a_new_one_and_the_gateway_follows(
    supervisor: EndpointSupervisor,
) -> None:
    deps = make_deps(_config(supervisor.url))
    supervisor.on_url_change(lambda old, new: repoint(deps, old, new))
    old_url, pid = supervisor.url, supervisor.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: reaped(pid))
    with socket.socket() as squatter:  # someone takes the port during the backoff
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT, as a server would
        squatter.bind(("127.0.0.1", urlsplit(old_url).port or 0))
        squatter.listen()
        wait_for(lambda: supervisor.health().ready)
    assert supervisor.url != old_url
    assert supervisor.health().last_exit == "exited (exit status 1) before it was ready"
    assert deps.config.models["local-model"].endpoint == supervisor.url
    assert deps.config.models["echo"].endpoint is None


def test_stop_ends_the_child_for_good(crash_file: Path) -> None:
    running = EndpointSupervisor(command=FAKE, backoff=Backoff(0.05, 0.1))
    running.start()
    pid = running.pid
    assert pid is not None
    running.stop()
    assert reaped(pid)
    assert running.health().state == "stopped"
    time.sleep(0.3)  # longer than the backoff: nothing came back
    assert running.pid == pid and reaped(pid)


def test_a_first_start_that_fails_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match=r"exited \(exit status 3\) before it was ready"):
        EndpointSupervisor(command=[sys.executable, "-c", "raise SystemExit(3)"]).start()


def _config(url: str, fallback: bool = False) -> GatewayConfig:
    """Both tenants route to `local-model` (on the endpoint at `url`); acme's route may fall back to echo."""
    text = f"""
models:
  local-model: {{provider: sagemaker, endpoint: local, timeout_s: 5}}
  echo: {{provider: echo}}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes:
      default: {{model: local-model{", fallbacks: [echo]" if fallback else ""}}}
  globex:
    api_keys: [{{id: k1, sha256: {hash_key(GLOBEX_KEY)}}}]
    routes:
      default: {{model: local-model}}
"""
    return with_endpoint_url(parse_config(text), url)


@pytest.mark.parametrize("fallback", [False, True])
def test_healthz_and_requests_while_the_endpoint_restarts(crash_file: Path, fallback: bool) -> None:
    with EndpointSupervisor({"local-model"}, command=FAKE, backoff=Backoff(30.0, 30.0)) as endpoint:
        deps = make_deps(_config(endpoint.url, fallback))
        deps.model_endpoints = (endpoint,)
        with serve(create_app(InProcessRunner(deps))) as url:
            healthy = httpx.get(url + "/healthz")
            assert healthy.status_code == 200
            assert healthy.json() == {
                "status": "ok",
                "model_endpoint": {"state": "ready", "restarts": 0, "last_exit": None},
            }

            pid = endpoint.pid
            assert pid is not None
            os.kill(pid, signal.SIGSEGV)
            wait_for(lambda: reaped(pid))
            health = httpx.get(url + "/healthz")
            detail = health.json()["model_endpoint"]
            assert health.json()["status"] == "degraded"
            assert (detail["state"], detail["last_exit"], detail["restarts"]) == ("restarting", "signal SIGSEGV", 0)
            # Every route of the config is on the endpoint unless acme's falls back to echo
            assert health.status_code == (200 if fallback else 503)

            client = openai.OpenAI(base_url=url + "/v1", api_key=ACME_KEY, max_retries=0)
            messages = [{"role": "user", "content": "What is the capital of France?"}]
            if fallback:
                raw = client.chat.completions.with_raw_response.create(model="default", messages=messages)  # type: ignore[arg-type]
                assert raw.headers["x-gateway-model"] == "echo"
            else:
                with pytest.raises(openai.APIStatusError) as refused:
                    client.chat.completions.create(model="default", messages=messages)  # type: ignore[arg-type]
                assert refused.value.status_code == 503
                assert refused.value.response.headers["retry-after"] == "30"
                body = refused.value.response.json()["error"]
                assert body["code"] == "model_endpoint_restarting"
                assert body["message"].startswith("The local model endpoint is restarting")
                assert "signal SIGSEGV" in body["message"]
            other = openai.OpenAI(base_url=url + "/v1", api_key=GLOBEX_KEY, max_retries=0)
            with pytest.raises(openai.APIStatusError, match="restarting"):
                other.chat.completions.create(model="default", messages=messages)  # type: ignore[arg-type]


def test_one_endpoint_down_leaves_the_other_endpoints_models_answering(crash_file: Path) -> None:
    """Two endpoints (the packaged model's and a student's): the student's crashing refuses only
    the route on it; /healthz names which endpoint is down and the models it serves."""
    text = f"""
models:
  local-model: {{provider: sagemaker, endpoint: local, timeout_s: 5}}
  student: {{provider: sagemaker, endpoint: local, weights: /students/v1, timeout_s: 5}}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes:
      default: {{model: local-model}}
      learned: {{model: student}}
"""
    config = parse_config(text)
    with (
        EndpointSupervisor({"local-model"}, command=FAKE) as packaged,
        EndpointSupervisor({"student"}, command=FAKE, backoff=Backoff(30.0, 30.0)) as student,
    ):
        config = with_endpoint_url(config, packaged.url, models={"local-model"})
        config = with_endpoint_url(config, student.url, models={"student"})
        assert config.models["student"].endpoint == student.url != config.models["local-model"].endpoint
        deps = make_deps(config)
        deps.model_endpoints = (packaged, student)
        pid = student.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: reaped(pid) and not student.health().ready)
        with serve(create_app(InProcessRunner(deps))) as url:
            health = httpx.get(url + "/healthz")
            assert health.status_code == 200  # the default route still answers
            body = health.json()
            assert body["status"] == "degraded"
            assert body["model_endpoint"]["state"] == "ready"
            states = {tuple(e["models"]): e["state"] for e in body["model_endpoints"]}
            assert states == {("local-model",): "ready", ("student",): "restarting"}
            client = openai.OpenAI(base_url=url + "/v1", api_key=ACME_KEY, max_retries=0)
            messages = [{"role": "user", "content": "What is the capital of France?"}]
            answered = client.chat.completions.create(model="default", messages=messages)  # type: ignore[arg-type]
            assert answered.choices[0].message.content == "fake answer"
            with pytest.raises(openai.APIStatusError) as refused:
                client.chat.completions.create(model="learned", messages=messages)  # type: ignore[arg-type]
            assert refused.value.status_code == 503
            assert refused.value.response.json()["error"]["code"] == "model_endpoint_restarting"
