"""Several choices per request (`n` > 1), driven by the openai SDK: an OpenAI model answers them in
one call (the prompt paid once), an Anthropic model in one call per choice (each paid); every
choice is checked on its own; budgets hold the worst case of all choices; streamed, the choices
come as chunks with their index."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import openai
import pytest

from llm_gateway.config import parse_config
from llm_gateway.http.app import create_app
from llm_gateway.runner import InProcessRunner
from tests.conftest import ACME_KEY, GLOBEX_KEY, hash_key, make_deps, store_of
from tests.integration.apis.conftest import upstream_models
from tests.support.fake_providers import FakeServer, ok, status
from tests.support.servers import serve

Upstreams = tuple[FakeServer, FakeServer]
ASK = [{"role": "user", "content": "Suggest a name for a bakery."}]


@pytest.fixture(scope="module")
def gateway(upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, InProcessRunner]]:
    from llm_gateway.adapters.local.budget import SqliteBudgetLedger

    db = tmp_path_factory.mktemp("choices") / "gateway.db"
    config = parse_config(f"""
limits: {{max_choices: 4}}
models:
{upstream_models(upstreams)}tenants:
  acme:
    api_keys: [{{id: k1, sha256: {hash_key(ACME_KEY)}}}]
    routes: {{default: {{model: gpt}}, claude: {{model: claude}}}}
    output_blocklist: {{keywords: ["choice 2"]}}
  globex:
    api_keys: [{{id: k1, sha256: {hash_key(GLOBEX_KEY)}}}]
    routes: {{default: {{model: gpt}}}}
    budgets: [{{scope: tenant, period: day, tokens: 400}}]
""")
    runner = InProcessRunner(make_deps(config, db=db, budgets=SqliteBudgetLedger(db)))
    with serve(create_app(runner)) as url:
        yield url + "/v1", runner


def client(gateway: tuple[str, InProcessRunner], key: str = ACME_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway[0], api_key=key, max_retries=0)


def test_an_openai_model_answers_every_choice_in_one_call_and_the_prompt_is_paid_once(
    gateway: tuple[str, InProcessRunner], upstreams: Upstreams
) -> None:
    gpt = upstreams[0]
    gpt.script.push(ok("Crumb & Co.", prompt_tokens=40, completion_tokens=5))
    raw = client(gateway).chat.completions.with_raw_response.create(model="default", messages=ASK, n=3, seed=1)  # type: ignore[arg-type]
    answer = raw.parse()
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert answer.choices[0].message.content == "Crumb & Co."
    assert answer.choices[2].message.content == "Crumb & Co. (choice 3)"
    assert len(gpt.script.requests) == 1 and gpt.script.last.body["n"] == 3
    assert answer.usage is not None and (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (40, 15)
    assert float(raw.headers["x-gateway-cost-usd"]) == pytest.approx((40 * 1.0 + 15 * 2.0) / 1e6)
    usage = store_of(gateway[1].deps).query(
        "SELECT prompt_tokens, completion_tokens FROM usage WHERE request_id = ?", (raw.headers["x-request-id"],)
    )
    assert [tuple(r) for r in usage] == [(40, 15)]


def test_an_anthropic_model_answers_one_choice_per_call_each_paid(
    gateway: tuple[str, InProcessRunner], upstreams: Upstreams
) -> None:
    claude = upstreams[1]
    claude.script.push(*[ok(f"Name {i}", prompt_tokens=30, completion_tokens=4) for i in range(3)])
    raw = client(gateway).chat.completions.with_raw_response.create(model="claude", messages=ASK, n=3, seed=2)  # type: ignore[arg-type]
    answer = raw.parse()
    assert sorted(c.message.content or "" for c in answer.choices) == ["Name 0", "Name 1", "Name 2"]
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert len(claude.script.requests) == 3 and all("n" not in r.body for r in claude.script.requests)
    assert answer.usage is not None and (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (90, 12)
    assert float(raw.headers["x-gateway-cost-usd"]) == pytest.approx((90 * 3.0 + 12 * 15.0) / 1e6)
    assert raw.headers["x-gateway-attempts"] == "3"


def test_each_choice_is_checked_on_its_own(gateway: tuple[str, InProcessRunner], upstreams: Upstreams) -> None:
    upstreams[0].script.push(ok("Rise & Shine"))
    answer = client(gateway).chat.completions.create(model="default", messages=ASK, n=3, seed=3)  # type: ignore[arg-type]
    # the blocklist names "choice 2": only that choice is withheld
    assert [c.finish_reason for c in answer.choices] == ["stop", "content_filter", "stop"]
    assert answer.choices[1].message.content is None
    assert answer.choices[2].message.content == "Rise & Shine (choice 3)"


def test_streamed_choices_come_as_chunks_with_their_index(
    gateway: tuple[str, InProcessRunner], upstreams: Upstreams
) -> None:
    upstreams[0].script.push(ok("Flour Power"))
    stream = client(gateway).chat.completions.create(
        model="default",
        messages=ASK,  # type: ignore[arg-type]
        n=3,
        seed=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts: dict[int, str] = defaultdict(str)
    finishes: dict[int, str | None] = {}
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            finishes[choice.index] = choice.finish_reason or finishes.get(choice.index)
    # the second choice meets the blocklist: withheld there as whole answers withhold it
    assert dict(texts) == {0: "Flour Power", 1: "", 2: "Flour Power (choice 3)"}
    assert finishes == {0: "stop", 1: "content_filter", 2: "stop"}
    assert usage is not None and usage.completion_tokens == 18


def test_more_choices_than_the_limit_are_refused(gateway: tuple[str, InProcessRunner], upstreams: Upstreams) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(gateway).chat.completions.create(model="default", messages=ASK, n=5)  # type: ignore[arg-type]
    assert refused.value.body["param"] == "n"  # type: ignore[index]
    assert upstreams[0].script.requests == []


def test_a_budget_holds_the_worst_case_of_every_choice(
    gateway: tuple[str, InProcessRunner], upstreams: Upstreams
) -> None:
    gpt = upstreams[0]
    gpt.script.push(ok("One name", prompt_tokens=10, completion_tokens=3))
    globex = client(gateway, GLOBEX_KEY)
    # 400 tokens a day: one choice of at most 100 tokens fits; four of them cannot
    with pytest.raises(openai.RateLimitError) as refused:
        globex.chat.completions.create(model="default", messages=ASK, n=4, max_tokens=100)  # type: ignore[arg-type]
    assert refused.value.code == "budget_exceeded" and gpt.script.requests == []
    answer = globex.chat.completions.create(model="default", messages=ASK, n=1, max_tokens=100)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "One name"


def test_a_choice_that_fails_fails_the_request_and_what_was_paid_is_recorded(
    gateway: tuple[str, InProcessRunner], upstreams: Upstreams
) -> None:
    claude = upstreams[1]
    # the first call and one more answer; the third choice's call fails on every attempt
    claude.script.push(ok("A", prompt_tokens=30, completion_tokens=4), ok("B", prompt_tokens=30, completion_tokens=4))
    claude.script.push(*[status(500)] * 3)
    raw = client(gateway).chat.completions.with_raw_response
    with pytest.raises(openai.APIStatusError) as failed:
        raw.create(model="claude", messages=ASK, n=3, seed=5)  # type: ignore[arg-type]
    assert failed.value.status_code == 503 and failed.value.code == "all_models_failed"
    request_id = failed.value.response.headers["x-request-id"]
    store = store_of(gateway[1].deps)
    usage = store.query(
        "SELECT prompt_tokens, completion_tokens, cost_usd FROM usage WHERE request_id = ?", (request_id,)
    )
    assert [tuple(r)[:2] for r in usage] == [(60, 8)]  # the two answered calls, paid
    assert usage[0][2] == pytest.approx((60 * 3.0 + 8 * 15.0) / 1e6)
    audit = store.query("SELECT outcome, error_code, cost_usd, attempts FROM audit WHERE request_id = ?", (request_id,))
    ((outcome, code, cost, attempts),) = [tuple(r) for r in audit]
    assert (outcome, code) == ("error", "all_models_failed") and cost == pytest.approx(usage[0][2])
    assert attempts == 2  # the calls that answered (the failed one's attempts are in the error's message)
