"""The complexity router's model and knob: the acceptance point on the held-out split, the knob's
calibration on the reference mix, the cost knob's closed form, N tiers, and the config rules."""

from __future__ import annotations

import functools
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from llm_gateway.cli.main import main
from llm_gateway.config import ComplexityRouting, Price, parse_config
from llm_gateway.contracts import ChatCompletionRequest
from llm_gateway.errors import ConfigError
from llm_gateway.routing.complexity import (
    default_scorer,
    knob_thresholds,
    share_for_cost,
    tier_of,
    tier_shares,
)
from llm_gateway.routing.complexity_data import load
from llm_gateway.routing.features import FEATURE_NAMES, heuristic_features, request_features
from tests.support.evaluation_data import QQP, needs_qqp

KNOB = 0.64  # the operating point docs/cost-control.md reports


def _request(text: str) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": text}]})


@functools.cache
def _scored(part: str) -> tuple[np.ndarray, np.ndarray]:
    examples = load(part, QQP)  # type: ignore[arg-type]
    scorer = default_scorer()
    scores = np.array([scorer.score(_request(e.text)) for e in examples])
    return scores, np.array([e.label == 1 for e in examples])


@needs_qqp
def test_held_out_split_sends_most_traffic_small_while_hard_requests_reach_the_large_model() -> None:
    scores, hard = _scored("test")
    assert 110 <= hard.sum() <= 130 and len(hard) > 400  # the split is what the docs describe
    small = scores < default_scorer().model.threshold(KNOB)
    assert small.mean() >= 0.60
    assert (~small[hard]).mean() >= 0.95
    # The whole curve: a larger knob sends more traffic small and never more hard requests large.
    knobs = np.linspace(0.2, 0.9, 15)
    shares = [float((scores < default_scorer().model.threshold(k)).mean()) for k in knobs]
    recalls = [float((scores[hard] >= default_scorer().model.threshold(k)).mean()) for k in knobs]
    assert shares == sorted(shares) and recalls == sorted(recalls, reverse=True)
    assert recalls[-1] < 0.9  # at 90 % small the router must drop hard requests: the knob matters


@needs_qqp
def test_the_knob_is_the_share_of_the_reference_mix_below_the_threshold() -> None:
    scores, _ = _scored("train")
    model = default_scorer().model
    for knob in (0.3, 0.5, 0.6, 0.7, 0.8):
        assert abs(float((scores < model.threshold(knob)).mean()) - knob) <= 0.03
        assert model.share_below(model.threshold(knob)) == pytest.approx(knob, abs=1e-6)


def test_the_cost_knob_reaches_its_target_in_closed_form() -> None:
    rng = random.Random(3)
    for _ in range(200):
        costs = sorted(rng.uniform(0.0001, 0.02) for _ in range(rng.randint(2, 4)))
        if costs[-1] - sum(costs[:-1]) / (len(costs) - 1) < 1e-6:
            continue
        target = rng.uniform(costs[0], costs[-1]) * 1000
        share = share_for_cost(target, costs)
        cheaper = [share / (len(costs) - 1)] * (len(costs) - 1)
        expected = sum(s * c for s, c in zip([*cheaper, 1 - share], costs, strict=True)) * 1000
        if 0 < share < 1:
            assert expected == pytest.approx(target, rel=1e-9)
        else:  # out of reach: every request to the cheaper models still costs more than the target
            assert share == 1.0 and expected > target
    assert share_for_cost(50.0, [0.001, 0.01]) == 0.0  # the large model alone meets it


def test_the_cost_knob_becomes_thresholds_from_the_models_prices() -> None:
    model = default_scorer().model
    prices = [Price(input_per_mtok=0.15, output_per_mtok=0.6), Price(input_per_mtok=3.0, output_per_mtok=15.0)]
    small, large = (p.cost(500, 200) for p in prices)
    target = (0.3 * large + 0.7 * small) * 1000  # what a 70 % small share costs per 1k requests
    routing = ComplexityRouting(models=["s", "l"], max_cost_per_1k_usd=target)
    assert knob_thresholds(routing, prices, model) == pytest.approx([model.threshold(0.7)])


def test_n_tiers_split_the_cheaper_share_evenly_and_order_by_score() -> None:
    model = default_scorer().model
    assert tier_shares(0.6, 3) == pytest.approx([0.3, 0.6])
    routing = ComplexityRouting(models=["xs", "s", "l"], small_share=0.6)
    prices = [Price()] * 3
    cuts = knob_thresholds(routing, prices, model)
    assert cuts == pytest.approx([model.threshold(0.3), model.threshold(0.6)])
    tiers = [tier_of(model.threshold(q), cuts) for q in (0.1, 0.29, 0.45, 0.59, 0.61, 0.95)]
    assert tiers == [0, 0, 1, 1, 2, 2]
    explicit = ComplexityRouting(models=["xs", "s", "l"], thresholds=[0.1, 0.5])
    assert knob_thresholds(explicit, prices, model) == [0.1, 0.5]


def test_heuristic_features_see_code_math_structure_and_images() -> None:
    plain = dict(zip(FEATURE_NAMES, heuristic_features("Where is my parcel?"), strict=True))
    code = dict(zip(FEATURE_NAMES, heuristic_features("```python\ndef f(x):\n    return x.y()\n```"), strict=True))
    maths = dict(
        zip(FEATURE_NAMES, heuristic_features("Prove that $\\frac{a}{b} \\le 2$ when a = 3 * 4."), strict=True)
    )
    steps = "First list the steps.\n1. Compare both plans.\n2. Then estimate the cost.\n3. Finally justify it."
    multi = dict(zip(FEATURE_NAMES, heuristic_features(steps), strict=True))
    assert code["code"] > 1 > plain["code"] == 0
    assert maths["latex"] == 1 and maths["math"] > 0 and maths["reasoning_words"] > 0 == plain["latex"]
    assert multi["enumeration"] > 0 and multi["multi_step"] > plain["multi_step"]
    with_image = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "earlier turn"},
                {"role": "assistant", "content": "ok"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this picture?"},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    ],
                },
            ],
        }
    )
    features = dict(zip(FEATURE_NAMES, request_features(with_image), strict=True))
    assert features["image"] == 1 and features["log_turns"] == pytest.approx(np.log1p(2))
    assert features["log_chars"] == pytest.approx(np.log1p(len("What is in this picture?")))


def test_hard_requests_score_higher_than_everyday_ones() -> None:
    scorer = default_scorer()
    easy = scorer.score(_request("Hi, what are your opening hours on Sunday?"))
    hard = scorer.score(
        _request(
            "Let $N$ be the number of ordered triples of positive integers $(a,b,c)$ with $a,b,c \\le 3^6$ such "
            "that $a^3+b^3+c^3$ is a multiple of $3^7$. Find the remainder when $N$ is divided by 1000."
        )
    )
    assert 0 <= easy < 0.05
    assert 0.5 < hard <= 1


CONFIG = """
models:
  small: {provider: echo}
  medium: {provider: echo}
  large: {provider: echo}
tenants:
  acme:
    routes: {default: %s}
"""


def test_route_config_rules() -> None:
    route = parse_config(CONFIG % "{complexity: {models: [small, large], small_share: 0.6}}").tenants["acme"]
    assert route.routes["default"].model == "large"  # the largest model answers what is not scored
    bad = {
        "{complexity: {models: [small, large], small_share: 0.6, max_cost_per_1k_usd: 1}}": "exactly one of",
        "{complexity: {models: [small, large]}}": "exactly one of",
        "{complexity: {models: [small, large], thresholds: [0.1, 0.2]}}": "one ascending score per model",
        "{complexity: {models: [small, medium, large], thresholds: [0.5, 0.2]}}": "one ascending score per model",
        "{complexity: {models: [small, small], small_share: 0.5}}": "must differ",
        "{complexity: {models: [large], small_share: 0.5}}": "at least 2 items",
        "{complexity: {models: [tiny, large], small_share: 0.5}}": "unknown model 'tiny'",
        "{model: small, pins: [{metadata: {plan: gold}, model: huge}]}": "unknown model 'huge'",
        "{complexity: {models: [small, large], small_share: 1.5}}": "less than or equal to 1",
        "{fallbacks: [large]}": "needs `model`",
    }
    for text, problem in bad.items():
        with pytest.raises(ConfigError, match=re.escape(problem)):
            parse_config(CONFIG % text)


@needs_qqp
def test_route_calibrate_splits_a_tenants_own_prompts_at_the_knob(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = load("test", QQP)[:60]
    lines = [json.dumps({"text": e.text}) for e in examples[:30]]
    lines += [json.dumps({"messages": [{"role": "user", "content": e.text}]}) for e in examples[30:50]]
    lines += [e.text.replace("\n", " ") for e in examples[50:]]  # plain text lines
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["route-calibrate", "--prompts", str(prompts), "--small-share", "0.5", "--tiers", "3"]) == 0
    out = capsys.readouterr().out
    thresholds = [float(v) for v in re.search(r"thresholds: \[(.*)\]", out).group(1).split(", ")]  # type: ignore[union-attr]
    scores = [default_scorer().score(_request(e.text.replace("\n", " "))) for e in examples]
    tiers = [tier_of(score, thresholds) for score in scores]
    assert len(thresholds) == 2 and "60 prompts" in out
    assert abs(tiers.count(0) - 15) <= 1 and abs(tiers.count(1) - 15) <= 1 and abs(tiers.count(2) - 30) <= 1

    config = tmp_path / "gateway.yaml"
    prices = "{input_per_mtok: 0.15, output_per_mtok: 0.6}", "{input_per_mtok: 3.0, output_per_mtok: 15.0}"
    route = "{complexity: {models: [small, large], max_cost_per_1k_usd: 1.917}}"  # a 60 % share (see knob test)
    config.write_text(
        f"models:\n  small: {{provider: echo, price: {prices[0]}}}\n  large: {{provider: echo, price: {prices[1]}}}\n"
        f"tenants:\n  acme:\n    routes: {{auto: {route}}}\n",
        encoding="utf-8",
    )
    assert main(["route-calibrate", "--prompts", str(prompts), "--config", str(config), "--route", "acme.auto"]) == 0
    cut = float(re.search(r"thresholds: \[(.*)\]", capsys.readouterr().out).group(1))  # type: ignore[union-attr]
    assert abs(sum(score < cut for score in scores) - 36) <= 1  # 60 % of 60 (ties may straddle the cut)

    prompts.write_text('{"messages": []}\n', encoding="utf-8")
    assert main(["route-calibrate", "--prompts", str(prompts), "--small-share", "0.5"]) == 2
    assert "prompts.jsonl:1" in capsys.readouterr().err
    assert main(["route-calibrate", "--prompts", str(prompts), "--config", str(config), "--route", "acme.x"]) == 2
