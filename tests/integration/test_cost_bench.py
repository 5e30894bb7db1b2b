"""`bench/cost.py` on a slice of its workload: every lever lowers the cost against sending
everything to the large model, together they beat each one alone, and the billing fakes behave
as the services do (prompt caching only where the services would cache)."""

from __future__ import annotations

from bench.cost import LEVERS, Item, replay, scenarios, system_prompt, workload
from tests.support.evaluation_data import QQP, needs_qqp
from tests.support.fake_providers import Script, fake_server
from tests.support.priced_providers import PricedResponder, tokens


@needs_qqp
def test_the_workload_holds_hard_requests_repeats_and_paraphrases_after_their_first_ask() -> None:
    items = workload(QQP)
    kinds = [item.kind for item in items]
    assert kinds.count("repeat") == 60 and kinds.count("paraphrase") == 30
    assert 0.15 <= sum(item.label for item in items) / len(items) <= 0.25
    for n, item in enumerate(items):
        if item.kind == "repeat":
            assert any(x.text == item.text and x.kind == "new" for x in items[:n])
    assert workload(QQP) == items  # replayable
    assert tokens(system_prompt()) >= 1024  # long enough for the providers' prompt caches


@needs_qqp
def test_each_lever_saves_and_all_together_save_most() -> None:
    items = workload(QQP)[:70] + [Item(text, 0, "repeat") for text in ("Hello", "What is AI?")] * 2
    results = scenarios(items, small_share=0.64)  # the operating point docs/cost-control.md reports
    base = results["everything to the large model"]
    assert base.answered_by == {"large": len(items)} and base.cache_hits == 0
    for lever in LEVERS:
        assert results[f"+ {lever}"].per_1k < base.per_1k, lever
    everything = results["all levers"]
    assert everything.per_1k < min(results[f"+ {lever}"].per_1k for lever in LEVERS)
    assert results["+ response cache"].cache_hits >= 2
    routed = results["+ routing"]
    assert routed.answered_by["small"] > routed.answered_by["large"] and routed.hard_to_large >= routed.hard - 1 >= 5


def test_prompt_caching_bills_a_repeated_prefix_at_the_cached_rate_only_with_breakpoints() -> None:
    items = [Item("Where is my order?", 0, "new"), Item("Can I return shoes?", 0, "new")]
    plain = replay(items, frozenset(), 0.5)
    cached = replay(items, frozenset({"prompt caching"}), 0.5)
    assert cached.usd < plain.usd
    anthropic = PricedResponder("anthropic")
    body = {"system": [{"type": "text", "text": "x" * 5000}], "messages": [{"role": "user", "content": "hi"}]}
    assert anthropic(body).cached_tokens == anthropic(body).cached_tokens == 0  # no breakpoint, no cache
    body["system"][0]["cache_control"] = {"type": "ephemeral"}
    assert (anthropic(body).cached_tokens, anthropic(body).cached_tokens) == (0, 1250)
    openai = PricedResponder("openai")
    chat = {"messages": [{"role": "system", "content": "y" * 5000}, {"role": "user", "content": "hi"}], "max_tokens": 5}
    first, second = openai(chat), openai(chat)
    assert (first.cached_tokens, second.cached_tokens) == (0, 1152)  # automatic, in 128-token steps
    assert (second.completion_tokens, second.finish_reason) == (5, "length")
    with fake_server("openai", Script(responder=PricedResponder("openai"))) as server:
        assert server.script.next(chat).prompt_tokens == tokens("y" * 5000 + "hi") + 8
