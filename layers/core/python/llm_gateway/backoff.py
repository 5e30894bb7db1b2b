"""The one waiting rule the gateway uses wherever it tries again: a first wait, doubled each time, at
most a ceiling (retries of a provider call, restarts of the local model endpoint, looks at a
provider batch, a write that lost a race to a concurrent one)."""

from __future__ import annotations

import random

_rng = random.Random()  # noqa: S311 - jitter, not security


def doubling_delay(first_s: float, most_s: float, step: int) -> float:
    """`first_s` at step 0, twice that at step 1, ..., never more than `most_s`."""
    return float(min(most_s, first_s * 2.0 ** min(max(step, 0), 64)))


def jittered_delay(first_s: float, most_s: float, step: int, rng: random.Random | None = None) -> float:
    """Full jitter: a uniform wait up to `doubling_delay`'s, so that callers that collided spread out."""
    return (rng or _rng).uniform(0.0, doubling_delay(first_s, most_s, step))
