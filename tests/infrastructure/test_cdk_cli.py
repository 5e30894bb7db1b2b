"""The real CDK CLI synthesizes the app through cdk.json (the pinned `aws-cdk` from package.json)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cdk import constants as c

CDK_CLI = c.ROOT / "node_modules" / ".bin" / "cdk"


@pytest.mark.skipif(
    not CDK_CLI.exists() or shutil.which("node") is None,
    reason="the CDK CLI is not installed: run `npm ci` in the repository root (needs Node 18+)",
)
def test_cdk_synth_through_cdk_json(tmp_path: Path) -> None:
    # Given the CLI pinned in package-lock.json and this interpreter as the app's Python
    environment = {**os.environ, "CDK_PYTHON": sys.executable, "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1"}
    # When it synthesizes the dev stage (layers not built: no pip download in tests)
    result = subprocess.run(
        [
            str(CDK_CLI),
            "synth",
            "-c",
            "stage=dev",
            "-c",
            f"{c.CONTEXT_SKIP_BUNDLING}=true",
            "--quiet",
            "-o",
            str(tmp_path),
        ],
        cwd=c.ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Then the cloud assembly holds the stack, cdk-nag clean (a finding fails the synth)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    template = json.loads((tmp_path / f"{c.stack_name('dev')}.template.json").read_text())
    types = {resource["Type"] for resource in template["Resources"].values()}
    assert {"AWS::StepFunctions::StateMachine", "AWS::ApiGateway::RestApi", "AWS::Lambda::LayerVersion"} <= types
