"""The local dashboard (`GET /dashboard`, admin key) after real traffic over HTTP: its data
(`/dashboard/data`) agrees with the audit log, the metrics and the review queue; in headless
Chromium (Debian's, driven by Playwright) the page draws its charts as `<canvas>` elements holding
the numbers the API reports; a browser without the header signs in with the key; the page loads
nothing from elsewhere."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llm_gateway.adapters.local.experiments import SqliteExperimentStore
from llm_gateway.adapters.local.review import SqliteReviewQueue
from llm_gateway.adapters.local.rollouts import SqliteRolloutStore
from llm_gateway.adapters.local.sqlite import SqliteStore
from llm_gateway.adapters.local.traces import SqliteTraceStore
from llm_gateway.alerts import percentile
from llm_gateway.config import parse_config
from llm_gateway.dashboard import WINDOWS, dashboard_data
from llm_gateway.experiments import ab
from llm_gateway.experiments.rollouts import start as start_rollout
from llm_gateway.http.app import create_app
from llm_gateway.observability import InMemoryMetrics
from llm_gateway.ports import AuditRecord, Variant
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, GLOBEX_KEY, hash_key, make_deps
from tests.support.servers import free_port, serve

ADMIN_KEY = "sk-test-dashboard-admin"
CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]


def config_text(down_url: str) -> str:
    return f"""
admin_api_keys: [{{id: ops, sha256: {hash_key(ADMIN_KEY)}}}]
models:
  echo: {{provider: echo, price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}}}
  down:
    provider: openai
    provider_model: gpt-fake
    base_url: {down_url}
    api_key_env: FAKE_OPENAI_KEY
    price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes: {{default: {{model: echo}}, broken: {{model: down}}}}
  globex:
    api_keys: [{{id: k1, sha256: {hash_key(GLOBEX_KEY)}}}]
    routes: {{default: {{model: echo}}}}
    input_blocklist: {{keywords: [codename]}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    os.environ.setdefault("FAKE_OPENAI_KEY", "sk-fake")
    db = tmp_path_factory.mktemp("dashboard") / "gateway.db"
    config = parse_config(config_text(f"http://127.0.0.1:{free_port()}/v1"))  # nothing listens there
    deps = make_deps(
        config, db=db, traces=SqliteTraceStore(db), review=SqliteReviewQueue(db), metrics=InMemoryMetrics()
    )
    with serve(create_app(InProcessRunner(deps))) as url:
        yield url


def ask(url: str, key: str, content: str, model: str = "default", stream: bool = False) -> str:
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    messages: Any = [{"role": "user", "content": content}]
    if stream:
        with client.chat.completions.with_streaming_response.create(model=model, messages=messages, stream=True) as r:
            for _ in r.iter_lines():
                pass
            return r.headers["x-request-id"]
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    return raw.headers["x-request-id"]


@pytest.fixture(scope="module")
def traffic(gateway: str) -> dict[str, Any]:
    """What was sent: acme 6 answers (one streamed), 2 cache hits, 2 failures; globex 3 answers and
    1 refusal; feedback: one thumbs up, one thumbs down."""
    answered = [ask(gateway, ACME_KEY, f"Summarise point {i} of the release notes.") for i in range(5)]
    streamed = ask(gateway, ACME_KEY, "Stream the summary.", stream=True)
    for i in range(2):
        ask(gateway, ACME_KEY, f"Summarise point {i} of the release notes.")  # exact cache hits
    for _ in range(2):
        with pytest.raises(openai.APIStatusError):
            ask(gateway, ACME_KEY, "Use the broken route.", model="broken")
    for i in range(3):
        ask(gateway, GLOBEX_KEY, f"Translate sentence {i} into French.")
    with pytest.raises(openai.BadRequestError):
        ask(gateway, GLOBEX_KEY, "Tell me the codename.")
    for request_id, score in ((answered[0], 1), (answered[1], -1)):
        given = httpx.post(
            gateway + "/v1/feedback",
            json={"request_id": request_id, "score": score},
            headers={"authorization": f"Bearer {ACME_KEY}"},
        )
        assert given.status_code == 200, given.text
    return {"requests": 14, "errors": 2, "refused": 1, "cache_hits": 2, "feedback": 2, "streamed": streamed}


def admin(url: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url + path, headers={"authorization": f"Bearer {ADMIN_KEY}"}, **kwargs)


def scrape(url: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(admin(url, "/metrics").text)}


def test_the_data_agrees_with_the_traffic_the_metrics_and_the_review_queue(
    gateway: str, traffic: dict[str, Any]
) -> None:
    data = admin(gateway, "/dashboard/data", params={"window": "hour"}).json()
    totals = data["totals"]
    assert totals["requests"] == traffic["requests"] == sum(data["series"]["requests"])
    assert totals["errors"] == traffic["errors"] == sum(data["series"]["errors"])
    assert totals["refused"] == traffic["refused"] == sum(data["series"]["refused"])
    assert totals["cache_hits"] == traffic["cache_hits"]
    assert totals["error_rate"] == pytest.approx(2 / 14)
    assert totals["feedback"] == 2 and totals["satisfaction"] == pytest.approx(0.5)
    assert totals["review_pending"] == 1  # the thumbs-down
    assert totals["guard_triggered"] == 1 and sum(sum(s) for s in data["series"]["guard_triggers"].values()) == 1
    # the metrics count the same requests and cost
    families = scrape(gateway)
    counted = sum(s.value for s in families["llm_gateway_requests"].samples if s.name.endswith("_total"))
    assert counted == totals["requests"]
    cost = sum(s.value for s in families["llm_gateway_cost_usd"].samples if s.name.endswith("_total"))
    assert totals["cost_usd"] == pytest.approx(cost, rel=1e-6)
    assert sum(sum(series) for series in data["series"]["cost_usd"].values()) == pytest.approx(cost, rel=1e-6)
    by_model = {(r["tenant"], r["model"]): r["requests"] for r in data["cost_by_model"]}  # cache hits too
    assert by_model[("acme", "echo")] == 8 and by_model[("globex", "echo")] == 3
    # latency and the first token: the answered requests' percentiles, TTFT never after the end
    latency, ttft = totals["latency_ms"], totals["ttft_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert 0 < ttft["p50"] <= ttft["p95"] <= latency["p99"]  # one end time for a request's record and trace
    streamed = httpx.get(
        f"{gateway}/v1/traces/{traffic['streamed']}", headers={"authorization": f"Bearer {ACME_KEY}"}
    ).json()
    assert 0 < streamed["first_token_ms"] <= streamed["latency_ms"]  # a stream's first text, not after its end
    # one tenant's view counts that tenant only
    globex = admin(gateway, "/dashboard/data", params={"window": "day", "tenant": "globex"}).json()
    assert globex["totals"]["requests"] == 4 and list(globex["series"]["cost_usd"]) == ["globex"]
    assert len(globex["times"]) == 96


def test_the_data_and_the_page_need_the_admin_key(gateway: str) -> None:
    assert httpx.get(gateway + "/dashboard/data").status_code == 401
    tenant = httpx.get(gateway + "/dashboard/data", headers={"authorization": f"Bearer {ACME_KEY}"})
    assert tenant.status_code == 401 and tenant.json()["error"]["code"] == "invalid_api_key"
    api = httpx.get(gateway + "/dashboard", headers={"accept": "application/json"})
    assert api.status_code == 401 and "error" in api.json()
    browser = httpx.get(gateway + "/dashboard", headers={"accept": "text/html"})
    assert browser.status_code == 401 and '<form method="post" action="/dashboard/login">' in browser.text
    page = admin(gateway, "/dashboard")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("params", "param"), [({"window": "month"}, "window"), ({"window": "hour", "tenant": "initech"}, "tenant")]
)
def test_a_bad_window_or_tenant_is_a_400(gateway: str, params: dict[str, str], param: str) -> None:
    answer = admin(gateway, "/dashboard/data", params=params)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == param


def test_the_page_loads_only_its_own_files_and_the_vendored_library_is_the_pinned_one(gateway: str) -> None:
    assert httpx.get(gateway + "/dashboard/static/../config.py").status_code == 404
    assert httpx.get(gateway + "/dashboard/static/login.html").status_code == 404
    served = httpx.get(gateway + "/dashboard/static/uPlot.iife.min.js")
    assert served.status_code == 200 and served.headers["content-type"].startswith("text/javascript")
    page = admin(gateway, "/dashboard").text
    assert "http://" not in page and "https://" not in page  # no CDN: every script and style is the gateway's
    installed = REPO / "node_modules" / "uplot" / "dist" / "uPlot.iife.min.js"
    if not installed.exists():
        pytest.skip("npm ci has not installed node_modules")
    assert served.content == installed.read_bytes()  # the vendored copy is package.json's pinned version


def test_a_wrong_sign_in_is_refused_and_a_large_form_is_413(gateway: str) -> None:
    wrong = httpx.post(gateway + "/dashboard/login", data={"key": ACME_KEY}, headers={"accept": "text/html"})
    assert wrong.status_code == 401 and "That is not an admin key." in wrong.text and "set-cookie" not in wrong.headers
    right = httpx.post(gateway + "/dashboard/login", data={"key": ADMIN_KEY})
    assert right.status_code == 303 and "httponly" in right.headers["set-cookie"].lower()
    cookie = right.cookies["llm_gateway_dashboard"]
    assert httpx.get(gateway + "/dashboard/data", cookies={"llm_gateway_dashboard": cookie}).status_code == 200
    assert httpx.get(gateway + "/dashboard/data", cookies={"llm_gateway_dashboard": "forged"}).status_code == 401
    huge = httpx.post(gateway + "/dashboard/login", content=b"key=" + b"x" * 10_000)
    assert huge.status_code == 413


# --- in a real browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def chart_data(page: Any, chart: str) -> list[list[float | None]]:
    return page.evaluate(f"() => window.llmGatewayDashboard.charts['{chart}'].data.map(c => Array.from(c))")


def test_the_page_draws_the_numbers_the_api_reports(
    gateway: str, traffic: dict[str, Any], browser: Any, tmp_path: Path
) -> None:
    context = browser.new_context(
        viewport={"width": 1400, "height": 1000}, extra_http_headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    requests_elsewhere: list[str] = []
    page = context.new_page()
    page.on("request", lambda r: None if r.url.startswith(gateway) else requests_elsewhere.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(gateway + "/dashboard")
    page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
    assert page.locator("canvas").count() >= 6  # each chart a <canvas> (uPlot)
    api = page.evaluate("() => window.llmGatewayDashboard.data")  # what the page fetched from the API
    again = admin(gateway, "/dashboard/data", params={"window": "hour"}).json()
    assert api["totals"] == again["totals"] and api["series"]["requests"] == again["series"]["requests"]
    times, requests, errors_series, refused = chart_data(page, "chart-traffic")
    assert times == api["times"]
    assert requests == api["series"]["requests"] and sum(requests) == traffic["requests"]  # type: ignore[arg-type]
    assert errors_series == api["series"]["errors"] and refused == api["series"]["refused"]
    latency = chart_data(page, "chart-latency")
    assert latency[2] == api["series"]["latency_ms"]["p95"] and latency[4] == api["series"]["ttft_ms"]["p50"]
    cost = chart_data(page, "chart-cost")
    assert cost[1:] == [api["series"]["cost_usd"][t] for t in sorted(api["series"]["cost_usd"])]
    assert page.locator("[data-total=requests]").inner_text() == str(traffic["requests"])
    assert page.locator("[data-total=review_pending]").inner_text() == "1"
    assert page.locator("#cost-by-model tbody tr").count() == len(api["cost_by_model"])
    # another window redraws from its own data
    page.click("button[data-window=day]")
    page.wait_for_function("() => window.llmGatewayDashboard.data.window === 'day'")
    assert len(chart_data(page, "chart-traffic")[0]) == 96
    page.click("button[data-window=hour]")
    page.wait_for_function("() => window.llmGatewayDashboard.data.window === 'hour'")
    assert not errors and not requests_elsewhere
    shot = os.environ.get("DASHBOARD_SCREENSHOT") or str(tmp_path / "dashboard.png")  # docs/images: set it
    page.screenshot(path=shot, full_page=True)
    assert Path(shot).stat().st_size > 10_000
    context.close()


def test_a_browser_signs_in_with_the_key_and_out_again(gateway: str, traffic: dict[str, Any], browser: Any) -> None:
    context = browser.new_context()
    page = context.new_page()
    first = page.goto(gateway + "/dashboard")
    assert first is not None and first.status == 401
    page.fill("#key", "sk-not-the-key")
    page.click("button[type=submit]")
    assert "That is not an admin key." in page.inner_text(".message")
    page.fill("#key", ADMIN_KEY)
    page.click("button[type=submit]")
    page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
    assert page.locator("canvas").count() >= 6
    assert page.locator("[data-total=requests]").inner_text() == str(traffic["requests"])
    cookie = next(c for c in context.cookies() if c["name"] == "llm_gateway_dashboard")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.click("text=Sign out")
    page.wait_for_selector("#key")
    context.close()


# --- the numbers, against the alert's own reading ---------------------------------------------------


def test_percentiles_per_bucket_are_the_nearest_rank_values_the_latency_alert_reads(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "audit.db", checkpoint_interval_s=0)
    rng = random.Random(20261206)
    now = 1_800_000_000.0
    window = WINDOWS["hour"]
    recorded: dict[int, list[float]] = {}
    since = now - window.span_s  # `now` falls on a minute: the buckets end there
    for i in range(900):
        at = since + rng.uniform(0, window.span_s)
        latency = round(rng.lognormvariate(5, 1), 3)
        store.record(
            AuditRecord(
                request_id=f"r{i}",
                ts=at,
                tenant="acme",
                key_id=None,
                user_hash=None,
                client_ip_hash=None,
                route="default",
                model="echo",
                provider="echo",
                cache=None,
                prompt_tokens=3,
                completion_tokens=5,
                cached_tokens=0,
                cost_usd=0.0,
                latency_ms=latency,
                attempts=1,
                outcome="ok",
                error_code=None,
            )
        )
        recorded.setdefault(int((at - since) // window.bucket_s), []).append(latency)
    config = parse_config(config_text("http://127.0.0.1:9/v1"))
    data = dashboard_data(store.query, config, window, now)
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        expected = [percentile(recorded[b], q) if b in recorded else None for b in range(60)]
        assert data["series"]["latency_ms"][name] == expected
        every = [v for values in recorded.values() for v in values]
        assert data["totals"]["latency_ms"][name] == percentile(every, q)
    assert data["series"]["ttft_ms"]["p50"] == [None] * 60  # this store keeps no traces: none, not an error
    store.close()


# --- hostile and damaged input ----------------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A gateway of its own (the dashboard caches a view for seconds, and counts failed sign-ins)."""
    db = tmp_path / "gateway.db"
    config = parse_config(config_text("http://127.0.0.1:9/v1"))
    deps = make_deps(
        config,
        db=db,
        traces=SqliteTraceStore(db),
        review=SqliteReviewQueue(db),
        rollouts=SqliteRolloutStore(db),
        experiments=SqliteExperimentStore(db),
    )
    with serve(create_app(InProcessRunner(deps))) as url:
        yield url, deps


def test_failed_sign_ins_are_throttled_and_an_odd_form_is_just_a_failure(fresh: tuple[str, Any]) -> None:
    url, _ = fresh
    odd = httpx.post(url + "/dashboard/login", content=b"a=1&b=2&c=3&d=4&e=5&key=x", headers={"accept": "text/html"})
    assert odd.status_code == 401 and "That is not an admin key." in odd.text
    for _ in range(9):
        assert httpx.post(url + "/dashboard/login", data={"key": "sk-guess"}).status_code == 401
    throttled = httpx.post(url + "/dashboard/login", data={"key": ADMIN_KEY})  # even the right key waits
    assert throttled.status_code == 429 and throttled.json()["error"]["type"] == "rate_limit_error"
    assert "retry-after" in throttled.headers


def test_damaged_trace_rows_are_passed_over_and_a_read_never_waits_for_the_stores_lock(
    fresh: tuple[str, Any],
) -> None:
    url, deps = fresh
    request_id = ask(url, ACME_KEY, "Summarise the release notes.")
    deps.traces.flush()
    with deps.audit._lock:  # a request holding the store's connection: the dashboard reads on its own
        deps.traces._db.executemany(
            "INSERT INTO traces (tenant, request_id, ts, expires_at, trace, feedback) VALUES (?, ?, ?, ?, ?, 1)",
            [
                ("acme", "not-json", deps.clock(), deps.clock() + 3600, "{not json"),
                (
                    "acme",
                    "odd-values",
                    deps.clock(),
                    deps.clock() + 3600,
                    '{"first_token_ms": "fast", "feedback": [{"at": "now", "score": "1", "kind": "thumbs"}, 7]}',
                ),
            ],
        )
        data = admin(url, "/dashboard/data", params={"window": "hour"}, timeout=20)
    assert data.status_code == 200, data.text
    totals = data.json()["totals"]
    assert totals["requests"] == 1 and totals["feedback"] == 0 and totals["ttft_ms"]["p50"] is not None
    assert (
        httpx.get(f"{url}/v1/traces/{request_id}", headers={"authorization": f"Bearer {ACME_KEY}"}).status_code == 200
    )


def test_the_rollouts_and_experiments_are_on_the_dashboard(fresh: tuple[str, Any], browser: Any) -> None:
    url, deps = fresh
    rollout = start_rollout(deps.rollouts, deps.config, "acme", "default", "down", (5.0, 100.0))
    variants = [Variant(name="control"), Variant(name="cool", params={"temperature": 0.1})]
    experiment = ab.start(deps.experiments, deps.config, "globex", "default", variants, 0.1, rollouts=deps.rollouts)
    for i in range(6):
        ask(url, GLOBEX_KEY, f"Translate sentence {i} into French.")
    data = admin(url, "/dashboard/data", params={"window": "hour"}).json()
    assert [(r["rollout_id"], r["status"], r["share"]) for r in data["rollouts"]] == [
        (rollout.rollout_id, "running", 5.0)
    ]
    shown = data["experiments"][0]
    assert shown["experiment_id"] == experiment.experiment_id and set(shown["variants"]) == {"control", "cool"}
    assert sum(v["requests"] for v in shown["variants"].values()) == 6
    assert shown["against_control"]["cool"]["verdict"] == "no evidence yet"
    context = browser.new_context(extra_http_headers={"authorization": f"Bearer {ADMIN_KEY}"})
    page = context.new_page()
    page.goto(url + "/dashboard")
    page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
    assert rollout.rollout_id in page.inner_text("#rollouts")
    assert page.locator("#experiments tbody tr").count() == 2  # a row a variant
    context.close()
