"""The local dashboard: `GET /dashboard` (the page), `GET /dashboard/data` (its numbers,
`dashboard.dashboard_data`), `/dashboard/static/*` (its script and the vendored uPlot charting
library, served from the package: nothing is fetched from elsewhere at run time).

The page and its data take an admin key as `Authorization: Bearer <key>`. A browser, which cannot
send that header on its own, is shown a sign-in form instead (HTTP 401): the key it posts to
`/dashboard/login` is checked and exchanged for a session cookie (random, HttpOnly, SameSite=Strict,
path `/dashboard`, 12 hours, kept in this process's memory only); `/dashboard/logout` ends it.
"""

from __future__ import annotations

import functools
import hmac
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING

import anyio.to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ..errors import (
    AuthenticationFailed,
    ClientClosedRequest,
    GatewayError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
)
from .serving import read_limited_body

if TYPE_CHECKING:  # the dashboard's reading: loaded on its first view, not with the app
    from ..adapters.local.sqlite import SqliteStore
    from ..alerts import AlertState
    from ..dashboard import Window
    from ..deps import Deps

COOKIE = "llm_gateway_dashboard"
SESSION_S = 12 * 3600.0
_MAX_SESSIONS = 1024
_LOGIN_BODY_BYTES = 4096
_STATIC = {  # the files the page loads: name -> media type
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
}
_FRESH_S = 10.0  # how long a computed view is served again
_SIGN_IN_FAILURES = 10  # failed sign-ins from one address ...
_SIGN_IN_WINDOW_S = 60.0  # ... in this long, and it waits
_NOSNIFF = {"X-Content-Type-Options": "nosniff"}
_PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@functools.cache
def _static(name: str) -> bytes:
    """A file of the page's (the vendored library's files are under `vendor/`, its licence beside them)."""
    folder = resources.files("llm_gateway.http") / "static"
    return (folder / "vendor" / name if name.startswith("uPlot") else folder / name).read_bytes()


class DashboardSessions:
    """Sign-in sessions of this process: token -> expiry."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._sessions: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def start(self) -> str:
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._sessions = {t: e for t, e in self._sessions.items() if e > now}
            if len(self._sessions) >= _MAX_SESSIONS:  # the oldest gives way
                del self._sessions[min(self._sessions, key=self._sessions.__getitem__)]
            self._sessions[token] = now + SESSION_S
        return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            expiry = self._sessions.get(token)
        return expiry is not None and expiry > self._clock()

    def end(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)


class Dashboard:
    def __init__(
        self,
        deps: Deps,
        is_admin: Callable[[Request], bool],
        error_response: Callable[[GatewayError], Response],
    ) -> None:
        self.deps = deps
        self._is_admin = is_admin
        self._error = error_response
        self.sessions = DashboardSessions(deps.clock)
        self.attempts = SignInAttempts(deps.clock)
        self._computing = threading.Lock()
        self._cache: dict[tuple[str, str | None], tuple[float, dict[str, object]]] = {}
        self._alerts: tuple[float, list[AlertState]] | None = None

    def routes(self) -> list[Route]:
        return [
            Route("/dashboard", self.page, methods=["GET"]),
            Route("/dashboard/data", self.data, methods=["GET"]),
            Route("/dashboard/login", self.login, methods=["POST"]),
            Route("/dashboard/logout", self.logout, methods=["POST"]),
            Route("/dashboard/static/{name}", self.static, methods=["GET"]),
        ]

    def _allowed(self, request: Request) -> bool:
        return self._is_admin(request) or self.sessions.valid(request.cookies.get(COOKIE))

    async def page(self, request: Request) -> Response:
        if self._allowed(request):
            return Response(_static("dashboard.html"), media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)
        return self._sign_in(request, failed=False)

    def _sign_in(self, request: Request, failed: bool) -> Response:
        """A browser gets the sign-in form; any other client the API's 401."""
        if "text/html" not in request.headers.get("accept", ""):
            return self._error(AuthenticationFailed("An admin API key is required."))
        page = _static("login.html").decode()
        message = "That is not an admin key." if failed else ""
        body = page.replace("{{message}}", message)
        return Response(body, status_code=401, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    async def login(self, request: Request) -> Response:
        try:
            body = await read_limited_body(
                request, _LOGIN_BODY_BYTES, lambda: PayloadTooLarge("The sign-in form is too large.")
            )
        except PayloadTooLarge as error:
            return self._error(error)
        except ClientDisconnect:
            return self._error(ClientClosedRequest("The client closed the request."))
        client = request.client.host if request.client else "-"
        if not self.attempts.allowed(client):
            wait = f"Too many failed sign-ins: try again in {int(_SIGN_IN_WINDOW_S)} s."
            return self._error(RateLimited(wait, retry_after_s=_SIGN_IN_WINDOW_S))
        try:
            fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
        except ValueError:  # more fields than a sign-in form has
            fields = {}
        key = (fields.get("key") or [""])[0].strip()
        if not key or not self._admin_key(key):
            self.attempts.failed(client)
            return self._sign_in(request, failed=True)
        response = RedirectResponse("/dashboard", status_code=303)
        response.set_cookie(
            COOKIE,
            self.sessions.start(),
            max_age=int(SESSION_S),
            path="/dashboard",
            httponly=True,
            samesite="strict",
            secure=_https(request),
        )
        return response

    def _admin_key(self, key: str) -> bool:
        from ..config import hash_key

        digest = hash_key(key)
        return any(hmac.compare_digest(digest, k.sha256) for k in self.deps.config.admin_api_keys)

    async def logout(self, request: Request) -> Response:
        self.sessions.end(request.cookies.get(COOKIE))
        response = RedirectResponse("/dashboard", status_code=303)
        response.delete_cookie(COOKIE, path="/dashboard", httponly=True, samesite="strict", secure=_https(request))
        return response

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return self._error(NotFound(f"No dashboard file '{name}'."))
        return Response(_static(name), media_type=_STATIC[name], headers={**_NOSNIFF, "Cache-Control": "max-age=3600"})

    async def data(self, request: Request) -> Response:
        if not self._allowed(request):
            return self._error(AuthenticationFailed("An admin API key is required."))
        from ..adapters.local.sqlite import SqliteStore
        from ..dashboard import WINDOWS

        window = WINDOWS.get(request.query_params.get("window", "hour"))
        tenant = request.query_params.get("tenant") or None
        if window is None:
            return self._error(InvalidRequest(f"window is one of {', '.join(WINDOWS)}.", param="window"))
        if tenant is not None and tenant not in self.deps.config.tenants:
            return self._error(InvalidRequest(f"Unknown tenant '{tenant}'.", param="tenant"))
        store = self.deps.audit
        if not isinstance(store, SqliteStore):
            return self._error(NotFound("The dashboard reads the local store; this deployment keeps none."))
        found = await anyio.to_thread.run_sync(self._read, store, window, tenant)
        return JSONResponse(found, headers={**_NOSNIFF, "Cache-Control": "no-store"})

    def _read(self, store: SqliteStore, window: Window, tenant: str | None) -> dict[str, object]:
        """The data, computed at most once every `_FRESH_S` per window and tenant, one computation
        at a time (however many pages are open), on a read-only connection of its own: a week of
        a busy store takes seconds to read, and never holds up a request."""
        from ..alerts import LocalAlertHistory, evaluate
        from ..dashboard import dashboard_data, model_changes

        key = (window.name, tenant)
        with self._computing:
            cached = self._cache.get(key)
            now = self.deps.clock()
            if cached is not None and now - cached[0] < _FRESH_S:
                return cached[1]
            flush = getattr(self.deps.traces, "flush", None)
            if flush is not None:  # traces queued for the writer are counted too
                flush()
            with store.reader() as query:
                if self._alerts is None or now - self._alerts[0] >= self.deps.config.alerting.interval_s:
                    # the rules read a week of baseline: evaluated as often as `serve`'s watcher does
                    self._alerts = (now, evaluate(self.deps.config, LocalAlertHistory(query), now))
                data = dashboard_data(query, self.deps.config, window, now, tenant, self._alerts[1])
                changes = model_changes(self.deps.rollouts, self.deps.experiments, query, tenant)
                found = {**data, **changes, "tenants": sorted(self.deps.config.tenants)}
            self._cache[key] = (now, found)
            return found


def _https(request: Request) -> bool:
    """Whether the browser reached the gateway over TLS (directly, or through a proxy that says so)."""
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


class SignInAttempts:
    """Failed sign-ins per client address: `_SIGN_IN_FAILURES` in `_SIGN_IN_WINDOW_S` and the
    address waits (admin keys are long and random; this keeps guessing slow and the log quiet)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def allowed(self, client: str) -> bool:
        now = self._clock()
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if now - t < _SIGN_IN_WINDOW_S]
            if recent:
                self._failures[client] = recent
            else:
                self._failures.pop(client, None)
            return len(recent) < _SIGN_IN_FAILURES

    def failed(self, client: str) -> None:
        with self._lock:
            if len(self._failures) >= _MAX_SESSIONS and client not in self._failures:
                self._failures.pop(next(iter(self._failures)))  # the oldest address gives way
            self._failures.setdefault(client, []).append(self._clock())
