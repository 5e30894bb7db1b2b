"""The lean HTTP call to a provider's JSON API: one keep-alive pool per upstream origin (urllib3),
shared by every worker thread.

urllib3 spends about half the CPU of `httpx.Client` on a small JSON request and answer, and a
third of the openai SDK's; the provider call is the largest single cost of a proxied request.
As httpx does, it honours `HTTP(S)_PROXY`/`NO_PROXY` and `SSL_CERT_FILE`, follows a few redirects
(dropping `Authorization` on another host) and never retries: the invoke step retries and falls
back.
"""

from __future__ import annotations

import os
import threading
import urllib.request
from collections.abc import Mapping
from typing import Final, NamedTuple
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import MaxRetryError

from .base import transport_error

MAX_CONNECTIONS_PER_ORIGIN: Final = 256  # as many as the HTTP app's worker threads: none discarded
_RETRIES: Final = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5)


class HttpAnswer(NamedTuple):
    status: int
    headers: Mapping[str, str]  # case-insensitive names
    body: bytes


def _ca_certs() -> str | None:
    """The CA bundle httpx would use: `SSL_CERT_FILE`, else certifi's, else the system's."""
    if os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"):
        return os.environ.get("SSL_CERT_FILE")  # the directory is honoured by OpenSSL's defaults
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with httpx
        return None
    return str(certifi.where())


class UpstreamHttp:
    """`post` a JSON body to a URL and read the whole answer."""

    def __init__(self) -> None:
        self._ca = _ca_certs()
        self._direct = urllib3.PoolManager(
            num_pools=64, maxsize=MAX_CONNECTIONS_PER_ORIGIN, retries=_RETRIES, ca_certs=self._ca
        )
        self._proxied: dict[str, urllib3.ProxyManager] = {}
        self._routes: dict[str, urllib3.PoolManager] = {}  # origin -> the manager that reaches it
        self._timeouts: dict[float, urllib3.Timeout] = {}
        self._lock = threading.Lock()

    def _manager(self, url: str) -> urllib3.PoolManager:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        manager = self._routes.get(origin)
        if manager is None:
            with self._lock:
                manager = self._routes[origin] = self._route(parts.scheme, parts.hostname or "")
        return manager

    def _route(self, scheme: str, host: str) -> urllib3.PoolManager:
        proxy = urllib.request.getproxies_environment().get(scheme)
        if not proxy or urllib.request.proxy_bypass(host):
            return self._direct
        manager = self._proxied.get(proxy)
        if manager is None:
            manager = self._proxied[proxy] = urllib3.ProxyManager(
                proxy, num_pools=64, maxsize=MAX_CONNECTIONS_PER_ORIGIN, retries=_RETRIES, ca_certs=self._ca
            )
        return manager

    def _timeout(self, seconds: float) -> urllib3.Timeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:  # the same limit for connecting and for each read, as httpx's
            timeout = self._timeouts[seconds] = urllib3.Timeout(connect=seconds, read=seconds)
        return timeout

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float, model_id: str) -> HttpAnswer:
        """The upstream's answer, whatever its status. A transport failure (no connection, a
        timeout, a connection closed before the answer was whole) is the provider's error."""
        try:
            response = self._manager(url).request(
                "POST", url, body=body, headers=headers, timeout=self._timeout(timeout_s)
            )
        except MaxRetryError as exc:  # a redirect loop, or a failure after a redirect
            raise transport_error(exc.reason or exc, model_id) from exc
        except (urllib3.exceptions.HTTPError, ValueError) as exc:  # ValueError: a URL it cannot use
            raise transport_error(exc, model_id) from exc
        return HttpAnswer(response.status, response.headers, response.data)
