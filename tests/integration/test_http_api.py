"""The OpenAI-compatible HTTP API over a real uvicorn server, driven by the official openai SDK."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from llm_gateway import response_headers
from llm_gateway.config import ModelConfig, hash_key
from llm_gateway.http.app import create_app
from llm_gateway.observability import InMemoryMetrics
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, GLOBEX_KEY, make_config, make_deps, store_of
from tests.support.fake_providers import Script, fake_server, status
from tests.support.servers import serve

LIMITED_KEY = "sk-test-limited"
ADMIN_KEY = "sk-test-admin"
EXTRA_TENANT = f"""  limited:
    api_keys: [{{id: k1, sha256: {hash_key(LIMITED_KEY)}}}]
    routes: {{default: {{model: echo}}}}
    rate_limit: {{requests_per_minute: 60, burst: 2}}
limits:
  max_body_bytes: 4096
admin_api_keys: [{{id: ops, sha256: {hash_key(ADMIN_KEY)}}}]
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, InProcessRunner]]:
    db: Path = tmp_path_factory.mktemp("gw") / "gateway.db"
    runner = InProcessRunner(make_deps(make_config(EXTRA_TENANT), db=db, metrics=InMemoryMetrics()))
    with serve(create_app(runner)) as url:
        yield url + "/v1", runner


@pytest.fixture
def base_url(gateway: tuple[str, InProcessRunner]) -> str:
    return gateway[0]


def client(base_url: str, key: str = ACME_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)


def post(base_url: str, body: bytes | str, key: str = ACME_KEY) -> httpx.Response:
    return httpx.post(
        base_url + "/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )


def test_completion_carries_usage_cost_and_decision_headers(base_url: str) -> None:
    raw = client(base_url).chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": "price this answer"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "price this answer"
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    assert completion.usage.model_extra is not None and completion.usage.model_extra["cost_usd"] > 0
    assert raw.headers["x-gateway-model"] == "echo"
    assert raw.headers["x-gateway-cache"] == "miss"
    assert len(raw.headers["x-request-id"]) == 32


def test_second_identical_request_hits_the_exact_cache_but_not_for_another_tenant(base_url: str) -> None:
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "cache across calls"}]
    first = client(base_url).chat.completions.with_raw_response.create(model="default", messages=messages)  # type: ignore[arg-type]
    second = client(base_url).chat.completions.with_raw_response.create(model="default", messages=messages)  # type: ignore[arg-type]
    other = client(base_url, GLOBEX_KEY).chat.completions.with_raw_response.create(model="default", messages=messages)  # type: ignore[arg-type]
    assert [r.headers["x-gateway-cache"] for r in (first, second, other)] == ["miss", "exact", "miss"]
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert second.headers["x-request-id"] != first.headers["x-request-id"]


def test_a_cache_hit_names_its_route_costs_nothing_and_called_no_model(base_url: str) -> None:
    # Given an answer paid for once, by a route and by a pinned model
    for model in ("default", "echo-b"):
        messages = [{"role": "user", "content": f"what does asking {model} twice cost"}]
        first = client(base_url).chat.completions.with_raw_response.create(model=model, messages=messages)  # type: ignore[arg-type]
        # When the same request comes again, as JSON and streamed
        again = client(base_url).chat.completions.with_raw_response.create(model=model, messages=messages)  # type: ignore[arg-type]
        with httpx.stream(
            "POST",
            base_url + "/chat/completions",
            json={"model": model, "messages": messages, "stream": True},
            headers={"authorization": f"Bearer {ACME_KEY}"},
        ) as streamed:
            streamed.read()
        # Then the hits say which route answered, that no model was called and that they cost nothing,
        # as the body's usage does
        assert first.headers["x-gateway-cache"] == "miss" and first.headers["x-gateway-attempts"] == "1"
        assert float(first.headers["x-gateway-cost-usd"]) > 0
        for hit in (again, streamed):
            assert hit.headers["x-gateway-cache"] == "exact"
            assert hit.headers["x-gateway-route"] == model == first.headers["x-gateway-route"]
            assert (hit.headers["x-gateway-attempts"], hit.headers["x-gateway-cost-usd"]) == ("0", "0.00000000")
        usage = again.parse().usage
        assert usage is not None and usage.model_extra is not None and usage.model_extra["cost_usd"] == 0


def test_cache_control_no_cache_bypasses_the_cache(base_url: str) -> None:
    messages = [{"role": "user", "content": "bypass me"}]
    client(base_url).chat.completions.create(model="default", messages=messages)  # type: ignore[arg-type]
    raw = client(base_url).chat.completions.with_raw_response.create(
        model="default",
        messages=messages,  # type: ignore[arg-type]
        extra_headers={"Cache-Control": "no-cache"},
    )
    assert raw.headers["x-gateway-cache"] == "miss"
    assert raw.headers["x-gateway-cache-bypass"] == "true"


def test_stream_through_the_sdk_ends_with_usage(base_url: str) -> None:
    stream = client(base_url).chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "stream these four words"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "stream these four words"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_raw_sse_ends_with_done(base_url: str) -> None:
    with httpx.stream(
        "POST",
        base_url + "/chat/completions",
        json={"model": "default", "messages": [{"role": "user", "content": "sse"}], "stream": True},
        headers={"authorization": f"Bearer {ACME_KEY}"},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-gateway-model"] == "echo"
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


# Headers every HTTP server sends; the gateway's own are all in `response_headers`.
TRANSPORT_HEADERS = {"content-type", "content-length", "date", "server", "transfer-encoding", "connection"}


def test_the_app_sends_only_defined_headers_with_the_values_the_definition_allows(base_url: str) -> None:
    defined = {h.name.lower(): h for h in response_headers.HEADERS}
    body = {"model": "default", "messages": [{"role": "user", "content": "which headers come back"}]}
    auth = {"authorization": f"Bearer {ACME_KEY}"}
    answers = [
        httpx.post(base_url + "/chat/completions", json=body, headers=auth),  # a miss
        httpx.post(base_url + "/chat/completions", json=body, headers=auth),  # an exact hit
        httpx.post(base_url + "/chat/completions", json={**body, "stream": True}, headers=auth),
        httpx.post(base_url + "/chat/completions", json=body, headers={**auth, "cache-control": "no-cache"}),
        httpx.post(base_url + "/chat/completions", json={**body, "model": "gpt-nine"}, headers=auth),
        httpx.get(base_url + "/chat/completions", headers=auth),
    ]
    filtered = {"model": "default", "messages": [{"role": "user", "content": "say the forbidden thing"}]}
    answers.append(
        httpx.post(base_url + "/chat/completions", json=filtered, headers={"authorization": f"Bearer {GLOBEX_KEY}"})
    )
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 404, 405, 200]
    seen = set()
    for answer in answers:
        for name, value in answer.headers.items():
            if name in TRANSPORT_HEADERS:
                continue
            assert name in defined, f"{name} is sent but not defined in llm_gateway.response_headers"
            schema = defined[name].schema
            assert value in schema.get("enum", [value]) and re.match(schema.get("pattern", ""), value), (name, value)
            seen.add(name)
    assert answers[-1].headers["x-gateway-moderation"] == "filtered"
    assert {"x-request-id", "x-gateway-cache", "x-gateway-cache-bypass", "cache-control", "allow"} <= seen


def test_unknown_key_is_401_with_an_openai_error(base_url: str) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client(base_url, "sk-wrong").chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    missing = httpx.post(base_url + "/chat/completions", json={"model": "default", "messages": []})
    assert missing.status_code in (400, 401)


def test_malformed_json_is_400(base_url: str) -> None:
    response = post(base_url, b'{"model": "default", "messages": [')
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_json"


def test_schema_violation_is_400_naming_the_field(base_url: str) -> None:
    response = post(base_url, '{"model": "default", "messages": [{"role": "robot", "content": "x"}]}')
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages.0.role"
    with pytest.raises(openai.BadRequestError) as caught:
        client(base_url).chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"frobnicate": True},
        )
    assert caught.value.param == "frobnicate"  # type: ignore[attr-defined]


def test_body_over_the_limit_is_413(base_url: str) -> None:
    big = '{"model": "default", "messages": [{"role": "user", "content": "' + "a" * 5000 + '"}]}'
    response = post(base_url, big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_rate_limit_is_429_with_retry_after(base_url: str) -> None:
    body = '{"model": "default", "messages": [{"role": "user", "content": "limit"}]}'
    statuses = [post(base_url, body, LIMITED_KEY) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    refused = statuses[-1]
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["type"] == "rate_limit_error"


def test_guardrail_refusal_is_400_with_type_guardrail_and_the_layer_as_code(base_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(base_url, GLOBEX_KEY).chat.completions.create(
            model="default", messages=[{"role": "user", "content": "what is the codename"}]
        )
    assert caught.value.type == "guardrail"  # type: ignore[attr-defined]
    assert caught.value.code == "blocklist"


def test_output_moderation_withholds_the_answer_as_content_filter(base_url: str) -> None:
    completion = client(base_url, GLOBEX_KEY).chat.completions.create(
        model="default", messages=[{"role": "user", "content": "say the forbidden thing"}]
    )
    assert completion.choices[0].finish_reason == "content_filter"
    assert not completion.choices[0].message.content


def test_unknown_model_is_404(base_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(base_url).chat.completions.create(model="gpt-nine", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"null",
        b'"text"',
        b"\xff\xfe\x00garbage",
        b'{"model": 1, "messages": [{"role": "user", "content": "x"}]}',
        b'{"model": "default", "messages": "hello"}',
        b'{"model": "default", "messages": [{"role": "user", "content": [{"type": "video"}]}]}',
        b'{"model": "default", "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}',
        b'{"model": "default", "messages": [{"role": "user", "content": "x"}], "stream": "yes please"}',
        b"[" * 5000 + b"]" * 5000,
        b"",
    ],
)
def test_bad_input_is_a_4xx_never_a_500(base_url: str, body: bytes) -> None:
    response = post(base_url, body)
    assert 400 <= response.status_code < 500
    assert response.json()["error"]["message"]
    assert response.headers["x-request-id"]


def test_models_lists_the_tenants_routes_and_pinned_models(base_url: str) -> None:
    names = [m.id for m in client(base_url).models.list()]
    assert names == ["default", "echo-b"]
    assert httpx.get(base_url + "/models").status_code == 401


def test_models_retrieve_answers_each_listed_model_and_404_for_any_other(base_url: str) -> None:
    # Given the models the tenant's key lists
    acme = client(base_url)
    listed = list(acme.models.list())
    # When the openai SDK retrieves each of them, Then it gets the very object the list holds
    assert [acme.models.retrieve(model.id) for model in listed] == listed
    # A model of the configuration the tenant may not use, an unknown one and one whose name has a
    # slash are 404 model_not_found in OpenAI's error shape, which the SDK raises as NotFoundError.
    for other, name in ((client(base_url, GLOBEX_KEY), "echo-b"), (acme, "gpt-nine"), (acme, "acme/default")):
        with pytest.raises(openai.NotFoundError) as missing:
            other.models.retrieve(name)
        assert missing.value.code == "model_not_found"
        assert missing.value.body == {
            "message": f"The model '{name}' does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
    assert httpx.get(base_url + "/models/default").status_code == 401


def test_health_openapi_and_unknown_paths(base_url: str) -> None:
    root = base_url.removesuffix("/v1")
    assert httpx.get(root + "/healthz").json() == {"status": "ok"}
    document = httpx.get(root + "/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert "ChatCompletionRequest" in document["components"]["schemas"]
    assert "/v1/chat/completions" in document["paths"]
    missing = httpx.get(root + "/v2/nothing")
    assert missing.status_code == 404 and "error" in missing.json()


def test_every_request_is_audited_without_keys_or_prompts(gateway: tuple[str, InProcessRunner]) -> None:
    url, runner = gateway
    for _ in range(2):  # ok, then cache_hit
        client(url).chat.completions.create(
            model="default", messages=[{"role": "user", "content": "audit canary 7731"}]
        )
    client(url, GLOBEX_KEY).chat.completions.create(
        model="default", messages=[{"role": "user", "content": "forbidden"}]
    )
    for model, words in (("default", "codename canary"), ("no-such-model", "canary")):
        with pytest.raises(openai.APIStatusError):
            client(url, GLOBEX_KEY).chat.completions.create(model=model, messages=[{"role": "user", "content": words}])
    rows = store_of(runner.deps).query("SELECT * FROM audit")
    dump = repr(rows) + repr(store_of(runner.deps).query("SELECT * FROM usage"))
    assert "canary" not in dump and ACME_KEY not in dump and hash_key(ACME_KEY) not in dump
    outcomes = {row[0] for row in store_of(runner.deps).query("SELECT outcome FROM audit")}
    assert {"ok", "cache_hit", "blocked", "filtered", "error"} <= outcomes


def test_provider_errors_reach_the_client_as_clear_openai_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Upstream 400: returned at once as 400 (no retry). Upstream 500 on every model: 503 naming each model."""
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-upstream")
    script = Script()
    with fake_server("openai", script) as upstream:
        config = make_config().model_copy(
            update={
                "models": {
                    **make_config().models,
                    "echo": ModelConfig(provider="openai", base_url=upstream.base_url, api_key_env="FAKE_OPENAI_KEY"),
                    "echo-b": ModelConfig(provider="openai", base_url=upstream.base_url, api_key_env="FAKE_OPENAI_KEY"),
                }
            }
        )
        runner = InProcessRunner(make_deps(config, db=tmp_path / "gw.db"))
        with serve(create_app(runner)) as url:
            gateway = client(url + "/v1")
            script.push(status(400, message="max_tokens is too large for this model"))
            with pytest.raises(openai.BadRequestError) as bad:
                gateway.chat.completions.create(model="default", messages=[{"role": "user", "content": "a"}])
            assert "max_tokens is too large" in bad.value.message
            assert len(script.requests) == 1
            script.push(*[status(500)] * 6)
            with pytest.raises(openai.InternalServerError) as failed:
                gateway.chat.completions.create(model="default", messages=[{"role": "user", "content": "b"}])
            assert failed.value.status_code == 503
            assert failed.value.code == "all_models_failed"
            assert "echo: unavailable" in failed.value.message and "echo-b: unavailable" in failed.value.message
            assert len(script.requests) == 7


def test_requests_refused_before_the_chain_are_audited_too(gateway: tuple[str, InProcessRunner]) -> None:
    """Unreadable or oversized bodies never reach the chain, but still leave an audit row (with the tenant)."""
    url, runner = gateway
    before = len(store_of(runner.deps).query("SELECT 1 FROM audit WHERE error_code = 'invalid_json'"))
    post(url, b'{"model": "default", "messages": [', GLOBEX_KEY)
    rows = store_of(runner.deps).query("SELECT tenant, outcome FROM audit WHERE error_code = 'invalid_json'")
    assert len(rows) == before + 1 and rows[-1] == ("globex", "error")


def test_admin_purge_empties_the_tenants_cache_and_needs_an_admin_key(base_url: str) -> None:
    """After a purge the same request misses again; only admin keys may purge; bad bodies are 400."""
    root = base_url.removesuffix("/v1")
    messages = [{"role": "user", "content": "purge me"}]
    for _ in range(2):
        client(base_url).chat.completions.create(model="default", messages=messages)  # type: ignore[arg-type]
    refused = httpx.post(
        root + "/admin/cache/purge", json={"tenant": "acme"}, headers={"authorization": f"Bearer {ACME_KEY}"}
    )
    assert refused.status_code == 401
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    assert httpx.post(root + "/admin/cache/purge", json={"tenant": "nope"}, headers=admin).status_code == 400
    assert httpx.post(root + "/admin/cache/purge", json={"tenant": "acme", "x": 1}, headers=admin).status_code == 400
    done = httpx.post(root + "/admin/cache/purge", json={"tenant": "acme"}, headers=admin)
    assert done.status_code == 200 and done.json()["removed"] >= 1
    again = client(base_url).chat.completions.with_raw_response.create(model="default", messages=messages)  # type: ignore[arg-type]
    assert again.headers["x-gateway-cache"] == "miss"


def test_admin_purge_by_kb_version_or_system_prompt_echoes_no_prompt_text(base_url: str) -> None:
    root = base_url.removesuffix("/v1")
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    messages = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "purge by tag"}]
    for _ in range(2):
        client(base_url).chat.completions.create(model="default", messages=messages, metadata={"kb_version": "v7"})  # type: ignore[arg-type]

    by_kb = httpx.post(root + "/admin/cache/purge", json={"tenant": "acme", "kb_version": "v6"}, headers=admin)
    assert by_kb.status_code == 200 and by_kb.json() == {"tenant": "acme", "kb_version": "v6", "removed": 0}
    by_prompt = httpx.post(
        root + "/admin/cache/purge", json={"tenant": "acme", "system_prompt": "Answer in French."}, headers=admin
    )
    assert by_prompt.status_code == 200 and by_prompt.json()["removed"] == 1
    assert "French" not in by_prompt.text and by_prompt.json()["system_prompt_tag"].startswith("prompt:")
    again = client(base_url).chat.completions.with_raw_response.create(
        model="default",
        messages=messages,  # type: ignore[arg-type]
        metadata={"kb_version": "v7"},
    )
    assert again.headers["x-gateway-cache"] == "miss"
    both = httpx.post(
        root + "/admin/cache/purge", json={"tenant": "acme", "model": "m", "kb_version": "v6"}, headers=admin
    )
    assert both.status_code == 400 and both.json()["error"]["type"] == "invalid_request_error"


def test_metrics_count_cache_lookups_by_outcome(base_url: str) -> None:
    messages = [{"role": "user", "content": "count my lookups"}]
    for _ in range(2):
        client(base_url).chat.completions.create(model="default", messages=messages)  # type: ignore[arg-type]
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", headers=admin).text
    counts = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("llm_gateway_cache_lookups"))
    assert float(counts['llm_gateway_cache_lookups_total{status="exact"}']) >= 1
    assert float(counts['llm_gateway_cache_lookups_total{status="miss"}']) >= 1
