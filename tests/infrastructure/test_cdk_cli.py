"""The real CDK CLI synthesizes the app through cdk.json (the pinned `aws-cdk` from package.json),
bundling on, as a user deploys it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cdk import constants as c
from cdk.assembly import function_bundles
from cdk.lambda_bundles import SIZE_BUDGET

CDK_CLI = c.ROOT / "node_modules" / ".bin" / "cdk"


@pytest.mark.skipif(
    not CDK_CLI.exists() or shutil.which("node") is None,
    reason="the CDK CLI is not installed: run `npm ci` in the repository root (needs Node 18+)",
)
@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_cdk_synth_through_cdk_json_with_bundling(tmp_path: Path, stage: str) -> None:
    # Given the CLI pinned in package-lock.json and this interpreter as the app's Python
    environment = {**os.environ, "CDK_PYTHON": sys.executable, "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1"}
    # When it synthesizes the stage as a user does, layers built (pip, from the layer cache once built)
    result = subprocess.run(
        [str(CDK_CLI), "synth", "-c", f"stage={stage}", "--quiet", "-o", str(tmp_path)],
        cwd=c.ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    # Then the cloud assembly holds the stack, cdk-nag clean (a finding fails the synth), and every
    # layer asset is a built folder: the deps layers hold Lambda's (aarch64, CPython 3.12) wheels
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    template = json.loads((tmp_path / f"{c.stack_name(stage)}.template.json").read_text())
    types = {resource["Type"] for resource in template["Resources"].values()}
    assert {"AWS::StepFunctions::StateMachine", "AWS::ApiGateway::RestApi", "AWS::Lambda::LayerVersion"} <= types
    bundles = function_bundles(tmp_path, c.stack_name(stage))
    assert bundles and all(bundle.size() <= SIZE_BUDGET for bundle in bundles.values())
    guard_deps = [path for name, path in bundles["guard"].layers if name.startswith("LayersDeps")]
    assert len(guard_deps) == 1 and list(guard_deps[0].glob("python/onnxruntime/capi/*cpython-312-aarch64*.so"))
