"""`--table` reads a deployment's DynamoDB table through boto3, which only the `aws` extra installs:
without it the CLI says what to install in one line (exit 2), never with a traceback.

The CLI runs in a real subprocess in which importing boto3 or botocore fails, as on a machine
that installed `llm-gateway[local]` only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# A finder ahead of every other: boto3 and botocore (and their submodules) cannot be imported.
WITHOUT_BOTO3 = """
import sys


class NoBoto3:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("boto3", "botocore"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoBoto3())
from llm_gateway.cli.main import main

sys.exit(main(sys.argv[1:]))
"""


def cli_without_boto3(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", WITHOUT_BOTO3, *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize(
    "args",
    [
        ("review", "list", "--table", "llm-gateway-prod-review"),
        ("review", "approve", "item-1", "--table", "llm-gateway-prod-review"),
        ("batch", "status", "--table", "llm-gateway-prod-batch-jobs"),
        ("batch", "status", "job-1", "--table", "llm-gateway-prod-batch-jobs"),
    ],
    ids=["review-list", "review-approve", "batch-status", "batch-status-job"],
)
def test_table_without_boto3_names_the_extra_to_install(args: tuple[str, ...], tmp_path: Path) -> None:
    result = cli_without_boto3(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("llm-gateway: ")
    assert "boto3" in lines[0]
    assert "pip install 'llm-gateway[aws]'" in lines[0]
    assert result.stdout == ""
