"""The statistics of experiments: how many requests an arm needs, and a test that stays valid when
people look at it every day.

- `per_arm_sample_size`: a two-sided two-proportion test with an absolute effect `mde` on a
  `baseline` rate (Cohen's h, `statsmodels`' `NormalIndPower`): the fixed-horizon size, read once
  at the end.
- `Sequential`: a mixture sequential probability ratio test (mSPRT) on the difference of two
  proportions. Its p-value is *always valid*: the chance that it ever falls below alpha under no
  effect is at most alpha however often it is read, so a dashboard may show it every day and an
  experiment may stop the first time it is significant. The mixing distribution is normal with a
  standard deviation of the planned effect (`mde`).
- `sequential_per_arm`: how many requests per arm the sequential test needs to reach the planned
  power (more than the fixed-horizon size: the price of looking every day), found from the
  test's rejection threshold at that size (a conservative bound: looking earlier only adds
  detections).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

_MAX_PER_ARM = 10**9


def _check(baseline: float, mde: float, alpha: float, power: float) -> None:
    if not 0 < baseline < 1:
        raise ValueError("the baseline is a rate between 0 and 1")
    if mde == 0 or not 0 < baseline + mde < 1:
        raise ValueError("the effect is not 0 and keeps the rate between 0 and 1")
    if not 0 < alpha < 1 or not alpha < power < 1:
        raise ValueError("alpha and power are between 0 and 1, power above alpha")


def per_arm_sample_size(baseline: float, mde: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Requests per arm for a two-sided two-proportion test to detect `baseline` -> `baseline + mde`."""
    _check(baseline, mde, alpha, power)
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    effect = proportion_effectsize(baseline + mde, baseline)
    n = NormalIndPower().solve_power(effect_size=effect, alpha=alpha, power=power, ratio=1.0, alternative="two-sided")
    return math.ceil(float(n))


def mixture_ratio(difference: float, variance: float, tau2: float) -> float:
    """The mSPRT statistic: the likelihood ratio of "the difference is drawn from N(0, tau2)"
    against "it is 0", for an observed `difference` whose estimate has `variance`."""
    if variance <= 0:
        return 1.0
    exponent = tau2 * difference * difference / (2 * variance * (variance + tau2))
    return math.sqrt(variance / (variance + tau2)) * math.exp(min(exponent, 700.0))


def _threshold(variance: float, tau2: float, alpha: float) -> float:
    """The |difference| at which `mixture_ratio` reaches 1 / alpha."""
    return math.sqrt(
        2 * variance * (variance + tau2) / tau2 * (math.log(1 / alpha) + 0.5 * math.log1p(tau2 / variance))
    )


def sequential_per_arm(baseline: float, mde: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Requests per arm for `Sequential` to detect `mde` with `power`, reading it only at the end
    (every earlier look only adds detections, so the power with daily looks is at least this)."""
    _check(baseline, mde, alpha, power)
    treated = baseline + mde
    spread = baseline * (1 - baseline) + treated * (1 - treated)
    tau2 = mde * mde

    def reached(n: int) -> bool:
        variance = spread / n
        cut, sd = _threshold(variance, tau2, alpha), math.sqrt(variance)
        shift = abs(mde)
        normal = NormalDist()  # upper tail by symmetry: sf(x) = cdf(-x)
        return normal.cdf((shift - cut) / sd) + normal.cdf((-cut - shift) / sd) >= power

    low, high = 1, per_arm_sample_size(baseline, mde, alpha, power)
    while not reached(high):
        low, high = high, high * 2
        if high > _MAX_PER_ARM:
            raise ValueError("the effect is too small to detect with fewer than a billion requests per arm")
    while low < high:  # the smallest n that reaches the power
        middle = (low + high) // 2
        if reached(middle):
            high = middle
        else:
            low = middle + 1
    return high


@dataclass
class Reading:
    """One look at an experiment: the two rates, their difference, and the always-valid verdict."""

    control_rate: float
    treatment_rate: float
    difference: float
    p_value: float  # always valid: the smallest 1 / ratio seen so far (capped at 1)
    significant: bool
    # the always-valid confidence interval of the difference at 1 - alpha
    low: float
    high: float


class Sequential:
    """An mSPRT on `treatment rate - control rate`, read as often as one likes."""

    def __init__(self, mde: float, alpha: float = 0.05) -> None:
        if mde == 0 or not 0 < alpha < 1:
            raise ValueError("the effect is not 0, alpha between 0 and 1")
        self.tau2 = mde * mde
        self.alpha = alpha
        self.p_value = 1.0
        self.low, self.high = -1.0, 1.0  # the confidence interval: the intersection of every look's

    def look(self, control_successes: int, control_n: int, treatment_successes: int, treatment_n: int) -> Reading:
        """The counts so far (cumulative). Each look can only lower the p-value."""
        if min(control_n, treatment_n) <= 0:
            return Reading(0.0, 0.0, 0.0, self.p_value, self.p_value <= self.alpha, self.low, self.high)
        a, b = control_successes / control_n, treatment_successes / treatment_n
        # each rate's variance, kept off 0 where an arm has seen no success or no failure yet
        variance = _rate_variance(a, control_n) / control_n + _rate_variance(b, treatment_n) / treatment_n
        difference = b - a
        self.p_value = min(self.p_value, 1.0 / max(mixture_ratio(difference, variance, self.tau2), 1.0))
        half = _threshold(variance, self.tau2, self.alpha)
        self.low, self.high = max(self.low, difference - half), min(self.high, difference + half)
        return Reading(a, b, difference, self.p_value, self.p_value <= self.alpha, self.low, self.high)


def _rate_variance(rate: float, n: int) -> float:
    floor = 1.0 / (n + 1)
    bounded = min(max(rate, floor), 1 - floor)
    return bounded * (1 - bounded)
