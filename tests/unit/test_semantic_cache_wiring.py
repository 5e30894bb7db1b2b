"""The cache step serves paraphrases by meaning within one scope, and finish stores into the index.

The verifier is a stand-in (accepts cosine >= 0.8) so these tests prove the wiring, not its quality."""

from __future__ import annotations

from typing import Any

import pytest

from llm_gateway.adapters.local.semantic import LocalSemanticIndex
from llm_gateway.cache.keys import kb_tag, prompt_tag
from llm_gateway.cache.purge import PurgeRequest, purge_caches
from llm_gateway.config import SemanticCache
from llm_gateway.deps import Deps
from llm_gateway.finish import final_response
from llm_gateway.runner import InProcessRunner
from llm_gateway.semantic import verifier as verifier_module
from llm_gateway.semantic.index import Candidate
from tests.conftest import GLOBEX_KEY, make_config, make_deps, make_state

QUESTION = "What is the capital of France?"
PARAPHRASE = "What's the capital city of France?"


class CosineVerifier:
    def threshold_for(self, target_precision: float) -> float:
        return 0.5

    def rank(self, query: str, query_vec: Any, candidates: list[Candidate]) -> list[tuple[float, Candidate]]:
        scored = [(0.9 if c.cosine >= 0.8 else 0.1, c) for c in candidates]
        return sorted(scored, key=lambda pair: -pair[0])


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> InProcessRunner:
    monkeypatch.setattr(verifier_module, "load_verifier", CosineVerifier)
    config = make_config()
    enabled = SemanticCache(enabled=True, max_temperature=1.0)
    tenants = {name: t.model_copy(update={"semantic_cache": enabled}) for name, t in config.tenants.items()}
    deps: Deps = make_deps(config.model_copy(update={"tenants": tenants}), semantic=LocalSemanticIndex())
    return InProcessRunner(deps)


def ask(runner: InProcessRunner, content: str, key: str | None = None, **request: Any) -> Any:
    state = make_state(content, key, **request) if key else make_state(content, **request)
    return runner.run(state)


def test_a_paraphrase_is_served_by_meaning_with_a_score(runner: InProcessRunner) -> None:
    first = ask(runner, QUESTION, temperature=0)
    assert first.cache.status == "miss" and first.cache.semantic_scope is not None
    second = ask(runner, PARAPHRASE, temperature=0)
    assert second.cache.status == "semantic"
    assert second.cache.score == 0.9 and second.cache.similarity > 0.8
    assert final_response(second).text() == QUESTION  # the echo model's first answer
    assert second.invoke is None


def test_no_answer_crosses_tenants_system_prompts_or_the_temperature_limit(runner: InProcessRunner) -> None:
    ask(runner, QUESTION, temperature=0)
    assert ask(runner, PARAPHRASE, GLOBEX_KEY, temperature=0).cache.status == "miss"
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PARAPHRASE}]
    assert ask(runner, PARAPHRASE, messages=system, temperature=0).cache.status == "miss"
    assert ask(runner, PARAPHRASE, temperature=1.5).cache.status == "miss"
    assert ask(runner, "How do I bake bread?", temperature=0).cache.status == "miss"


def test_a_purge_removes_semantic_entries_too(runner: InProcessRunner) -> None:
    ask(runner, QUESTION, temperature=0)
    assert purge_caches(runner.deps, PurgeRequest(tenant="acme")) == 2  # the exact entry and the semantic one
    assert ask(runner, PARAPHRASE, temperature=0).cache.status == "miss"


def test_a_kb_version_purge_removes_that_versions_answers_from_both_caches(runner: InProcessRunner) -> None:
    # Given the same question answered from knowledge-base versions v1 and v2
    for kb in ("v1", "v2"):
        assert ask(runner, QUESTION, temperature=0, metadata={"kb_version": kb}).cache.status == "miss"

    # When v1 is purged
    assert purge_caches(runner.deps, PurgeRequest(tenant="acme", kb_version="v1")) == 2

    # Then v1 asks again (exact and paraphrased), v2 is still served
    assert ask(runner, QUESTION, temperature=0, metadata={"kb_version": "v1"}).cache.status == "miss"
    assert ask(runner, QUESTION, temperature=0, metadata={"kb_version": "v2"}).cache.status == "exact"
    assert ask(runner, PARAPHRASE, temperature=0, metadata={"kb_version": "v2"}).cache.status == "semantic"


def test_a_system_prompt_purge_removes_only_answers_given_under_it(runner: InProcessRunner) -> None:
    def messages(system: str, question: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": system}, {"role": "user", "content": question}]

    for system in ("Be brief.", "Be thorough."):
        ask(runner, QUESTION, messages=messages(system, QUESTION), temperature=0)

    assert purge_caches(runner.deps, PurgeRequest(tenant="acme", system_prompt="Be brief.")) == 2

    assert ask(runner, PARAPHRASE, messages=messages("Be brief.", PARAPHRASE), temperature=0).cache.status == "miss"
    kept = ask(runner, PARAPHRASE, messages=messages("Be thorough.", PARAPHRASE), temperature=0)
    assert kept.cache.status == "semantic"


def test_a_purge_request_names_at_most_one_selector() -> None:
    with pytest.raises(ValueError, match="not model and kb_version"):
        PurgeRequest(tenant="acme", model="m", kb_version="v1")
    assert PurgeRequest(tenant="acme", kb_version="v1").tag == kb_tag("v1")
    assert PurgeRequest(tenant="acme", system_prompt="Be brief.").tag == prompt_tag("Be brief.")
    assert PurgeRequest(tenant="acme", model="m").tag is None
