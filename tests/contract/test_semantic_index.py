"""The `SemanticIndex` contract, run against the local index and the Momento one (real SDK -> gRPC stand-in).

What it proves: a search sees only its own scope, so no entry crosses tenant, model version, system
prompt, conversation or knowledge-base version, even with an identical vector; results are ordered
by cosine; expiry is honoured; and every purge removes every affected entry and nothing else.
Vectors are random unit vectors and near-duplicates of them (no embedder needed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from llm_gateway.adapters.aws.momento_semantic import MomentoSemanticIndex
from llm_gateway.adapters.local.semantic import LocalSemanticIndex
from llm_gateway.cache.keys import cache_tags, kb_tag, prompt_tag
from llm_gateway.contracts import ChatCompletionRequest, ChatMessage
from llm_gateway.semantic.index import DIMENSIONS, SemanticIndex, Vector, decode_vector, encode_vector
from llm_gateway.semantic.scope import semantic_scope
from tests.contract.conftest import MOMENTO_CACHE

QUESTION = "What is the capital of France?"


def unit(rng: np.random.Generator) -> Vector:
    vector = rng.standard_normal(DIMENSIONS).astype(np.float32)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def near(vector: Vector, cosine: float, rng: np.random.Generator) -> Vector:
    """A unit vector at exactly `cosine` from `vector`."""
    noise = rng.standard_normal(DIMENSIONS).astype(np.float32)
    noise -= (noise @ vector) * vector
    noise /= np.linalg.norm(noise)
    return (cosine * vector + math.sqrt(1 - cosine**2) * noise).astype(np.float32)


def request(system: str = "You are terse.", *, kb: str | None = None, history: int = 0) -> ChatCompletionRequest:
    earlier = [ChatMessage(role="user", content="hi"), ChatMessage(role="assistant", content="hello")] * history
    return ChatCompletionRequest(
        model="chat",
        messages=[
            ChatMessage(role="system", content=system),
            *earlier,
            ChatMessage(role="user", content=QUESTION),
        ],
        metadata={"kb_version": kb} if kb else None,
    )


def scope(tenant: str = "acme", model: str = "m1", **kwargs: object) -> str:
    return semantic_scope(tenant, model, request(**kwargs))  # type: ignore[arg-type]


@pytest.fixture(params=["local", "momento"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SemanticIndex]:
    if request.param == "local":
        local = LocalSemanticIndex(tmp_path / "semantic.db")
        yield local
        local.close()
    else:
        request.getfixturevalue("momento")
        remote = MomentoSemanticIndex(request.getfixturevalue("momento_client"), MOMENTO_CACHE)
        yield remote
        remote.close()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def add(
    index: SemanticIndex,
    scope_: str,
    tenant: str,
    model: str,
    entry_id: str,
    vector: Vector,
    ttl: float = 60,
    tags: tuple[str, ...] = (),
) -> None:
    answer = f'{{"answer":"{entry_id}"}}'
    index.add(scope_, tenant, model, entry_id, vector, QUESTION, answer, time.time() + ttl, tags)


def ids(index: SemanticIndex, scope_: str, vector: Vector, k: int = 10) -> list[str]:
    return [c.entry_id for c in index.search(scope_, vector, k, time.time())]


def test_the_same_vector_finds_its_entry_with_cosine_one(index: SemanticIndex, rng: np.random.Generator) -> None:
    vector, s = unit(rng), scope()
    add(index, s, "acme", "m1", "e1", vector)
    [hit] = index.search(s, vector, 5, time.time())
    assert hit.entry_id == "e1"
    assert hit.text == QUESTION
    assert hit.response_json == '{"answer":"e1"}'
    assert hit.cosine == pytest.approx(1.0, abs=1e-5)
    assert hit.vector is not None and np.allclose(hit.vector, vector, atol=1e-6)


def test_a_query_vector_survives_the_state_encoding(rng: np.random.Generator) -> None:
    vector = unit(rng)
    assert np.allclose(decode_vector(encode_vector(vector)), vector, atol=1e-7)
    with pytest.raises(ValueError):
        decode_vector("not base64!")


def test_results_are_ordered_by_cosine_and_limited_to_k(index: SemanticIndex, rng: np.random.Generator) -> None:
    base, s = unit(rng), scope()
    for entry_id, cosine in [("c90", 0.90), ("c99", 0.99), ("c95", 0.95), ("c97", 0.97)]:
        add(index, s, "acme", "m1", entry_id, near(base, cosine, rng))
    for i in range(50):  # unrelated entries in the same scope
        add(index, s, "acme", "m1", f"r{i}", unit(rng))
    found = index.search(s, base, 3, time.time())
    assert [c.entry_id for c in found] == ["c99", "c97", "c95"]
    assert [round(c.cosine, 3) for c in found] == [0.99, 0.97, 0.95]


def test_no_entry_crosses_tenant_model_system_prompt_history_or_kb_version(
    index: SemanticIndex, rng: np.random.Generator
) -> None:
    # Given the identical vector and question stored under six scopes that differ in one thing each
    vector = unit(rng)
    scopes = {
        "base": ("acme", "m1", scope()),
        "other tenant": ("globex", "m1", scope("globex")),
        "other model version": ("acme", "m2", scope(model="m2")),
        "other system prompt": ("acme", "m1", scope(system="You are verbose.")),
        "other conversation": ("acme", "m1", scope(history=1)),
        "other kb version": ("acme", "m1", scope(kb="2024-06")),
    }
    assert len({s for _, _, s in scopes.values()}) == len(scopes)
    for name, (tenant, model, s) in scopes.items():
        add(index, s, tenant, model, name, vector)
    # Then each scope finds exactly its own entry, by the identical vector and by a near-duplicate
    for name, (_, _, s) in scopes.items():
        assert ids(index, s, vector) == [name]
        assert ids(index, s, near(vector, 0.95, rng)) == [name]
    # And a scope with nothing stored finds nothing, though the vector is stored six times elsewhere
    assert ids(index, scope("initech"), vector) == []
    assert ids(index, scope(system="You are French."), vector) == []


def test_an_entry_is_not_returned_at_or_after_its_expiry(index: SemanticIndex, rng: np.random.Generator) -> None:
    vector, s, now = unit(rng), scope(), time.time()
    index.add(s, "acme", "m1", "e1", vector, QUESTION, "{}", now + 30)
    assert [c.entry_id for c in index.search(s, vector, 1, now + 29)] == ["e1"]
    assert index.search(s, vector, 1, now + 30) == []
    assert index.search(s, vector, 1, now + 31) == []


def test_an_already_expired_entry_is_never_served(index: SemanticIndex, rng: np.random.Generator) -> None:
    vector, s = unit(rng), scope()
    add(index, s, "acme", "m1", "e1", vector, ttl=-1)
    assert ids(index, s, vector) == []


def test_a_second_add_of_an_id_replaces_the_entry(index: SemanticIndex, rng: np.random.Generator) -> None:
    vector, s = unit(rng), scope()
    index.add(s, "acme", "m1", "e1", vector, QUESTION, '"first"', time.time() + 60)
    index.add(s, "acme", "m1", "e1", vector, QUESTION, '"second"', time.time() + 60)
    [hit] = index.search(s, vector, 5, time.time())
    assert hit.response_json == '"second"'


def _fill(index: SemanticIndex, vector: Vector) -> dict[str, str]:
    """Two tenants x two models x two system prompts, the same vector everywhere; entry id -> scope."""
    stored = {}
    for tenant in ("acme", "globex"):
        for model in ("m1", "m2"):
            for system in ("A", "B"):
                s = scope(tenant, model, system=system)
                add(index, s, tenant, model, f"{tenant}/{model}/{system}", vector)
                stored[f"{tenant}/{model}/{system}"] = s
    return stored


def _present(index: SemanticIndex, stored: dict[str, str], vector: Vector) -> set[str]:
    return {entry_id for s in set(stored.values()) for entry_id in ids(index, s, vector)}


def test_purge_by_tenant_removes_every_entry_of_that_tenant_only(
    index: SemanticIndex, rng: np.random.Generator
) -> None:
    vector = unit(rng)
    stored = _fill(index, vector)
    removed = index.purge("acme")
    assert removed in (0, 4)  # Momento cannot count what it invalidated
    assert _present(index, stored, vector) == {e for e in stored if e.startswith("globex/")}


def test_purge_by_model_removes_only_that_models_entries(index: SemanticIndex, rng: np.random.Generator) -> None:
    vector = unit(rng)
    stored = _fill(index, vector)
    assert index.purge("acme", "m1") in (0, 2)
    assert _present(index, stored, vector) == set(stored) - {"acme/m1/A", "acme/m1/B"}


def test_purge_scope_removes_one_system_prompt_version_only(index: SemanticIndex, rng: np.random.Generator) -> None:
    vector = unit(rng)
    stored = _fill(index, vector)
    assert index.purge_scope("globex", stored["acme/m1/A"]) == 0  # another tenant cannot purge it
    assert index.purge_scope("acme", stored["acme/m1/A"]) in (0, 1)
    assert _present(index, stored, vector) == set(stored) - {"acme/m1/A"}


def test_purge_by_system_prompt_or_kb_version_tag_removes_exactly_the_tagged_entries(
    index: SemanticIndex, rng: np.random.Generator
) -> None:
    # Given entries of two system prompts x two knowledge-base versions, for two tenants
    vector, stored = unit(rng), {}
    for tenant in ("acme", "globex"):
        for system in ("A", "B"):
            for kb in ("v1", "v2"):
                req = request(system, kb=kb)
                s, entry_id = semantic_scope(tenant, "m1", req), f"{tenant}/{system}/{kb}"
                add(index, s, tenant, "m1", entry_id, vector, tags=cache_tags(req))
                stored[entry_id] = s

    # When acme purges knowledge-base version v1, then system prompt B
    assert index.purge("acme", tag=kb_tag("v1")) in (0, 2)
    assert _present(index, stored, vector) == set(stored) - {"acme/A/v1", "acme/B/v1"}
    assert index.purge("acme", tag=prompt_tag("B")) in (0, 1)

    # Then only acme's entries with those tags went; globex's identical ones stay
    assert _present(index, stored, vector) == set(stored) - {"acme/A/v1", "acme/B/v1", "acme/B/v2"}
    with pytest.raises(ValueError, match="not both"):
        index.purge("acme", "m1", kb_tag("v2"))


def test_entries_added_after_a_purge_are_found(index: SemanticIndex, rng: np.random.Generator) -> None:
    vector, s = unit(rng), scope()
    add(index, s, "acme", "m1", "old", vector)
    index.purge("acme")
    index.purge_scope("acme", s)
    add(index, s, "acme", "m1", "new", vector)
    assert ids(index, s, vector) == ["new"]


def test_near_duplicates_are_found_among_many_entries(index: SemanticIndex, rng: np.random.Generator) -> None:
    # Given 100 unrelated entries and 20 targets in one scope
    s = scope()
    targets = [unit(rng) for _ in range(20)]
    for i in range(100):
        add(index, s, "acme", "m1", f"r{i}", unit(rng))
    for i, target in enumerate(targets):
        add(index, s, "acme", "m1", f"t{i}", target)
    # Then a query at cosine 0.9 from each target finds it first
    found = [ids(index, s, near(target, 0.9, rng), k=1) for target in targets]
    assert sum(hit == [f"t{i}"] for i, hit in enumerate(found)) >= 19


def test_the_local_index_reloads_unexpired_entries_from_disk(tmp_path: Path, rng: np.random.Generator) -> None:
    vector, s, now = unit(rng), scope(), time.time()
    first = LocalSemanticIndex(tmp_path / "semantic.db")
    first.add(s, "acme", "m1", "kept", vector, QUESTION, "{}", now + 60)
    first.add(s, "acme", "m1", "expired", near(vector, 0.99, rng), QUESTION, "{}", now + 0.01)
    first.add(scope("globex"), "globex", "m1", "purged", vector, QUESTION, "{}", now + 60)
    first.purge("globex")
    first.close()
    time.sleep(0.02)
    second = LocalSemanticIndex(tmp_path / "semantic.db")
    assert [c.entry_id for c in second.search(s, vector, 5, time.time())] == ["kept"]
    assert second.search(scope("globex"), vector, 5, time.time()) == []
    second.close()


def test_the_momento_index_stores_no_bucket_outside_the_scope_keys(momento: object, momento_client: object) -> None:
    rng = np.random.default_rng(3)
    remote = MomentoSemanticIndex(momento_client, MOMENTO_CACHE)  # type: ignore[arg-type]
    vector, s = unit(rng), scope()
    add(remote, s, "acme", "m1", "e1", vector)
    keys = set(momento.items(MOMENTO_CACHE))  # type: ignore[attr-defined]
    buckets = {k for k in keys if k.startswith(b"gw:sem:h")}
    assert len(buckets) == 16
    assert all(s.encode() in k for k in buckets)
    assert keys - buckets == {f"gw:sem:e:{s}:e1".encode(), b"gw:sem:purge:acme"}
    remote.close()
