"""The one waiting rule the gateway uses wherever it tries again: a first wait, doubled each time, at
most a ceiling (retries of a provider call, restarts of the local model endpoint, looks at a
provider batch)."""

from __future__ import annotations


def doubling_delay(first_s: float, most_s: float, step: int) -> float:
    """`first_s` at step 0, twice that at step 1, ..., never more than `most_s`."""
    return float(min(most_s, first_s * 2.0 ** min(max(step, 0), 64)))
