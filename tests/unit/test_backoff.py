"""One doubling rule for every wait before trying again."""

from __future__ import annotations

import random

from llm_gateway.backoff import doubling_delay
from llm_gateway.batch.runner import poll_delay_s
from llm_gateway.cli.supervisor import Backoff
from llm_gateway.invoke.step import backoff_delay
from llm_gateway.pipeline import INVOKE_POLICY


def test_the_delay_doubles_from_the_first_wait_up_to_the_ceiling() -> None:
    assert [doubling_delay(0.5, 30.0, step) for step in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert doubling_delay(5.0, 300.0, -3) == 5.0 and doubling_delay(5.0, 300.0, 10_000) == 300.0


def test_restarts_batch_polls_and_retries_follow_it() -> None:
    assert [Backoff(0.5, 30.0).delay(exits) for exits in (1, 2, 3, 8)] == [0.5, 1.0, 2.0, 30.0]
    assert [poll_delay_s(attempt) for attempt in (0, 1, 2, 6, 40)] == [5.0, 10.0, 20.0, 300.0, 300.0]
    # a retry waits a jittered share of the doubled ceiling, and never less than Retry-After
    rng = random.Random(7)
    for attempt in range(6):
        ceiling = doubling_delay(INVOKE_POLICY.base_delay_s, INVOKE_POLICY.max_delay_s, attempt)
        assert 0 <= backoff_delay(INVOKE_POLICY, attempt, None, rng) <= ceiling
    assert backoff_delay(INVOKE_POLICY, 0, 1.5, rng) == 1.5
