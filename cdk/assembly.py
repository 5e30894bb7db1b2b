"""Each function's bundle as a synthesized cloud assembly stages it: its code folder and its layers'.

Plain Python (no aws_cdk import). The size test, the bundle import test, the cold-start bench and
the local-AWS harness read the same folders CDK zips and uploads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdk import constants as c
from cdk import lambda_bundles as bundles


@dataclass(frozen=True)
class FunctionBundle:
    folder: str  # under functions/
    handler: str  # Lambda's handler setting
    code: Path  # the staged code folder (LAMBDA_TASK_ROOT)
    layers: tuple[tuple[str, Path], ...]  # (logical id, staged folder): what Lambda unpacks into /opt
    external_layers: tuple[str, ...] = ()  # ARNs of layers built elsewhere (the Web Adapter)
    environment: dict[str, str] = field(default_factory=dict)

    def parts(self) -> list[tuple[str, int]]:
        """(name, unzipped bytes) of the code and each layer; a layer built elsewhere counts as
        `EXTERNAL_LAYER_ALLOWANCE`."""
        found = [(f"code (functions/{self.folder})", bundles.tree_size(self.code))]
        found += [(name, bundles.tree_size(path)) for name, path in self.layers]
        found += [(arn.split(":")[6], bundles.EXTERNAL_LAYER_ALLOWANCE) for arn in self.external_layers]
        return found

    def size(self) -> int:
        return sum(size for _, size in self.parts())

    def python_path(self) -> list[str]:
        """sys.path as Lambda sets it: the task root, then each layer's python/ folder."""
        return [str(self.code), *(str(path / "python") for _, path in self.layers if (path / "python").is_dir())]

    def opt_path(self, value: str) -> str:
        """An `/opt/...` path of the environment, in the staged layer that holds it (later layers win)."""
        if not value.startswith("/opt/"):
            return value
        relative = value.removeprefix("/opt/")
        for _, path in reversed(self.layers):
            if (path / relative).exists():
                return str(path / relative)
        return value


def function_bundles(assembly: Path, stack: str) -> dict[str, FunctionBundle]:
    """Function folder -> its bundle, for the gateway's functions in the assembly's stack."""
    template = json.loads((assembly / f"{stack}.template.json").read_text())
    staged = _staged_assets(assembly, stack)
    resources: dict[str, Any] = template["Resources"]
    prefix = c.resource_name(stack.removeprefix(c.STACK_PREFIX + "-"), "")
    found: dict[str, FunctionBundle] = {}
    for resource in resources.values():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        properties = resource["Properties"]
        name = properties.get("FunctionName")
        if not (isinstance(name, str) and name.startswith(prefix)):
            continue  # CDK's own helpers
        folder = name.removeprefix(prefix).replace("-", "_")
        layers: list[tuple[str, Path]] = []
        external: list[str] = []
        for layer in properties.get("Layers", []):
            if isinstance(layer, dict) and "Ref" in layer:
                content = resources[layer["Ref"]]["Properties"]["Content"]
                layers.append((layer["Ref"], staged[content["S3Key"]]))
            else:
                external.append(str(layer))
        found[folder] = FunctionBundle(
            folder=folder,
            handler=properties["Handler"],
            code=staged[properties["Code"]["S3Key"]],
            layers=tuple(layers),
            external_layers=tuple(external),
            environment={
                k: v if isinstance(v, str) else f"{k.lower().replace('_', '-')}-at-deploy"  # a Ref, resolved at deploy
                for k, v in properties.get("Environment", {}).get("Variables", {}).items()
            },
        )
    return found


def _staged_assets(assembly: Path, stack: str) -> dict[str, Path]:
    """S3 object key -> the staged folder CDK zips into it."""
    manifest = json.loads((assembly / f"{stack}.assets.json").read_text())
    staged: dict[str, Path] = {}
    for asset in manifest.get("files", {}).values():
        source = assembly / asset["source"]["path"]
        for destination in asset["destinations"].values():
            staged[destination["objectKey"]] = source
    return staged


def run_isolated(
    bundle: FunctionBundle,
    code: str,
    *,
    extra_path: list[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run `code` in `python -I -S` with only the bundle's folders (and `extra_path`) on sys.path:
    no site-packages, no PYTHONPATH, no user site, so a missing dependency fails here."""
    paths = [*bundle.python_path(), *extra_path]
    prologue = f"import sys\nsys.path[:0] = {paths!r}\n"
    variables = {k: bundle.opt_path(v) for k, v in bundle.environment.items()}
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(bundle.code)),
        **variables,
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", prologue + code],
        cwd=bundle.code,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
