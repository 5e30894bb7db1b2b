"""The layers' contents are derived from pyproject.toml and built for the Lambda platform."""

from __future__ import annotations

import tomllib
from pathlib import Path

from cdk import constants as c
from cdk.constructs.bundling import build_model_layer, layer_requirements, pip_command
from llm_gateway.semantic.embeddings import prepare_model, prepared_model_path


def test_deps_layer_is_the_base_dependencies_plus_powertools_and_momento() -> None:
    base = tomllib.loads((c.ROOT / c.PYPROJECT).read_text())["project"]["dependencies"]
    requirements = layer_requirements(c.ROOT / c.PYPROJECT, c.DEPS_EXTRAS, base=True)
    assert requirements[: len(base)] == base
    extras = requirements[len(base) :]
    assert [r.split(">")[0].split("<")[0] for r in extras] == ["aws-lambda-powertools[tracer,parser]", "momento"]
    assert not any(r.startswith("boto3") for r in requirements)  # part of the Lambda runtime


def test_web_layer_adds_the_asgi_server_without_extras() -> None:
    web = layer_requirements(c.ROOT / c.PYPROJECT, c.WEB_PACKAGES, base=False, keep_extras=False)
    assert [r.split(">")[0] for r in web] == list(c.WEB_PACKAGES)
    assert not any("[" in r for r in web)


def test_pip_installs_arm64_cpython312_wheels_only() -> None:
    command = " ".join(pip_command("/out/python", ["x"]))
    assert f"--platform {c.PIP_PLATFORM}" in command
    assert f"--python-version {c.PYTHON_VERSION}" in command
    assert "--only-binary=:all:" in command and "--target /out/python" in command


def test_models_layer_holds_the_prepared_embedding_model_where_the_embedder_looks(tmp_path: Path) -> None:
    copied = build_model_layer(tmp_path, c.MODELS_LAYER_SUBDIR)

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [copied]
    # Lambda mounts the layer at /opt, and the functions get LLM_GATEWAY_MODEL_DIR=/opt/models
    assert f"/opt/{c.MODELS_LAYER_SUBDIR}" == c.MODEL_DIR_IN_LAMBDA
    assert copied == prepared_model_path(tmp_path / c.MODELS_LAYER_SUBDIR)
    assert copied.read_bytes() == prepare_model().read_bytes()
