"""Run any ASGI app with uvicorn in a background thread on 127.0.0.1 and a free port.

    with ServerThread(app) as server:
        httpx.get(server.url + "/health")

or, when only the URL is needed, `with serve(app) as url: ...`. The server is listening when
`start()` returns and fully stopped (thread joined, socket closed) when `stop()` returns.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self

import uvicorn

HOST = "127.0.0.1"


class Lifecycle:
    """`with x:` starts on entry and stops on exit, for anything with `start()` and `stop()`."""

    def start(self) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ServerThread(Lifecycle):
    """One uvicorn server bound to 127.0.0.1:<free port>, served from a daemon thread."""

    def __init__(
        self,
        app: Any,
        *,
        startup_timeout_s: float = 10.0,
        shutdown_timeout_s: float = 5.0,
        **uvicorn_options: Any,
    ) -> None:
        options: dict[str, Any] = {
            "log_level": "warning",
            "log_config": None,  # leave the test process's logging alone
            "access_log": False,
            "lifespan": "auto",
            "timeout_graceful_shutdown": 1,
        }
        options.update(uvicorn_options)
        self._config = uvicorn.Config(app, host=HOST, port=0, **options)
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None
        self._startup_timeout_s = startup_timeout_s
        self._shutdown_timeout_s = shutdown_timeout_s
        self._error: BaseException | None = None
        self.port: int = 0

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. `http://127.0.0.1:54321`."""
        if not self.port:
            raise RuntimeError("the server is not started")
        return f"http://{HOST}:{self.port}"

    def start(self) -> str:
        """Start serving and wait until the socket listens; return the base URL."""
        if self._thread is not None:
            raise RuntimeError("the server was already started")
        self._thread = threading.Thread(target=self._run, name="uvicorn-test-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the test server failed to start") from self._error
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the test server did not start within {self._startup_timeout_s} s")
            time.sleep(0.005)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self.url

    def _run(self) -> None:
        try:
            self._server.run()
        except BaseException as exc:  # surfaced by start(); SystemExit on startup failure included
            self._error = exc

    def stop(self) -> None:
        """Ask the server to exit, then join its thread (forcing the exit if it lingers)."""
        thread = self._thread
        if thread is None:
            return
        self._server.should_exit = True
        thread.join(self._shutdown_timeout_s)
        if thread.is_alive():
            self._server.force_exit = True
            thread.join(self._shutdown_timeout_s)
        if thread.is_alive():
            raise RuntimeError("the test server did not stop")
        self._thread = None


@contextmanager
def serve(app: Any, **uvicorn_options: Any) -> Iterator[str]:
    """Serve `app` for the duration of the block; yield its base URL."""
    with ServerThread(app, **uvicorn_options) as server:
        yield server.url


def free_port() -> int:
    """A port nothing listens on right now (the OS picked it and it was released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def closed_url() -> str:
    """A base URL whose port refuses connections."""
    return f"http://{HOST}:{free_port()}"
