"""`llm-gateway check-config` names every problem of a file in one run, one plain line each with
its location, and exits 1; the server still refuses the same file at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_gateway.cli.main import main
from llm_gateway.config import EXAMPLE_CONFIG, load_config
from llm_gateway.errors import ConfigError

BROKEN = """
models:
  m: {provider: echo}
  bad: {provider: sagemaker}
tenants:
  a:
    routes: {default: {model: missing}}
    allowed_models: [also-missing]
    rate_limit: {requests_per_minute: -1, burst: 1}
  b:
    routes: {default: {model: m, fallbacks: [gone]}}
    rout: {}
  c:
    routes: {default: {model: m}}
    guards: {harmful: {enabled: true, judge_model: no-judge}}
"""


def test_every_problem_is_named_in_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(BROKEN)
    assert main(["check-config", str(config)]) == 1
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    problems = [line.removeprefix(f"{config}: ") for line in lines[:-1]]
    assert sorted(problems) == sorted(
        [
            "models.bad: a sagemaker model needs `endpoint` (endpoint name, URL or 'local')",
            "tenants.a.rate_limit.requests_per_minute: Input should be greater than 0",
            "tenants.b.rout: unknown setting",
            "tenants.b.routes.default: unknown model 'gone'",
            "tenants.a.routes.default: unknown model 'missing'",
            "tenants.a.allowed_models: unknown model 'also-missing'",
            "tenants.c.guards.harmful.judge_model: unknown model 'no-judge'",
        ]
    )
    assert lines[-1] == f"{config}: 7 problems"
    assert captured.out == ""


def test_cross_references_are_all_named_when_the_fields_parse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        "models: {m: {provider: echo}}\n"
        "tenants:\n  a: {routes: {default: {model: x}}}\n  b: {routes: {default: {model: m, fallbacks: [y]}}}\n"
    )
    assert main(["check-config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{config}: tenants.a.routes.default: unknown model 'x'\n" in err
    assert f"{config}: tenants.b.routes.default: unknown model 'y'\n" in err
    assert "Value error" not in err and "(top level)" not in err
    with pytest.raises(ConfigError, match=r"tenants\.a\.routes\.default: unknown model 'x'"):
        load_config(config)  # the server refuses it as before


def test_a_file_that_is_not_yaml_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("models: [unclosed\n")
    assert main(["check-config", str(config)]) == 1
    [problem, total] = capsys.readouterr().err.splitlines()
    assert problem.startswith(f"{config}: line ") and "not valid YAML" in problem
    assert total == f"{config}: 1 problem"


def test_the_example_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE_CONFIG)]) == 0
    assert capsys.readouterr().out.startswith("ok: 2 tenants")
