"""The cache step serves paraphrases by meaning within one scope, and finish stores into the index.

The verifier is a stand-in (accepts cosine >= 0.8) so these tests prove the wiring, not its quality."""

from __future__ import annotations

from typing import Any

import pytest

from llm_gateway.adapters.local.semantic import LocalSemanticIndex
from llm_gateway.cache import purge_caches
from llm_gateway.config import SemanticCache
from llm_gateway.deps import Deps
from llm_gateway.finish import final_response
from llm_gateway.runner import LocalRunner
from llm_gateway.semantic import verifier as verifier_module
from tests.conftest import GLOBEX_KEY, make_config, make_deps, make_state

QUESTION = "What is the capital of France?"
PARAPHRASE = "What's the capital city of France?"


class CosineVerifier:
    def threshold_for(self, target_precision: float) -> float:
        return 0.5

    def probability(self, query: str, candidate: str, cosine: float | None = None, **_: Any) -> float:
        return 0.9 if cosine is not None and cosine >= 0.8 else 0.1


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> LocalRunner:
    monkeypatch.setattr(verifier_module, "load_verifier", CosineVerifier)
    config = make_config()
    enabled = SemanticCache(enabled=True, max_temperature=1.0)
    tenants = {name: t.model_copy(update={"semantic_cache": enabled}) for name, t in config.tenants.items()}
    deps: Deps = make_deps(config.model_copy(update={"tenants": tenants}), semantic=LocalSemanticIndex())
    return LocalRunner(deps)


def ask(runner: LocalRunner, content: str, key: str | None = None, **request: Any) -> Any:
    state = make_state(content, key, **request) if key else make_state(content, **request)
    return runner.run(state)


def test_a_paraphrase_is_served_by_meaning_with_a_score(runner: LocalRunner) -> None:
    first = ask(runner, QUESTION, temperature=0)
    assert first.cache.status == "miss" and first.cache.semantic_scope is not None
    second = ask(runner, PARAPHRASE, temperature=0)
    assert second.cache.status == "semantic"
    assert second.cache.score == 0.9 and second.cache.similarity > 0.8
    assert final_response(second).text() == QUESTION  # the echo model's first answer
    assert second.invoke is None


def test_no_answer_crosses_tenants_system_prompts_or_the_temperature_limit(runner: LocalRunner) -> None:
    ask(runner, QUESTION, temperature=0)
    assert ask(runner, PARAPHRASE, GLOBEX_KEY, temperature=0).cache.status == "miss"
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PARAPHRASE}]
    assert ask(runner, PARAPHRASE, messages=system, temperature=0).cache.status == "miss"
    assert ask(runner, PARAPHRASE, temperature=1.5).cache.status == "miss"
    assert ask(runner, "How do I bake bread?", temperature=0).cache.status == "miss"


def test_a_purge_removes_semantic_entries_too(runner: LocalRunner) -> None:
    ask(runner, QUESTION, temperature=0)
    assert purge_caches(runner.deps, "acme") == 2  # the exact entry and the semantic one
    assert ask(runner, PARAPHRASE, temperature=0).cache.status == "miss"
