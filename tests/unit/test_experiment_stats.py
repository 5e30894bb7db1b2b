"""The statistics of A/B experiments: the sample-size calculator against statsmodels and the
closed form, and the always-valid sequential test simulated with daily peeking (seeded): under no
effect it declares a winner in at most 5 % of 1,000 runs; with the planned effect it detects it in
at least the planned power less 5 points within the size `experiment plan` prints."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from llm_gateway.cli.main import main
from llm_gateway.experiments.stats import Sequential, per_arm_sample_size, sequential_per_arm

CASES = [(0.10, 0.02, 0.05, 0.8), (0.50, 0.05, 0.05, 0.8), (0.30, -0.05, 0.01, 0.9), (0.02, 0.005, 0.05, 0.8)]
RUNS, DAYS = 1000, 14


@pytest.mark.parametrize(("baseline", "mde", "alpha", "power"), CASES)
def test_the_sample_size_matches_statsmodels_and_the_closed_form(
    baseline: float, mde: float, alpha: float, power: float
) -> None:
    n = per_arm_sample_size(baseline, mde, alpha, power)
    effect = proportion_effectsize(baseline + mde, baseline)
    reference = NormalIndPower().solve_power(effect_size=effect, alpha=alpha, power=power, alternative="two-sided")
    assert n == math.ceil(reference)
    # Cohen's h (each arm's 2 asin sqrt(rate) has variance 1/n): n = 2 ((z_{1-alpha/2} + z_power) / h)^2,
    # the far tail left out (it adds less than a request)
    h = 2 * math.asin(math.sqrt(baseline + mde)) - 2 * math.asin(math.sqrt(baseline))
    closed = 2 * ((norm.ppf(1 - alpha / 2) + norm.ppf(power)) / h) ** 2
    assert abs(n - closed) <= 1


def test_plan_prints_the_per_arm_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "plan", "--baseline", "0.1", "--mde", "0.02"]) == 0
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines() if "=" in line and "#" not in line)
    assert int(lines["per_arm"]) == per_arm_sample_size(0.1, 0.02) == 3835
    assert int(lines["sequential_per_arm"]) > int(lines["per_arm"])  # the price of reading it every day


@pytest.mark.parametrize(
    "arguments",
    [
        ["--baseline", "1.2", "--mde", "0.1"],
        ["--baseline", "0.5", "--mde", "0"],
        ["--baseline", "0.9", "--mde", "0.2"],
        ["--baseline", "nan", "--mde", "0.1"],
        ["--baseline", "0.5", "--mde", "0.1", "--power", "0.01"],
    ],
)
def test_plan_refuses_what_cannot_be_planned(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "plan", *arguments]) == 2
    assert "llm-gateway:" in capsys.readouterr().err


def simulate(baseline: float, mde: float, effect: float, seed: int) -> tuple[float, float]:
    """Share of RUNS the test declared significant when read once a day for DAYS days, each day
    bringing an equal share of `sequential_per_arm` requests per arm; and the share of runs whose
    final always-valid interval held the true difference."""
    per_day = -(-sequential_per_arm(baseline, mde) // DAYS)
    rng = np.random.default_rng(seed)
    control = rng.binomial(per_day, baseline, size=(RUNS, DAYS)).cumsum(axis=1)
    treatment = rng.binomial(per_day, baseline + effect, size=(RUNS, DAYS)).cumsum(axis=1)
    declared = covered = 0
    for run in range(RUNS):
        test = Sequential(mde)
        for day in range(DAYS):
            n = per_day * (day + 1)
            reading = test.look(int(control[run, day]), n, int(treatment[run, day]), n)
            if reading.significant:
                break
        declared += reading.significant
        covered += reading.low <= effect <= reading.high
    return declared / RUNS, covered / RUNS


@pytest.mark.parametrize(("baseline", "mde"), [(0.10, 0.02), (0.50, -0.05)])
def test_daily_peeking_under_no_effect_declares_a_winner_in_at_most_5_percent(baseline: float, mde: float) -> None:
    declared, covered = simulate(baseline, mde, effect=0.0, seed=20261206)
    assert declared <= 0.05
    assert covered >= 0.95


@pytest.mark.parametrize(("baseline", "mde"), [(0.10, 0.02), (0.50, -0.05)])
def test_the_planned_effect_is_detected_with_the_planned_power(baseline: float, mde: float) -> None:
    declared, _ = simulate(baseline, mde, effect=mde, seed=7)
    assert declared >= 0.8 - 0.05


def test_a_look_never_raises_the_p_value_and_empty_arms_decide_nothing() -> None:
    test = Sequential(0.05)
    assert not test.look(0, 0, 0, 0).significant
    first = test.look(10, 100, 30, 100).p_value
    assert test.look(10, 200, 30, 200).p_value <= first  # the same rates on more data: lower
    assert test.look(100, 1000, 100, 1000).p_value <= first  # no difference now: it stays
