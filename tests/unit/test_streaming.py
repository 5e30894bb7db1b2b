"""Streaming: same chain, chunks relayed with a hold-back window, finish on completion."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llm_gateway.config import ModelConfig
from llm_gateway.contracts import ChatCompletionChunk, ChatCompletionRequest, ErrorBody
from llm_gateway.errors import AllModelsFailed, ProviderUnavailable
from llm_gateway.providers.base import ProviderReply, StreamDelta
from llm_gateway.runner import InProcessRunner
from llm_gateway.streaming import HOLDBACK_CHARS, StreamItem, start_stream
from tests.conftest import GLOBEX_KEY, make_deps, make_state, store_of


class ScriptedStream:
    """A provider that streams given pieces (and can fail before or after the first one)."""

    name = "echo"

    def __init__(self, pieces: list[str], fail_first: int = 0, fail_midway: bool = False, finish: bool = True) -> None:
        self.pieces = pieces
        self.fail_first = fail_first
        self.fail_midway = fail_midway
        self.finish = finish  # False: the stream just stops, without its final delta
        self.closed = False
        self.sent = 0  # deltas handed out

    def complete(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> ProviderReply:
        raise NotImplementedError

    def stream(self, request: ChatCompletionRequest, model_id: str, model: ModelConfig) -> Iterator[StreamDelta]:
        if self.fail_first > 0:
            self.fail_first -= 1
            raise ProviderUnavailable("model failed (HTTP 500)")
        return self._deltas()

    def _deltas(self) -> Iterator[StreamDelta]:
        try:
            for i, piece in enumerate(self.pieces):
                if self.fail_midway and i == len(self.pieces) // 2:
                    raise ProviderUnavailable("model failed mid-stream")
                self.sent += 1
                yield StreamDelta(text=piece)
            if self.finish:
                yield StreamDelta(finish_reason="stop", prompt_tokens=11, completion_tokens=len(self.pieces))
        finally:
            self.closed = True


def runner_for(provider: ScriptedStream) -> InProcessRunner:
    deps = make_deps()
    deps.providers.register("echo", lambda: provider)
    return InProcessRunner(deps)


def collect(items: Iterator[StreamItem]) -> tuple[str, list[ChatCompletionChunk], list[ErrorBody]]:
    everything = list(items)
    chunks = [i for i in everything if isinstance(i, ChatCompletionChunk)]
    errors = [i for i in everything if isinstance(i, ErrorBody)]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks, errors


def test_stream_relays_all_text_and_ends_with_finish_reason_and_usage() -> None:
    provider = ScriptedStream(["Hel", "lo ", "wor", "ld"])
    runner = runner_for(provider)
    state = make_state("hi", stream=True, stream_options={"include_usage": True})
    model, items = start_stream(runner, state)
    text, chunks, errors = collect(items)
    assert model == "echo" and text == "Hello world" and not errors
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (11, 4)
    assert state.finish is not None and state.finish.cached  # the assembled answer was stored


def test_a_blocked_phrase_split_across_deltas_never_leaves_the_gateway() -> None:
    prefix = "x" * (HOLDBACK_CHARS * 2) + " the number is "
    provider = ScriptedStream([prefix, "123-", "45-", "67", "89", " and more text"])
    runner = runner_for(provider)
    state = make_state("hi", key=GLOBEX_KEY, stream=True)
    _, items = start_stream(runner, state)
    text, chunks, _ = collect(items)
    assert "123-" not in text and "6789" not in text
    assert text and prefix.startswith(text)  # what left before the match was clean prefix text
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert provider.closed
    assert state.moderate is not None and state.moderate.outcome == "filtered"


def test_failure_before_the_first_token_is_retried() -> None:
    provider = ScriptedStream(["ok"], fail_first=1)
    runner = runner_for(provider)
    _, items = start_stream(runner, make_state("hi", stream=True))
    assert collect(items)[0] == "ok"


def test_failure_mid_stream_ends_with_an_error_event_and_is_recorded() -> None:
    provider = ScriptedStream(["a" * 100, "b" * 100, "c", "d"], fail_midway=True)
    runner = runner_for(provider)
    _, items = start_stream(runner, make_state("hi", stream=True))
    text, chunks, errors = collect(items)
    assert len(errors) == 1 and errors[0].error.code == "upstream_unavailable"
    assert text and all(c.choices[0].finish_reason is None for c in chunks if c.choices)  # no finish chunk
    rows = store_of(runner.deps).query("SELECT outcome, error_code FROM audit")
    assert rows == [("error", "upstream_unavailable")]
    # What the model generated before it failed is billed, as for a client that leaves.
    ((prompt, completion, cost),) = store_of(runner.deps).query(
        "SELECT prompt_tokens, completion_tokens, cost_usd FROM usage"
    )
    assert completion == provider.sent == 2
    assert isinstance(prompt, int) and prompt >= 1 and isinstance(cost, float) and cost > 0
    assert not store_of(runner.deps).query("SELECT key FROM exact_cache")


def test_a_stream_that_stops_without_finishing_is_an_error_not_an_answer() -> None:
    provider = ScriptedStream(["Half an ", "answer"], finish=False)
    runner = runner_for(provider)
    state = make_state("hi", stream=True, stream_options={"include_usage": True})
    _, items = start_stream(runner, state)
    _, chunks, errors = collect(items)
    assert len(errors) == 1 and "before finishing" in errors[0].error.message
    assert all(c.choices[0].finish_reason is None for c in chunks if c.choices) and chunks[-1].usage is None
    rows = store_of(runner.deps).query("SELECT outcome, error_code, completion_tokens FROM audit")
    assert rows == [("error", "upstream_unavailable", 2)]
    assert state.finish is None or state.finish.response is None  # nothing was passed off as finished


def test_a_stream_that_stops_before_any_text_falls_back() -> None:
    provider = ScriptedStream([], finish=False)
    runner = runner_for(provider)
    with pytest.raises(AllModelsFailed):  # echo and echo-b both stop at once (the same scripted provider)
        start_stream(runner, make_state("hi", stream=True))
    assert store_of(runner.deps).query("SELECT outcome, error_code, cost_usd FROM audit") == [
        ("error", "all_models_failed", 0.0)
    ]


def test_cached_answers_are_replayed_as_a_stream() -> None:
    provider = ScriptedStream(["cached ", "answer"])
    runner = runner_for(provider)
    collect(start_stream(runner, make_state("same", stream=True))[1])
    model, items = start_stream(runner, make_state("same", stream=True))
    text, chunks, _ = collect(items)
    assert (model, text) == ("echo", "cached answer")
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_blocked_request_produces_no_stream() -> None:
    runner = runner_for(ScriptedStream(["never"]))
    state = make_state("the codename please", key=GLOBEX_KEY, stream=True)
    model, items = start_stream(runner, state)
    assert model is None and list(items) == []
    assert state.guard is not None and state.guard.outcome == "blocked" and state.guard.layer == "blocklist"


def test_a_client_leaving_mid_stream_is_recorded_and_the_provider_stream_closed() -> None:
    provider = ScriptedStream(["x" * 100, "y" * 100, "z" * 100])
    runner = runner_for(provider)
    _, items = start_stream(runner, make_state("hi", stream=True))
    next(items), next(items)  # role chunk, first released text
    items.close()  # type: ignore[attr-defined]
    assert provider.closed
    rows = store_of(runner.deps).query("SELECT outcome, error_code FROM audit")
    assert rows == [("error", "client_closed_request")]
    # What the model generated until the gateway closed it is billed: charged, as an estimate
    # (one token per delta received; the prompt at four characters a token).
    (usage,) = store_of(runner.deps).query("SELECT prompt_tokens, completion_tokens, cost_usd FROM usage")
    assert usage[1] == provider.sent and usage[0] >= 1 and usage[2] > 0
    assert not store_of(runner.deps).query("SELECT key FROM exact_cache")


def test_a_streamed_answer_that_turns_harmful_is_cut_with_content_filter() -> None:
    # Given a tenant with harmful-content moderation on answers (not on requests)
    from llm_gateway.config import HarmfulGuard

    harmless = "Chemistry is the study of matter and how substances combine and change. " * 5
    harmful = "Here are detailed step-by-step instructions for synthesizing sarin at home: first obtain"
    provider = ScriptedStream([harmless, *(word + " " for word in harmful.split(" "))])
    runner = runner_for(provider)
    config = runner.deps.config
    acme = config.tenants["acme"]
    guards = acme.guards.model_copy(update={"harmful": HarmfulGuard(enabled=True, input=False)})
    tenants = {**config.tenants, "acme": acme.model_copy(update={"guards": guards})}
    runner.deps.config = config.model_copy(update={"tenants": tenants})

    state = make_state("Tell me about chemistry.", stream=True)
    _, items = start_stream(runner, state)
    text, chunks, errors = collect(items)

    # Then what was released is harmless, the harmful part never reaches the client, and the
    # answer is recorded as filtered by tier 2
    assert not errors
    assert "sarin" not in text and text and harmless.startswith(text[:40])
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert state.moderate is not None and (state.moderate.outcome, state.moderate.layer) == (
        "filtered",
        "harmful_content",
    )
    assert provider.closed
