"""`llm-gateway batch` refuses bad usage before doing anything: `results` without a job id is a
usage error, and `submit` with a file it cannot read fails before the model endpoint starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_gateway.cli.main import main
from llm_gateway.cli.store_location import DATA_DIR_ENV

# Stands in for the model endpoint (`python -m model_server`, run from the command's folder): it
# leaves a mark that it was started and exits without serving.
ENDPOINT_STAND_IN = """
from pathlib import Path

Path("endpoint-started").write_text("started")
raise SystemExit(3)
"""


def test_results_without_a_job_id_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert main(["batch", "results"]) == 2
    err = capsys.readouterr().err
    assert "None" not in err
    assert err.strip() == "llm-gateway: batch results needs a job id: llm-gateway batch results JOB [--errors]"
    assert not list(tmp_path.iterdir())  # no store was opened


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["batch", "submit", "missing.jsonl", "--tenant", "acme"], "cannot read missing.jsonl"),
        (["batch", "submit", "requests.jsonl", "--tenant", "nobody"], "no tenant 'nobody'"),
        (["batch", "submit", "requests.jsonl"], "needs the JSONL file and --tenant"),
    ],
    ids=["missing-file", "unknown-tenant", "no-tenant"],
)
def test_submit_fails_fast_without_starting_the_model(tmp_path: Path, args: list[str], message: str) -> None:
    # Given the shipped configuration (its model runs on the local endpoint) and a stand-in endpoint
    (tmp_path / "model_server").mkdir()
    (tmp_path / "model_server" / "__init__.py").write_text("")
    (tmp_path / "model_server" / "__main__.py").write_text(ENDPOINT_STAND_IN)
    (tmp_path / "requests.jsonl").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "LLM_GATEWAY_CONFIG"} | {DATA_DIR_ENV: str(tmp_path / "data")}
    # When `batch submit` is given a file it cannot read or a tenant it does not know
    command = [sys.executable, "-m", "llm_gateway.cli.main", *args]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    # Then it exits 2 with one line naming the problem, and never started the endpoint
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("llm-gateway: ") and message in line
    assert not (tmp_path / "endpoint-started").exists()
