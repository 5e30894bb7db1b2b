"""The layers' contents are derived from pyproject.toml and built for the Lambda platform."""

from __future__ import annotations

import tomllib

from cdk import constants as c
from cdk.constructs.bundling import layer_requirements, pip_command


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
