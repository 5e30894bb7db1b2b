"""CDK entry point (`cdk synth -c stage=<name>`).

The stacks (layers, the step functions, the state machine built from `llm_gateway.pipeline`, API
Gateway) are composed here; until they land this app only validates the stage configuration.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cdk.config import load_stage


def main() -> None:
    import aws_cdk as cdk

    app = cdk.App()
    stage = load_stage(app.node.try_get_context("stage"))
    print(f"stage {stage.name} in {stage.region}: no stacks defined yet", file=sys.stderr)
    app.synth()


if __name__ == "__main__":
    main()
