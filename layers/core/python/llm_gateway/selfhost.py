"""When does self-hosting win? API price per token against a GPU endpoint's hourly price at its
measured throughput (`llm-gateway cost-report`).

A day's traffic of `requests` requests, each `prompt_tokens` in and `completion_tokens` out:
- API: requests x (prompt x input price + completion x output price).
- Self-hosted: enough instances to generate the day's tokens at `tokens_per_second` (the
  endpoint's measured aggregate throughput at its serving batch size) and `utilisation` (traffic
  is not flat: the share of the day an instance is busy), never fewer than `min_instances`
  (an endpoint that is always up), each at `hourly_usd` for 24 hours.

Self-hosting cost is a staircase (one more instance per throughput step), the API cost a line;
`break_even` finds the smallest daily volume from which self-hosting is cheaper and stays so
(the staircase's slope, hourly price over capacity, is below the API's per-request price, or
never).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import Price

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class SelfHosted:
    hourly_usd: float  # one instance (e.g. ml.p5.48xlarge share, or a g6 instance)
    tokens_per_second: float  # measured aggregate throughput of one instance
    utilisation: float = 0.5
    min_instances: int = 1

    def capacity_tokens_per_day(self) -> float:
        return self.tokens_per_second * SECONDS_PER_DAY * self.utilisation

    def instances(self, tokens_per_day: float) -> int:
        return max(self.min_instances, math.ceil(tokens_per_day / self.capacity_tokens_per_day()))

    def daily_cost(self, tokens_per_day: float) -> float:
        return self.instances(tokens_per_day) * self.hourly_usd * 24


@dataclass(frozen=True)
class Workload:
    prompt_tokens: int
    completion_tokens: int

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def api_daily_cost(price: Price, workload: Workload, requests: float) -> float:
    return requests * price.cost(workload.prompt_tokens, workload.completion_tokens)


def break_even(price: Price, hosted: SelfHosted, workload: Workload) -> float | None:
    """The smallest requests/day from which self-hosting costs less than the API for every larger
    volume; None when the API stays cheaper (its marginal cost is below the endpoint's)."""
    per_request = price.cost(workload.prompt_tokens, workload.completion_tokens)
    capacity = hosted.capacity_tokens_per_day() / workload.tokens  # requests per instance-day
    per_instance_day = hosted.hourly_usd * 24
    if per_request * capacity <= per_instance_day:
        return None  # a full instance-day costs more than the API for the same requests
    # With n instances (volumes up to n * capacity) self-hosting costs n * day, the API v * price.
    # The API's lead shrinks by a day's price at each step (just past k * capacity: k * capacity *
    # price against (k + 1) * day), so self-hosting keeps winning only from the first step k0 at
    # which k * capacity * price >= (k + 1) * day holds, and then for every later one.
    k0 = max(hosted.min_instances, math.ceil(per_instance_day / (per_request * capacity - per_instance_day)))
    lower = (k0 - 1) * capacity if k0 > hosted.min_instances else 0.0
    return max(lower, k0 * per_instance_day / per_request)


def report_rows(
    price: Price, hosted: SelfHosted, workload: Workload, volumes: list[int]
) -> list[tuple[int, float, float, int]]:
    """(requests/day, API $/day, self-hosted $/day, instances) per volume."""
    return [
        (
            volume,
            api_daily_cost(price, workload, volume),
            hosted.daily_cost(volume * workload.tokens),
            hosted.instances(volume * workload.tokens),
        )
        for volume in volumes
    ]
