"""CDK entry point (`cdk synth -c stage=<name>`; cdk.json runs it through cdk/run_app.sh).

`build_app` is also what the infrastructure tests synthesize, so tests and the CLI build the same
stack with the same cdk-nag checks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
# Run as a script, Python puts cdk/ first on sys.path, where cdk/constructs would shadow the
# `constructs` package: drop it and import from the repository root (and the layer's source).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
for _path in (_HERE.parent / "layers" / "core" / "python", _HERE.parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import aws_cdk as cdk  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from cdk import constants as c  # noqa: E402
from cdk.config import StageConfig, cdk_json_context, load_stage, stage_config  # noqa: E402
from cdk.stacks.gateway_stack import GatewayStack  # noqa: E402


def _truthy(value: object) -> bool:
    return str(value).lower() in ("1", "true", "yes")


def resolve_stage(app: cdk.App) -> StageConfig:
    """The stage named by context `stage`, from the app's context (the CLI's) or else cdk.json."""
    name = app.node.try_get_context(c.CONTEXT_STAGE)
    stages = app.node.try_get_context(c.CONTEXT_STAGES)
    if isinstance(stages, dict):
        return stage_config({c.CONTEXT_STAGES: stages}, name)
    return load_stage(name)


def build_app(context: dict[str, Any] | None = None, outdir: str | None = None) -> tuple[cdk.App, GatewayStack]:
    """The app with the stage's stack; cdk-nag's AWS Solutions checks fail its synthesis on any finding
    that is not acknowledged (with a reason) where the resource is built."""
    # cdk.json's context (stages, feature flags) first, so an in-process build (the tests) matches the
    # CLI's; the CLI's own context, passed through the environment, still takes precedence.
    app = cdk.App(context={**cdk_json_context(), **(context or {})}, outdir=outdir)
    if _truthy(app.node.try_get_context(c.CONTEXT_SKIP_BUNDLING)):
        # Synthesize without building the pip layers (no network): enough to check, not to deploy.
        app.node.set_context(c.BUNDLING_STACKS, [])
    stage = resolve_stage(app)
    stack = GatewayStack(
        app,
        c.stack_name(stage.name),
        stage=stage,
        env=cdk.Environment(account=stage.account or os.environ.get("CDK_DEFAULT_ACCOUNT"), region=stage.region),
    )
    cdk.Tags.of(stack).add("project", c.PROJECT)
    cdk.Tags.of(stack).add("stage", stage.name)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    return app, stack


def main() -> None:
    app, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
