"""moto in server mode on 127.0.0.1 and a free port, and boto3 clients pointed at it.

    with moto_server() as moto:
        dynamodb = moto.client("dynamodb")          # or aws_client("dynamodb", moto.url)
        ...
        moto.reset()                                 # forget every resource

`start_moto()` returns a started `MotoServer` for fixtures that manage the lifetime themselves.
The server runs in this process (a werkzeug thread), so tests can reach moto's internals when they
must (e.g. to replace its Lambda invoke). moto keeps its backends in module globals: two servers in
one process share the same resources, and `reset()` clears them for both.

No environment variable of this process is changed. Clients get dummy credentials and the region
explicitly; `environment()` gives the variables a subprocess (a Lambda handler run by a launcher)
needs to reach the same server through boto3's `AWS_ENDPOINT_URL`.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

from tests.support.servers import Lifecycle

HOST = "127.0.0.1"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "aws_session_token": "testing"}


def aws_client(service: str, endpoint: str, region: str = REGION, **config: Any) -> Any:
    """A boto3 low-level client for `service` at `endpoint`, with dummy credentials and `region`.

    A fresh boto3 session each time: nothing is read from or cached in the default session, the
    shared config files or the environment's credentials. `config` goes to `botocore.config.Config`."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(region_name=region, **CREDENTIALS)
    settings: dict[str, Any] = {"retries": {"mode": "standard", "max_attempts": 2}}
    settings.update(config)
    return session.client(service, endpoint_url=endpoint, config=Config(**settings))


def _one_request_at_a_time(server: Any) -> None:
    """Make a `ThreadedMotoServer` handle one request at a time. moto's in-memory backends are
    not thread-safe (concurrent DynamoDB transactions corrupt each other's snapshot), while the
    real service makes every request atomic: with this, each request is atomic too, and clients
    still race between their requests. Not for servers whose requests call back into themselves
    (Step Functions running Lambdas), which would wait on the lock forever."""
    import threading

    from moto.moto_server.threaded_moto_server import make_server
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

    lock = threading.Lock()

    def entry() -> None:
        app = DomainDispatcherApplication(create_backend_app)

        def serialised(environ: Any, start_response: Any) -> Any:
            with lock:
                return list(app(environ, start_response))

        server._server = make_server(
            server._ip_address, server._port, serialised, True, request_handler=MotoRequestHandler
        )
        server._server_ready_event.set()
        server._server.serve_forever()

    server._server_entry = entry


class MotoServer(Lifecycle):
    """One moto server; `.url` is its endpoint URL. `serialised`: one request at a time (see
    `_one_request_at_a_time`), for concurrency tests."""

    def __init__(self, port: int = 0, serialised: bool = False) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        werkzeug = logging.getLogger("werkzeug")
        if werkzeug.level == logging.NOTSET:  # werkzeug would otherwise print a line per request
            werkzeug.setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
        if serialised:
            _one_request_at_a_time(self._server)
        self._url: str | None = None

    @property
    def url(self) -> str:
        """Endpoint URL without a trailing slash, e.g. `http://127.0.0.1:54321`."""
        if self._url is None:
            raise RuntimeError("the moto server is not started")
        return self._url

    def start(self) -> str:
        if self._url is not None:
            raise RuntimeError("the moto server was already started")
        self._server.start()
        host, port = self._server.get_host_and_port()
        self._url = f"http://{host}:{port}"
        return self._url

    def stop(self) -> None:
        if self._url is not None:
            self._server.stop()
            self._url = None

    def __enter__(self) -> Self:
        if self._url is None:
            self.start()
        return self

    def client(self, service: str, region: str = REGION, **config: Any) -> Any:
        """`aws_client(service, self.url, region, **config)`."""
        return aws_client(service, self.url, region, **config)

    def reset(self) -> None:
        """Delete every resource in every backend (moto's `/moto-api/reset`)."""
        self._post("/moto-api/reset", b"")

    def configure(self, settings: dict[str, Any]) -> None:
        """Post moto's runtime configuration, e.g. `{"stepfunctions": {"execute_state_machine": True}}`."""
        self._post("/moto-api/config", json.dumps(settings).encode())

    def environment(self, region: str = REGION) -> dict[str, str]:
        """Environment variables that point a subprocess's boto3 clients at this server."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
            "AWS_SESSION_TOKEN": CREDENTIALS["aws_session_token"],
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
        }

    def _post(self, path: str, body: bytes) -> None:
        request = urllib.request.Request(self.url + path, data=body, method="POST")  # noqa: S310 - loopback http
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            answer.read()


def start_moto(port: int = 0, serialised: bool = False) -> MotoServer:
    """A started moto server on 127.0.0.1 (`port=0`: a free one); stop it with `.stop()`."""
    server = MotoServer(port, serialised=serialised)
    server.start()
    return server


@contextmanager
def moto_server(port: int = 0, serialised: bool = False) -> Iterator[MotoServer]:
    """A moto server for the duration of the block."""
    with start_moto(port, serialised) as server:
        yield server
