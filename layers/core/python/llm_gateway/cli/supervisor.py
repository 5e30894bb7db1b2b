"""Supervision of the model endpoint child that `llm-gateway serve` runs (`python -m model_server`).

- `start` launches the child on a free loopback port and returns its URL once it prints its ready
  line; a first start that fails is a `ConfigError` (serve exits 2).
- A watcher thread waits on the child, so an exit is noticed and reaped the moment it happens
  (never a zombie), logged with its exit status or signal, and followed by a new start after a
  backoff that doubles with each exit in a row (`Backoff`: 0.5 s, 1 s, 2 s ... 30 s at most). A
  child that served for `stable_after_s` resets the count; from
  `model_endpoint.CRASH_LOOP_EXITS` exits in a row the endpoint is crash-looping (an error log
  line per start, `"crash_loop": true` on /healthz).
- A restart binds the port the child had, so the URL the gateway calls stays valid; when that
  start fails (the port may have been taken meanwhile) the next one takes any free port, and
  the listeners registered with `on_url_change` learn the new URL (serve re-points the
  configuration the provider reads).
- `health()` (`model_endpoint.EndpointHealth`) is what the router and /healthz read.
- `stop` ends the child (SIGTERM, SIGKILL after 10 s) and the watcher.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import httpx

from ..backoff import doubling_delay
from ..config import LOCAL_ENDPOINT, GatewayConfig
from ..errors import ConfigError
from ..model_endpoint import CRASH_LOOP_EXITS, EndpointHealth, EndpointState

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 10.0
STABLE_AFTER_S = 60.0


@dataclass(frozen=True)
class Backoff:
    """Delay before restarting after `exits` exits in a row: `initial_s`, doubled each time, at most `max_s`."""

    initial_s: float = 0.5
    max_s: float = 30.0

    def delay(self, exits: int) -> float:
        return doubling_delay(self.initial_s, self.max_s, exits - 1)


def describe_exit(returncode: int) -> str:
    """`signal SIGSEGV` for a child killed by a signal, `exit status 3` otherwise."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def local_models(config: GatewayConfig) -> frozenset[str]:
    """The models served by the endpoints that `serve` runs (`endpoint: local`)."""
    return frozenset(n for n, m in config.models.items() if m.provider == "sagemaker" and m.endpoint == LOCAL_ENDPOINT)


def local_endpoint_groups(config: GatewayConfig) -> dict[str | None, frozenset[str]]:
    """The endpoints `serve` runs, one per distinct `weights` file or folder (None: the packaged
    model; spellings of one path — a trailing slash, `..`, a symlink — are one endpoint), and the
    models each serves; the packaged model's first."""
    groups: dict[str | None, set[str]] = {}
    for name in sorted(local_models(config)):
        weights = config.models[name].weights
        groups.setdefault(None if weights is None else os.path.realpath(weights), set()).add(name)
    ordered = sorted(groups, key=lambda weights: (weights is not None, weights or ""))
    return {weights: frozenset(groups[weights]) for weights in ordered}


def with_endpoint_url(
    config: GatewayConfig,
    url: str,
    *,
    current: str = LOCAL_ENDPOINT,
    context_tokens: int | None = None,
    models: Collection[str] | None = None,
) -> GatewayConfig:
    """Point every model served at `current` (the local endpoint, or its former URL) at `url`, or
    only those of `models` among them; with `context_tokens` (what the endpoint reports), that is
    their context window."""
    update: dict[str, object] = {"endpoint": url, "weights": None}
    if context_tokens is not None:
        update["context_tokens"] = context_tokens
    pointed = {
        name: model.model_copy(update=update)
        if model.endpoint == current and (models is None or name in models)
        else model
        for name, model in config.models.items()
    }
    return config.model_copy(update={"models": pointed})


def start_local_endpoints(
    config: GatewayConfig, stack: contextlib.ExitStack, backoff: Backoff | None = None
) -> tuple[GatewayConfig, list[EndpointSupervisor]]:
    """Run an endpoint for each of `local_endpoint_groups` for the `stack`'s lifetime; the
    configuration pointed at them, and their supervisors. A checkpoint that cannot be served is a
    `ConfigError` naming it."""
    supervisors = []
    for weights, models in local_endpoint_groups(config).items():
        named = f"model {', '.join(sorted(models))}"
        problem = None if weights is None else weights_problem(Path(weights))
        if problem is not None:
            raise ConfigError(f"{named}: weights {weights} {problem}")
        supervisor = EndpointSupervisor(models, command=endpoint_command(weights), backoff=backoff)
        try:
            stack.enter_context(supervisor)
        except ConfigError as exc:
            raise ConfigError(f"{named}{'' if weights is None else f' (weights {weights})'}: {exc}") from None
        supervisors.append(supervisor)
        config = with_endpoint_url(config, supervisor.url, context_tokens=supervisor.context_tokens, models=models)
    return config, supervisors


def _is_gguf(weights: str) -> bool:
    return weights.lower().endswith(".gguf")


def weights_problem(weights: Path) -> str | None:
    """Why the endpoint cannot serve `weights` (None: it can): a GGUF file (.gguf) for the
    llama.cpp engine, or a checkpoint folder (its config.json) for the torch engine."""
    if weights.is_file():
        return None if _is_gguf(weights.name) else "are a file but not a GGUF file (.gguf)"
    if weights.is_dir():
        return None if (weights / "config.json").is_file() else "are a folder without config.json (no checkpoint)"
    return "do not exist"


class EndpointStartFailed(Exception):
    """The child did not become ready (it exited, timed out, or the supervisor is stopping)."""


def endpoint_command(weights: str | None = None) -> list[str]:
    """The endpoint's command line: the packaged model, or `weights` (a GGUF file for the llama.cpp
    engine, a checkpoint directory for the torch engine)."""
    command = [sys.executable, "-m", "model_server"]
    if weights is not None:
        engine = "llamacpp" if _is_gguf(weights) else "torch"
        command += ["--engine", engine, "--model-path", weights]
    return command


class EndpointSupervisor:
    """Runs, watches and restarts the model endpoint child; an `EndpointMonitor` for `models`.

    `command` is the endpoint's command line without `--host`/`--port` (tests pass small stand-ins)."""

    def __init__(
        self,
        models: Iterable[str] = (),
        *,
        host: str = "127.0.0.1",
        command: Sequence[str] | None = None,
        backoff: Backoff | None = None,
        stable_after_s: float = STABLE_AFTER_S,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        self.models = frozenset(models)
        self.context_tokens: int | None = None  # as the endpoint reports it on /ping
        self._host = host
        self._command = list(command) if command is not None else endpoint_command()
        self._backoff = backoff or Backoff()
        self._stable_after_s = stable_after_s
        self._ready_timeout_s = ready_timeout_s
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listeners: list[Callable[[str, str], None]] = []
        self._watcher: threading.Thread | None = None
        self._child: subprocess.Popen[str] | None = None  # the latest started, ready or not
        self._serving: subprocess.Popen[str] | None = None
        self._url = ""
        self._started_at = 0.0
        self._state: EndpointState = "starting"
        self._restarts = 0
        self._exits = 0  # in a row
        self._last_exit: str | None = None
        self._restart_at: float | None = None

    def __enter__(self) -> EndpointSupervisor:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL the endpoint serves on now (it changes only if a restart needed a new port)."""
        with self._lock:
            return self._url

    @property
    def pid(self) -> int | None:
        with self._lock:
            return None if self._serving is None else self._serving.pid

    def on_url_change(self, listener: Callable[[str, str], None]) -> None:
        """Call `listener(old_url, new_url)` (on the watcher thread) when a restart moves the endpoint."""
        self._listeners.append(listener)

    def health(self) -> EndpointHealth:
        with self._lock:
            wait = None if self._restart_at is None else max(0.0, self._restart_at - time.monotonic())
            return EndpointHealth(self._state, self._restarts, self._exits, self._last_exit, wait)

    def start(self) -> str:
        """Start the endpoint and wait until it serves; its URL."""
        try:
            process, url = self._spawn(0)
        except EndpointStartFailed as exc:
            raise ConfigError(f"the local model endpoint {exc}") from None
        self._now_serving(process, url)
        self._watcher = threading.Thread(target=self._watch, name="model-endpoint-supervisor", daemon=True)
        self._watcher.start()
        return url

    def stop(self) -> None:
        """Stop the endpoint for good (the watcher does not restart it)."""
        self._stopping.set()
        with self._lock:
            child, self._state, self._restart_at = self._child, "stopped", None
        if child is not None:
            _end(child)
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=STOP_TIMEOUT_S + 5)

    def _spawn(self, port: int) -> tuple[subprocess.Popen[str], str]:
        # llama.cpp's worker threads spin while waiting for each other; on a small machine shared
        # with the gateway a spinning thread that loses its core stalls every token.
        env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}
        command = [*self._command, "--host", self._host, "--port", str(port)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        with self._lock:
            self._child = process
        try:
            if self._stopping.is_set():
                raise EndpointStartFailed("was stopped")
            return process, await_ready(process, self._ready_timeout_s, self._stopping)
        except EndpointStartFailed:
            _end(process)
            raise

    def _now_serving(self, process: subprocess.Popen[str], url: str) -> None:
        context = _reported_context(url)
        with self._lock:
            old, restarted = self._url, self._restarts > 0
            self._serving, self._url, self._started_at = process, url, time.monotonic()
            self._state, self._restart_at = "ready", None
            self.context_tokens = context or self.context_tokens
        if restarted:
            log.warning(
                "the local model endpoint serves again (pid %d, %s) after %d restarts", process.pid, url, self._restarts
            )
        if old and old != url:
            for listener in self._listeners:
                listener(old, url)

    def _watch(self) -> None:
        while True:
            with self._lock:
                process = self._serving
            assert process is not None
            returncode = process.wait()  # reaps the child the moment it exits
            if self._stopping.is_set():
                return
            served_s = time.monotonic() - self._started_at
            with self._lock:
                self._exits = 1 if served_s >= self._stable_after_s else self._exits + 1
                self._last_exit = describe_exit(returncode)
                self._state = "restarting"
            log.error(
                "the local model endpoint (pid %d) died: %s, after serving %.1f s",
                process.pid,
                self._last_exit,
                served_s,
            )
            if not self._restart():
                return

    def _restart(self) -> bool:
        """Start the endpoint again after the backoff, until one start serves (True) or stop (False)."""
        port = urlsplit(self._url).port or 0
        while True:
            with self._lock:
                delay = self._backoff.delay(self._exits)
                self._restart_at = time.monotonic() + delay
                exits, last = self._exits, self._last_exit
            if exits >= CRASH_LOOP_EXITS:
                log.error(
                    "the local model endpoint is crash-looping: %d exits in a row (last: %s); next start in %.1f s",
                    exits,
                    last,
                    delay,
                )
            else:
                log.warning("restarting the local model endpoint in %.1f s", delay)
            if self._stopping.wait(delay):
                return False
            with self._lock:
                self._restarts += 1
                self._restart_at = None
            try:
                process, url = self._spawn(port)
            except EndpointStartFailed as exc:
                if self._stopping.is_set():
                    return False
                with self._lock:
                    self._exits += 1
                    self._last_exit = str(exc)
                log.error("the local model endpoint did not start again on port %d: %s", port, exc)
                port = 0  # the port may have been taken meanwhile: any free one next time
                continue
            self._now_serving(process, url)
            return True


def await_ready(process: subprocess.Popen[str], timeout_s: float, stopping: threading.Event | None = None) -> str:
    """The base URL from the child's `ready <url>` line; `EndpointStartFailed` when it exits first,
    takes longer than `timeout_s`, or `stopping` is set."""
    lines: queue.Queue[str] = queue.Queue()

    def drain() -> None:  # keeps reading so the child never blocks on a full pipe
        assert process.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # the pipe closed under us
            for line in process.stdout:
                lines.put(line)

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stopping is not None and stopping.is_set():
            raise EndpointStartFailed("was stopped")
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            if process.poll() is not None:
                raise EndpointStartFailed(f"exited ({describe_exit(process.returncode)}) before it was ready") from None
            continue
        if line.startswith("ready "):
            return line.split()[1]
    raise EndpointStartFailed("did not become ready in time")


def _reported_context(url: str) -> int | None:
    """The context window the endpoint reports on /ping (None when it does not say)."""
    try:
        value = httpx.get(url.rstrip("/") + "/ping", timeout=5.0).json().get("context_tokens")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def _end(process: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL if it lingers; always reaped."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
