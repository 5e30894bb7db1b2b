"""Many near-identical requests at once: nobody is served another request's answer.

300 requests whose questions differ only in a number run concurrently through the HTTP app, with
the real embedder, verifier and semantic index on SQLite, at the shipped target precision (0.90).
The upstream (`echo`) answers with the question itself, so an answer that names another number
than its question is another request's answer. The process-wide memories that several steps
share (the embedder's recent vectors, the verifier's text analyses, the near-miss reads) are also
hammered from many threads and must give every text its own result.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from llm_gateway.adapters.local.semantic import LocalSemanticIndex
from llm_gateway.config import SemanticCache
from llm_gateway.http.app import create_app
from llm_gateway.observability import InMemoryMetrics
from llm_gateway.runner import InProcessRunner
from llm_gateway.semantic.embeddings import Embedder, default_embedder
from llm_gateway.semantic.features import pair_features
from llm_gateway.semantic.near_miss import near_miss
from tests.conftest import ACME_KEY, make_config, make_deps
from tests.support.servers import serve

REQUESTS = 300
TEMPLATES = (
    "Summarise crash note {n} for the on-call engineer and list the failing service.",
    "Draft a short reply to ticket {n} about the delayed refund.",
    "What is the status of order {n} placed last week?",
)


def _question(i: int) -> str:
    return TEMPLATES[i % len(TEMPLATES)].format(n=100 + i // len(TEMPLATES))


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, InMemoryMetrics]]:
    config = make_config()
    semantic = SemanticCache(enabled=True, target_precision=0.90, max_temperature=1.0, top_k=5)
    tenants = {name: t.model_copy(update={"semantic_cache": semantic}) for name, t in config.tenants.items()}
    metrics = InMemoryMetrics()
    deps = make_deps(config.model_copy(update={"tenants": tenants}), db=tmp_path / "gw.db", metrics=metrics)
    deps.semantic = LocalSemanticIndex(tmp_path / "gw.db")
    with serve(create_app(InProcessRunner(deps))) as url:
        yield url, metrics


async def _ask_all(url: str, questions: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def ask(question: str) -> httpx.Response:
            return await client.post(
                "/v1/chat/completions",
                headers={"authorization": f"Bearer {ACME_KEY}"},
                json={"model": "default", "messages": [{"role": "user", "content": question}]},
            )

        return await asyncio.gather(*(ask(q) for q in questions))


def test_concurrent_near_identical_requests_never_get_each_other_s_answers(
    gateway: tuple[str, InMemoryMetrics],
) -> None:
    url, _metrics = gateway
    questions = [_question(i) for i in range(REQUESTS)]
    # Twice: the first wave stores while it looks up; the second finds 300 stored neighbours.
    for wave in range(2):
        responses = asyncio.run(_ask_all(url, questions))
        wrong = []
        for question, response in zip(questions, responses, strict=True):
            assert response.status_code == 200, response.text
            answer = response.json()["choices"][0]["message"]["content"]
            if re.findall(r"\d+", answer) != re.findall(r"\d+", question):
                wrong.append((question, answer, response.headers.get("x-gateway-cache")))
        assert wrong == [], f"wave {wave}: {len(wrong)} answers belong to another request: {wrong[:3]}"
    # The second wave is served from the cache: each question by its own exact entry.
    statuses = [r.headers["x-gateway-cache"] for r in responses]
    assert statuses.count("exact") == REQUESTS


def test_the_shared_memories_give_every_text_its_own_result_under_threads() -> None:
    texts = [_question(i) for i in range(240)]
    reference = Embedder().embed(texts)  # a separate embedder, one batch, no memo
    shared = default_embedder()
    with ThreadPoolExecutor(max_workers=16) as pool:
        vectors = list(pool.map(shared.embed_one, texts * 2))
        vetoes = list(pool.map(lambda pair: near_miss(*pair), zip(texts, texts[3:] + texts[:3], strict=True)))
        features = list(
            pool.map(
                lambda i: pair_features([texts[i]], [texts[i]], reference[i : i + 1], reference[i : i + 1]), range(240)
            )
        )
    for i, vector in enumerate(vectors):
        assert np.allclose(vector, reference[i % len(texts)], atol=1e-4), texts[i % len(texts)]
    expected = [near_miss(a, b) for a, b in zip(texts, texts[3:] + texts[:3], strict=True)]
    assert vetoes == expected and all(kind == "number" for kind in vetoes)
    same = pair_features(texts, texts, reference, reference)
    assert all(np.allclose(row[0], same[i]) for i, row in enumerate(features))
