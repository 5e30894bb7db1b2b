"""Local bundling (no Docker): layers are built by this Python process while CDK stages the asset.

`BundlingOptions.image` is required by the API; it would only be used if local bundling declined,
and `LocalBuild` never declines: a failed build fails the synth with pip's own message.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from cdk import lambda_bundles as bundles


@jsii.implements(cdk.ILocalBundling)
class LocalBuild:
    """Builds an asset in-process: `build(output_dir)` fills the folder CDK will zip."""

    def __init__(self, build: Callable[[Path], None]) -> None:
        self._build = build

    def try_bundle(self, output_dir: str, *args: Any, **kwargs: Any) -> bool:
        self._build(Path(output_dir))
        return True


def deps_layer_bundling(
    scope: Construct, name: str, features: frozenset[str], target: bundles.Target
) -> dict[str, Any]:
    """Asset options of a third-party layer (`lambda_bundles.build_deps`) for `target`.

    The asset's source is a folder holding only the requirements and the target, so the asset (and
    the layer version) changes exactly when they do.
    """
    requirements = bundles.requirements(features)
    source = _input_dir(
        scope,
        name,
        {
            "requirements.txt": "\n".join(requirements) + "\n",
            "TARGET": f"{target.architecture} cp{target.python_version} {' '.join(target.platforms())}\n",
        },
    )
    command = pip_arguments(Path("/asset-output/python"), ["-r", "/asset-input/requirements.txt"], target)
    return {
        "path": str(source),
        "bundling": cdk.BundlingOptions(
            image=lambda_.Runtime.PYTHON_3_12.bundling_image,
            command=["pip", *command],
            local=LocalBuild(lambda output_dir: _build_deps(name, features, target, output_dir)),
        ),
    }


def pip_arguments(target_dir: Path, requirements: list[str], target: bundles.Target) -> list[str]:
    """pip's arguments (after `pip`) for a layer of `target`."""
    command = bundles.pip_command(target_dir, requirements, target)
    return command[command.index("pip") + 1 :]


def _build_deps(name: str, features: frozenset[str], target: bundles.Target, output_dir: Path) -> None:
    try:
        bundles.build_deps(features, target, output_dir)
    except RuntimeError as exc:
        raise RuntimeError(f"the {name} layer: {exc}") from exc


def model_layer_bundling(scope: Construct, name: str, destination: str) -> dict[str, Any]:
    """Asset options of the layer holding the prepared embedding model under `destination` (relative to /opt).

    Built from this machine's copy (`prepare_model`, made once per machine); the asset's source is
    a folder naming the model, so the layer changes exactly when the model id does.
    """
    from llm_gateway.semantic.embeddings import embedding_model_id

    source = _input_dir(scope, name, {"MODEL": embedding_model_id() + "\n"})
    return {
        "path": str(source),
        "bundling": cdk.BundlingOptions(
            image=lambda_.Runtime.PYTHON_3_12.bundling_image,
            local=LocalBuild(lambda output_dir: build_model_layer(output_dir, destination)),
        ),
    }


def build_model_layer(output_dir: Path, destination: str) -> Path:
    """Copy the prepared embedding model into `output_dir/destination`; return the copy's path."""
    from llm_gateway.semantic.embeddings import prepare_model

    prepared = prepare_model()
    target = output_dir / destination / prepared.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(prepared, target)
    return target


def file_layer_source(scope: Construct, name: str, source: Path, destination: str) -> Path:
    """A folder holding one file at `destination` (relative to /opt); copied, nothing to build."""
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist")
    return _input_dir(scope, name, {destination: source.read_text()})


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
