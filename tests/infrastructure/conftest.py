"""Infrastructure tests synthesize the CDK app in-process (once per session for the dev stage)."""

from __future__ import annotations

import os

import pytest

# jsii starts its Node process at the first aws_cdk import: set its environment before that.
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from tests.infrastructure.synth import Synthesized, synthesize


@pytest.fixture(scope="session")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize("dev", outdir=tmp_path_factory.mktemp("cdk-dev"))
