"""Local bundling (no Docker): layers are built by this Python process while CDK stages the asset.

`BundlingOptions.image` is required by the API; it would only be used if local bundling declined,
and `LocalBuild` never declines: a failed build fails the synth with pip's own message.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from cdk import constants as c


@jsii.implements(cdk.ILocalBundling)
class LocalBuild:
    """Builds an asset in-process: `build(output_dir)` fills the folder CDK will zip."""

    def __init__(self, build: Callable[[Path], None]) -> None:
        self._build = build

    def try_bundle(self, output_dir: str, *args: Any, **kwargs: Any) -> bool:
        self._build(Path(output_dir))
        return True


_REQUIREMENT = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?P<extras>\[[^\]]*\])?\s*(?P<rest>.*)$")


def _parse(requirement: str) -> tuple[str, str, str]:
    """(canonical name, extras with brackets, specifier) of a PEP 508 requirement without markers."""
    match = _REQUIREMENT.match(requirement)
    if match is None:
        raise ValueError(f"cannot read requirement {requirement!r}")
    name = re.sub(r"[-_.]+", "-", match["name"]).lower()
    return name, match["extras"] or "", match["rest"].strip()


def layer_requirements(pyproject: Path, names: Sequence[str], *, base: bool, keep_extras: bool = True) -> list[str]:
    """Requirement strings for `names` as pyproject.toml pins them (plus its base `dependencies`)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    pinned: dict[str, str] = {}
    for group in project.get("optional-dependencies", {}).values():
        for line in group:
            pinned.setdefault(_parse(line)[0], line)
    chosen = list(project["dependencies"]) if base else []
    for name in names:
        line = pinned.get(_parse(name)[0])
        if line is None:
            raise ValueError(f"{name} is not pinned in {pyproject.name}'s optional dependencies")
        canonical, extras, specifier = _parse(line)
        chosen.append(f"{canonical}{extras if keep_extras else ''}{specifier}")
    return chosen


def pip_command(target: str, requirements: Sequence[str]) -> list[str]:
    """pip installing wheels for the Lambda platform (arm64, CPython 3.12) into `target`."""
    return [
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--platform",
        c.PIP_PLATFORM,
        "--implementation",
        "cp",
        "--python-version",
        c.PYTHON_VERSION,
        "--only-binary=:all:",
        "--target",
        target,
        *requirements,
    ]


def pip_layer_code(scope: Construct, name: str, requirements: Sequence[str]) -> lambda_.Code:
    """A layer of third-party wheels under python/, built by this interpreter's pip.

    The asset's source is a folder holding only `requirements.txt`, so the asset (and the layer
    version) changes exactly when the requirements do.
    """
    source = _input_dir(scope, name, {"requirements.txt": "\n".join(requirements) + "\n"})

    def build(output_dir: Path) -> None:
        command = pip_command(str(output_dir / "python"), ["-r", str(source / "requirements.txt")])
        result = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"building the {name} layer with pip failed ({' '.join(command)}):\n{result.stderr}")

    return lambda_.Code.from_asset(
        str(source),
        bundling=cdk.BundlingOptions(
            image=lambda_.Runtime.PYTHON_3_12.bundling_image,
            command=pip_command("/asset-output/python", ["-r", "/asset-input/requirements.txt"]),
            local=LocalBuild(build),
        ),
    )


def model_layer_code(scope: Construct, name: str, destination: str) -> lambda_.Code:
    """A layer holding the prepared embedding model under `destination` (relative to /opt).

    Built from this machine's copy (`prepare_model`, made once per machine); the asset's source is
    a folder naming the model, so the layer changes exactly when the model id does.
    """
    from llm_gateway.semantic.embeddings import embedding_model_id

    source = _input_dir(scope, name, {"MODEL": embedding_model_id() + "\n"})

    return lambda_.Code.from_asset(
        str(source),
        bundling=cdk.BundlingOptions(
            image=lambda_.Runtime.PYTHON_3_12.bundling_image,
            local=LocalBuild(lambda output_dir: build_model_layer(output_dir, destination)),
        ),
    )


def build_model_layer(output_dir: Path, destination: str) -> Path:
    """Copy the prepared embedding model into `output_dir/destination`; return the copy's path."""
    from llm_gateway.semantic.embeddings import prepare_model

    prepared = prepare_model()
    target = output_dir / destination / prepared.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(prepared, target)
    return target


def file_layer_code(scope: Construct, name: str, source: Path, destination: str) -> lambda_.Code:
    """A layer holding one file at `destination` (relative to /opt); copied, nothing to build."""
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist")
    return lambda_.Code.from_asset(str(_input_dir(scope, name, {destination: source.read_text()})))


def _input_dir(scope: Construct, name: str, files: dict[str, str]) -> Path:
    """A folder holding `files`, generated inside the cloud assembly (content-addressed).

    It outlives the app on purpose: with bundling skipped, the asset manifest points at it.
    """
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cdk.Stage.of(scope).outdir) / "inputs" / f"{name}-{digest}"  # type: ignore[union-attr]
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder
