"""Every command that reads the configuration takes the same `--config` (one argparse parent)."""

from __future__ import annotations

import pytest

from llm_gateway.cli.main import main

READERS = ["serve", "purge", "review", "cost-report", "route-calibrate", "batch", "guard-report"]


@pytest.mark.parametrize("command", READERS)
def test_each_command_that_reads_the_configuration_takes_config(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out
    assert "--config CONFIG" in usage and "$LLM_GATEWAY_CONFIG" in usage


@pytest.mark.parametrize("given", [[], ["--config", "/nonexistent/other.yaml"]])
def test_the_environment_names_the_default_and_the_option_wins(
    given: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLM_GATEWAY_CONFIG", "/nonexistent/gateway.yaml")
    assert main(["guard-report", *given]) == 2
    read = "/nonexistent/other.yaml" if given else "/nonexistent/gateway.yaml"
    assert f"{read}: cannot read configuration" in capsys.readouterr().err
