"""`POST /v1/embeddings` over a real uvicorn server, driven by the official openai SDK: the packaged
embedder behind the example config's `embedding` route, an OpenAI embedding model upstream (with
the tenant's PII masking before it), the exact cache, budgets, the input blocklist, the audit and
usage records, and routes of the wrong kind refused on both APIs."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import openai
import pytest

from llm_gateway.adapters.local.budget import SqliteBudgetLedger
from llm_gateway.config import hash_key, load_config, parse_config
from llm_gateway.http.app import create_app
from llm_gateway.runner import InProcessRunner
from llm_gateway.semantic.embeddings import default_embedder
from tests.conftest import ACME_KEY, make_deps, store_of
from tests.support.fake_providers import FakeServer, fake_server, fake_vector
from tests.support.servers import serve

POOR_KEY = "sk-test-poor"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    with fake_server("openai") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(upstream: FakeServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, InProcessRunner]]:
    config = parse_config(f"""
models:
  minilm: {{provider: embedder, kind: embedding}}
  text-embed: {{provider: openai, kind: embedding, provider_model: text-embedding-fake, base_url: {upstream.base_url},
               api_key_env: FAKE_OPENAI_KEY, price: {{input_per_mtok: 20.0}}}}
  chat: {{provider: echo}}
tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes: {{embedding: {{model: minilm}}, remote: {{model: text-embed}}, default: {{model: chat}}}}
    guards: {{pii: {{enabled: true, default: mask, entities: {{US_SSN: reject}}}}}}
    input_blocklist: {{keywords: [codename]}}
  poor:
    api_keys: [{{id: k1, sha256: {hash_key(POOR_KEY)}}}]
    routes: {{remote: {{model: text-embed}}}}
    budgets: [{{scope: tenant, period: day, usd: 0.0000001}}]
""")
    db = tmp_path_factory.mktemp("emb") / "gateway.db"
    runner = InProcessRunner(make_deps(config, db=db, budgets=SqliteBudgetLedger(db)))
    with serve(create_app(runner)) as url:
        yield url + "/v1", runner


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch, upstream: FakeServer) -> None:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-fake")
    upstream.script.reset()


def client(base_url: str, key: str = ACME_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)


def test_the_packaged_embedder_answers_then_the_exact_cache_does(gateway: tuple[str, InProcessRunner]) -> None:
    url, runner = gateway
    texts = ["How do I reset my password?", "Opening hours on Sunday"]
    first = client(url).embeddings.with_raw_response.create(model="embedding", input=texts)
    again = client(url).embeddings.with_raw_response.create(model="embedding", input=texts)
    assert [r.headers["x-gateway-cache"] for r in (first, again)] == ["miss", "exact"]
    answer = first.parse()
    assert [row.index for row in answer.data] == [0, 1] and answer.model == "minilm"
    vectors = np.array([row.embedding for row in answer.data], dtype=np.float32)
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(vectors, default_embedder().embed(texts), atol=1e-6)
    assert answer.usage.prompt_tokens > 0 and answer.usage.prompt_tokens == answer.usage.total_tokens
    assert first.headers["x-gateway-route"] == "embedding"
    audit = store_of(runner.deps).query("SELECT outcome, model, cache FROM audit WHERE route = 'embedding'")
    assert [tuple(row) for row in audit][-2:] == [("ok", "minilm", "miss"), ("cache_hit", "minilm", "exact")]


def test_base64_encoding_holds_the_same_floats(gateway: tuple[str, InProcessRunner]) -> None:
    url, _ = gateway
    text = "Base64, please."
    floats = client(url).embeddings.create(model="embedding", input=text).data[0].embedding
    raw = client(url).embeddings.with_raw_response.create(model="embedding", input=text, encoding_format="base64")
    packed = raw.http_response.json()["data"][0]["embedding"]
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(packed), dtype="<f4"), np.float32(floats))


def test_an_upstream_model_gets_masked_text_and_is_priced(
    gateway: tuple[str, InProcessRunner], upstream: FakeServer
) -> None:
    url, runner = gateway
    text = "Customer jo@example.com asked about order 7"
    answer = client(url).embeddings.create(model="remote", input=[text], dimensions=16)
    sent = upstream.script.last.body
    assert sent["input"] == ["Customer [EMAIL_1] asked about order 7"] and sent["dimensions"] == 16
    assert sent["model"] == "text-embedding-fake"
    assert answer.data[0].embedding == pytest.approx(fake_vector(sent["input"][0], 16))
    assert answer.usage.prompt_tokens == 6
    usage = store_of(runner.deps).query("SELECT model, prompt_tokens, cost_usd FROM usage WHERE model = 'text-embed'")
    assert tuple(usage[-1]) == ("text-embed", 6, pytest.approx(6 * 20.0 / 1e6))


def test_a_pii_type_the_tenant_rejects_never_leaves(gateway: tuple[str, InProcessRunner], upstream: FakeServer) -> None:
    url, _ = gateway
    with pytest.raises(openai.BadRequestError) as raised:
        client(url).embeddings.create(model="remote", input=["SSN 078-05-1120 on file"])
    assert raised.value.code == "pii"
    assert upstream.script.requests == []


def test_the_input_blocklist_and_budgets_apply(gateway: tuple[str, InProcessRunner], upstream: FakeServer) -> None:
    url, _ = gateway
    with pytest.raises(openai.BadRequestError) as blocked:
        client(url).embeddings.create(model="embedding", input=["the codename is plain text"])
    assert blocked.value.code == "blocklist"
    with pytest.raises(openai.RateLimitError) as poor:
        client(url, POOR_KEY).embeddings.create(model="remote", input=["a longer text than a tiny budget allows"])
    assert poor.value.code == "budget_exceeded" and poor.value.type == "insufficient_quota"
    assert upstream.script.requests == []


def test_routes_of_the_other_kind_are_refused_on_each_api(gateway: tuple[str, InProcessRunner]) -> None:
    url, _ = gateway
    with pytest.raises(openai.BadRequestError) as chat_on_embeddings:
        client(url).embeddings.create(model="default", input=["hello"])
    with pytest.raises(openai.BadRequestError) as embeddings_on_chat:
        client(url).chat.completions.create(model="embedding", messages=[{"role": "user", "content": "hello"}])
    assert chat_on_embeddings.value.code == embeddings_on_chat.value.code == "model_not_supported"
    with pytest.raises(openai.BadRequestError) as dims:
        client(url).embeddings.create(model="embedding", input=["hello"], dimensions=128)
    assert dims.value.param == "dimensions"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "embedding", "input": []}, "input"),
        ({"model": "embedding", "input": [[101, 2023]]}, "input"),
        ({"model": "embedding", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "embedding", "input": "x", "extra": 1}, "extra"),
    ],
    ids=["empty", "token_ids", "format", "unknown_field"],
)
def test_bad_bodies_are_400s_naming_the_field(gateway: tuple[str, InProcessRunner], body: dict, param: str) -> None:
    import httpx

    url, _ = gateway
    answer = httpx.post(url + "/embeddings", json=body, headers={"authorization": f"Bearer {ACME_KEY}"})
    assert answer.status_code == 400 and answer.json()["error"]["param"].startswith(param)


def test_an_unknown_key_is_a_401(gateway: tuple[str, InProcessRunner]) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(gateway[0], "sk-nobody").embeddings.create(model="embedding", input=["hello"])


def test_the_example_config_gives_each_demo_tenant_an_embedding_route() -> None:
    from llm_gateway.config import EXAMPLE_CONFIG

    config = load_config(EXAMPLE_CONFIG)
    for tenant in ("acme", "globex"):
        route = config.tenants[tenant].routes["embedding"]
        assert config.models[route.model].provider == "embedder" and config.models[route.model].kind == "embedding"
