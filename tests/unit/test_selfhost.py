"""The self-hosting cost model: the break-even volume against a brute-force scan, and the CLI report."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from llm_gateway.cli.main import main
from llm_gateway.config import Price
from llm_gateway.selfhost import SelfHosted, Workload, api_daily_cost, break_even

WORKLOAD = Workload(prompt_tokens=500, completion_tokens=200)
# One endpoint: 4 $/h, 2,426 tok/s (the plain batch-32 figure measured on an H200), busy half the day.
HOSTED = SelfHosted(hourly_usd=4.0, tokens_per_second=2426, utilisation=0.5)


@pytest.mark.parametrize(
    ("price", "hosted"),
    [
        (Price(input_per_mtok=2.5, output_per_mtok=10.0), HOSTED),
        (Price(input_per_mtok=2.5, output_per_mtok=10.0), SelfHosted(4.0, 2426, 0.5, min_instances=2)),
        (Price(input_per_mtok=0.8, output_per_mtok=1.2), SelfHosted(4.0, 2426, 0.9)),
        (Price(input_per_mtok=0.15, output_per_mtok=0.60), HOSTED),  # the API stays cheaper
    ],
)
def test_break_even_is_where_self_hosting_starts_winning_for_good(price: Price, hosted: SelfHosted) -> None:
    volumes = np.arange(1, 3_000_000, 29)
    losing = [v for v in volumes if api_daily_cost(price, WORKLOAD, v) < hosted.daily_cost(v * WORKLOAD.tokens)]
    even = break_even(price, hosted, WORKLOAD)
    if even is None:
        assert losing and losing[-1] > 2_999_000  # self-hosting still loses at the end of the scan
        return
    assert max(losing, default=0) < even  # never loses from the break-even on
    assert api_daily_cost(price, WORKLOAD, even) == pytest.approx(hosted.daily_cost(even * WORKLOAD.tokens), rel=0.05)


def test_the_cli_prints_the_table_and_the_break_even(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        """
models:
  gpt-4o: {provider: openai, provider_model: gpt-4o-2024-08-06, price: {input_per_mtok: 2.5, output_per_mtok: 10.0}}
  llama-1b-h200: {provider: sagemaker, endpoint: llama-1b, hourly_usd: 4.0, tokens_per_second: 2426}
tenants:
  acme: {routes: {default: {model: gpt-4o}}}
"""
    )
    assert (
        main(["cost-report", "--config", str(config), "--api-model", "gpt-4o", "--selfhost-model", "llama-1b-h200"])
        == 0
    )
    out = capsys.readouterr().out
    assert "| 10,000 | 32.50 | 96.00 | 1 | API |" in out
    assert "| 100,000 | 325.00 | 96.00 | 1 | self-hosted |" in out
    assert "self-hosting wins from 29,539 requests/day on" in out
    assert main(["cost-report", "--config", str(config), "--api-model", "gpt-4o", "--selfhost-model", "gpt-4o"]) == 2
    assert "needs hourly_usd and tokens_per_second" in capsys.readouterr().err


def test_the_report_for_a_route_prices_its_models_at_the_routers_shares(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        """
models:
  gpt-4o: {provider: openai, provider_model: gpt-4o-2024-08-06, price: {input_per_mtok: 2.5, output_per_mtok: 10.0}}
  gpt-4o-mini:
    {provider: openai, provider_model: gpt-4o-mini-2024-07-18, price: {input_per_mtok: 0.15, output_per_mtok: 0.6}}
  llama-1b-h200: {provider: sagemaker, endpoint: llama-1b, hourly_usd: 4.0, tokens_per_second: 2426}
tenants:
  acme:
    routes:
      default: {model: gpt-4o}
      auto: {complexity: {models: [gpt-4o-mini, gpt-4o], small_share: 0.6}}
"""
    )
    base = ["cost-report", "--config", str(config), "--selfhost-model", "llama-1b-h200"]
    assert main([*base, "--route", "acme.default"]) == 0
    assert "self-hosting wins from 29,539 requests/day on" in capsys.readouterr().out  # as gpt-4o alone
    assert main([*base, "--route", "acme.auto"]) == 0
    out = capsys.readouterr().out
    blended = Price(input_per_mtok=0.4 * 2.5 + 0.6 * 0.15, output_per_mtok=0.4 * 10.0 + 0.6 * 0.6)
    even = break_even(blended, HOSTED, WORKLOAD)
    assert "60% gpt-4o-mini, 40% gpt-4o" in out and even is not None
    assert f"self-hosting wins from {int(np.ceil(even)):,} requests/day on" in out
    assert even > 29_539 * 2  # routing makes the API side cheaper: self-hosting needs more volume
    assert main([*base, "--route", "acme.nope"]) == 2


def test_the_documented_report_runs_on_the_shipped_example_config(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the commands docs/cost-control.md shows, and no configuration named (the shipped example)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "cost-control.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", doc, flags=re.S)
    commands = [line for block in blocks for line in block.splitlines() if line.startswith("llm-gateway cost-report")]
    assert commands
    monkeypatch.delenv("LLM_GATEWAY_CONFIG", raising=False)
    for command in commands:
        # When one runs, Then it prints the table and a verdict, as the document says
        assert main(shlex.split(command)[1:]) == 0
        out = capsys.readouterr().out
        assert "smollm2-135m-instruct-q4_1 at 0.12 $/h, 45 tok/s" in out
        assert "| 1,000 | 0.20 | 2.88 | 1 | API |" in out
        assert out.rstrip().endswith(
            "self-hosting never wins: a busy instance-day costs more than the API for the same requests"
        )
    assert main(["cost-report", "--api-price", "2.5", "10", "--selfhost-model", "smollm2-135m-instruct-q4_1"]) == 0
    assert "self-hosting wins from 887 requests/day on" in capsys.readouterr().out
    assert main(["cost-report", "--api-price", "-1", "1", "--selfhost-model", "smollm2-135m-instruct-q4_1"]) == 2
