"""Synthesize the gateway stack in-process, the way `cdk synth` does (by default without building
the pip layers; `bundled=True` builds them, from the layer cache after the first time).

`synth_template` is shared with the local-AWS end-to-end harness, which deploys the same template.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from aws_cdk import Stack
from aws_cdk.assertions import Template

from cdk import constants as c
from cdk.app import build_app

# Bundling (pip downloading wheels for the deps and web layers) is skipped for every stack: the
# template is complete, only those two layers' assets are not built.
SKIP_BUNDLING: dict[str, Any] = {c.BUNDLING_STACKS: []}


@dataclass(frozen=True)
class Synthesized:
    stack: Stack
    template: Template
    outdir: Path

    def to_json(self) -> dict[str, Any]:
        return dict(self.template.to_json())


def synthesize(
    stage: str = "dev",
    outdir: str | Path | None = None,
    stages: dict[str, Any] | None = None,
    *,
    bundled: bool = False,
    for_this_machine: bool = False,
) -> Synthesized:
    """The stage's stack, synthesized with cdk-nag on (a finding not acknowledged raises here);
    `stages` replaces cdk.json's stage definitions. `bundled` builds the layers, for Lambda's
    platform or, with `for_this_machine`, for this machine's (to import the bundles here)."""
    out = Path(outdir) if outdir is not None else Path(tempfile.mkdtemp(prefix="llm-gateway-synth-"))
    context: dict[str, Any] = {c.CONTEXT_STAGE: stage, **({} if bundled else SKIP_BUNDLING)}
    if for_this_machine:
        context[c.CONTEXT_BUNDLE_FOR_THIS_MACHINE] = "true"
    if stages is not None:
        context[c.CONTEXT_STAGES] = stages
    _, stack = build_app(context, outdir=str(out))
    return Synthesized(stack=stack, template=Template.from_stack(stack), outdir=out)


def synth_template(stage: str = "dev") -> dict[str, Any]:
    """The stage's CloudFormation template as JSON (bundling skipped)."""
    return synthesize(stage).to_json()
