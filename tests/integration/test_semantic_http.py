"""The semantic cache over HTTP with the real embedder and verifier: paraphrases hit, look-alikes miss."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from llm_gateway.adapters.local.semantic import LocalSemanticIndex
from llm_gateway.http.app import create_app
from llm_gateway.observability import InMemoryMetrics
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, GLOBEX_KEY, make_config, make_deps
from tests.support.servers import serve

SEMANTIC_ON = {"enabled": True, "target_precision": 0.95, "max_temperature": 1.0, "top_k": 5}


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = make_config()
    tenants = {
        name: tenant.model_copy(update={"semantic_cache": type(tenant.semantic_cache)(**SEMANTIC_ON)})
        for name, tenant in config.tenants.items()
    }
    db: Path = tmp_path_factory.mktemp("semantic") / "gw.db"
    deps = make_deps(config.model_copy(update={"tenants": tenants}), db=db, metrics=InMemoryMetrics())
    deps.semantic = LocalSemanticIndex(db)
    with serve(create_app(InProcessRunner(deps))) as url:
        yield url + "/v1"


def ask(base_url: str, question: str, key: str = ACME_KEY) -> tuple[str, str | None]:
    raw = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0).chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": question}]
    )
    return raw.headers["x-gateway-cache"], raw.headers.get("x-gateway-cache-score")


def test_a_paraphrase_hits_with_a_score(base_url: str) -> None:
    assert ask(base_url, "How can I lose weight fast?")[0] == "miss"
    status, score = ask(base_url, "What is the fastest way to lose weight?")
    assert status == "semantic" and score is not None and float(score) >= 0.9


@pytest.mark.parametrize(
    ("stored", "lookalike"),
    [
        ("How do I get from Paris to London?", "How do I get from London to Paris?"),
        ("What was the population of India in 2010?", "What was the population of India in 2020?"),
        ("How do I learn Python?", "How do I learn Java?"),
    ],
)
def test_lookalikes_with_another_meaning_miss(base_url: str, stored: str, lookalike: str) -> None:
    ask(base_url, stored)
    assert ask(base_url, lookalike)[0] == "miss"


def test_another_tenant_never_gets_a_semantic_hit(base_url: str) -> None:
    # Each globex question is its first one on the topic: a hit could only come from acme's entry
    ask(base_url, "Which laptop is best for students on a budget?")
    assert ask(base_url, "What is the best laptop for a student on a budget?", GLOBEX_KEY)[0] == "miss"
    ask(base_url, "Which tablet is best for drawing?")
    assert ask(base_url, "Which tablet is best for drawing?", GLOBEX_KEY)[0] == "miss"
