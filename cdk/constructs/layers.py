"""The Lambda layers: `core` (the domain library as is), `deps` and `web` (wheels), `config`."""

from __future__ import annotations

from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from cdk import constants as c
from cdk.config import StageConfig
from cdk.constructs.bundling import file_layer_code, layer_requirements, model_layer_code, pip_layer_code
from cdk.constructs.common import ARCHITECTURE, RUNTIME


class GatewayLayers(Construct):
    """`core`: layers/core as is (/opt/python/llm_gateway). `deps`: the chain functions' third-party
    packages. `web`: deps plus the ASGI server, resolved together, for the streaming function.
    `config`: the stage's gateway YAML at /opt/gateway/config.yaml. `models`: the prepared
    embedding model of the semantic cache at /opt/models.
    """

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig) -> None:
        super().__init__(scope, construct_id)
        pyproject = c.ROOT / c.PYPROJECT
        deps = layer_requirements(pyproject, c.DEPS_EXTRAS, base=True)
        web = deps + layer_requirements(pyproject, c.WEB_PACKAGES, base=False, keep_extras=False)

        self.core = self._layer(
            "Core",
            lambda_.Code.from_asset(str(c.ROOT / c.CORE_LAYER_DIR), exclude=list(c.ASSET_EXCLUDES)),
            "llm_gateway, the gateway's domain library",
        )
        self.deps = self._layer(
            "Deps", pip_layer_code(self, "deps", deps), "third-party packages of the chain functions"
        )
        self.web = self._layer(
            "Web", pip_layer_code(self, "web", web), "deps plus the ASGI server (streaming function)"
        )
        config_file = c.CONFIG_LAYER_SUBDIR + "/" + c.CONFIG_FILE_NAME
        self.config = self._layer(
            "Config",
            file_layer_code(self, "config", c.ROOT / stage.gateway_config, config_file),
            f"gateway configuration of stage {stage.name}",
        )

        self.models = self._layer(
            "Models",
            model_layer_code(self, "models", c.MODELS_LAYER_SUBDIR),
            "the semantic cache's prepared embedding model",
        )

    def _layer(self, construct_id: str, code: lambda_.Code, description: str) -> lambda_.LayerVersion:
        return lambda_.LayerVersion(
            self,
            construct_id,
            code=code,
            description=description,
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
        )
