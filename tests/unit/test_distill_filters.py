"""The collection's filters on traces built by hand: a raw PII value the tenant's masking let
through drops the example (never unmasked into a dataset); another tenant's trace, a cache hit,
a redacted answer, a failed task, an eval run's request and a replay are left out; the split is
by time, in the shares the caller gives."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from llm_gateway.config import parse_config
from llm_gateway.distill.collect import CollectionRefused, collect, split_shares
from llm_gateway.ports import Feedback, StepTrace, Trace

CONFIG = parse_config(
    """
models:
  teacher: {provider: echo, allows_training: true}
  other: {provider: echo}
tenants:
  acme:
    demo: true
    routes: {default: {model: teacher}}
    traces: {store_content: true}
    training: {opt_in: true}
"""
)


def trace(i: int, question: str, answer: str = "ok", **changes: Any) -> Trace:
    steps = [
        StepTrace(name="invoke", detail={"choices": ["stop"]}),
        StepTrace(name="moderate", detail={"outcome": "passed"}),
    ]
    fields: dict[str, Any] = {
        "request_id": f"r{i}",
        "tenant": "acme",
        "ts": 1000.0 + i,
        "expires_at": 10**10,
        "outcome": "ok",
        "route": "default",
        "model": "teacher",
        "latency_ms": 5.0,
        "steps": steps,
        "content": {
            "messages": [{"role": "user", "content": question}],
            "answer": [{"role": "assistant", "content": answer}],
        },
    }
    return Trace.model_validate({**fields, **changes})


def embed(texts: list[str]) -> Any:
    """One-hot per distinct text: only equal texts are near-duplicates."""
    index = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    vectors = np.zeros((len(texts), len(index)), dtype=np.float32)
    for row, text in enumerate(texts):
        vectors[row, index[text]] = 1.0
    return vectors


def test_what_the_filters_leave_out() -> None:
    traces = [trace(i, f"question {i}") for i in range(20)]
    traces += [
        trace(20, "my card is 4111 1111 1111 1111"),  # masking was off for it: raw PII stays out
        trace(21, "q", answer="write to someone@example.com"),
        trace(22, "theirs", tenant="globex"),
        trace(23, "a cache hit", steps=[StepTrace(name="cache", detail={"status": "semantic"})]),
        trace(
            24,
            "redacted",
            steps=[
                StepTrace(name="invoke", detail={"choices": ["stop"]}),
                StepTrace(name="moderate", detail={"outcome": "redacted"}),
            ],
        ),
        trace(25, "failed task", feedback=[Feedback(kind="task", score=0, at=1.0)]),
        trace(26, "low rating", feedback=[Feedback(kind="rating", score=2, at=1.0)]),
        trace(27, "question 3"),  # the same question again
        trace(28, "an eval case", offline=True),
        trace(29, "a replayed question", replay_of="r1"),
    ]
    found = collect(CONFIG, "acme", "default", traces, embed)
    kept = [e.request_id for e in [*found.train, *found.validation, *found.test]]
    assert kept == [f"r{i}" for i in range(20)]
    assert [e.request_id for e in found.test] == ["r18", "r19"] and len(found.train) == 16
    assert found.removed == {
        "not an answer on the route": 1,
        "an eval or a replay": 2,
        "not a finished model answer": 1,
        "moderated": 1,
        "scored down": 2,
        "pii": 2,
        "near-duplicate": 1,
    }


def test_a_teacher_without_licence_refuses_the_whole_collection() -> None:
    with pytest.raises(CollectionRefused, match="other are not stated to allow training"):
        collect(CONFIG, "acme", "default", [trace(0, "q", model="other")], embed)


def test_the_caller_chooses_the_shares_and_the_newest_stay_the_test() -> None:
    traces = [trace(i, f"question {i}") for i in range(40)]
    found = collect(CONFIG, "acme", "default", reversed(traces), embed, split=(70, 10, 20))
    assert [len(found.train), len(found.validation), len(found.test)] == [28, 4, 8]
    assert [e.request_id for e in found.test] == [f"r{i}" for i in range(32, 40)]
    assert found.split == (70, 10, 20)


@pytest.mark.parametrize(
    "raw",
    ["", "80,10", "80,10,10,0", "0,50,50", "90,10,10", "-10,60,50", "a,b,c", "80.5,9.5,10", "1e2,0,0", "80,,20"],
)
def test_shares_that_are_not_three_whole_percentages_adding_up_to_100_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="three whole percentages"):
        split_shares(raw)


def test_shares_are_read_with_commas_or_slashes() -> None:
    assert split_shares("70,10,20") == split_shares("70/10/20") == split_shares(" 70, 10 ,20 ") == (70, 10, 20)
