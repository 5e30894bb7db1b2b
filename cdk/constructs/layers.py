"""The Lambda layers: `core` (the domain library as is), one `deps-<features>` layer per feature set
(cdk.lambda_bundles), `config` and `models`; `for_function` picks a function's and checks its size."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from cdk import constants as c
from cdk import lambda_bundles as bundles
from cdk.config import StageConfig
from cdk.constructs.bundling import deps_layer_bundling, file_layer_source, model_layer_bundling
from cdk.constructs.common import RUNTIME, architecture


class GatewayLayers(Construct):
    """`core`: layers/core as is (/opt/python/llm_gateway). `deps-*`: third-party packages, built
    for the stage's architecture, one layer per feature set that some function needs. `config`: the
    stage's gateway YAML at /opt/gateway/config.yaml. `models`: the prepared embedding model at
    /opt/models, for the functions that embed text.
    """

    def __init__(self, scope: Construct, construct_id: str, *, stage: StageConfig) -> None:
        super().__init__(scope, construct_id)
        self._stage = stage
        self._target = bundle_target(self, stage)
        self._deps: dict[str, tuple[lambda_.LayerVersion, s3_assets.Asset]] = {}
        self._sizes: dict[Path, int] = {}
        # Each layer's code is an asset (so its staged folder can be measured): its object key is the
        # content's hash, so new content is a new key and a new layer version without object versions.
        cdk.Annotations.of(self).acknowledge_warning(
            "@aws-cdk/aws-lambda:codeFromBucketObjectVersionNotSpecified",
            "asset object keys are content hashes: changed content is a new key, so a new layer version",
        )
        excludes = list(c.ASSET_EXCLUDES)
        self.core, self._core_asset = self._layer(
            "Core", "llm_gateway, the gateway's domain library", path=str(c.ROOT / c.CORE_LAYER_DIR), exclude=excludes
        )
        config_file = c.CONFIG_LAYER_SUBDIR + "/" + c.CONFIG_FILE_NAME
        self.config, self._config_asset = self._layer(
            "Config",
            f"gateway configuration of stage {stage.name}",
            path=str(file_layer_source(self, "config", c.ROOT / stage.gateway_config, config_file)),
        )
        self.models, self._models_asset = self._layer(
            "Models",
            "the prepared embedding model (semantic cache, routing, topic and harmful-content heads)",
            **model_layer_bundling(self, "models", c.MODELS_LAYER_SUBDIR),
        )

    def deps(self, features: frozenset[str]) -> lambda_.LayerVersion:
        """The third-party layer of one feature set (built once per stack)."""
        name = bundles.deps_layer_name(features)
        if name not in self._deps:
            construct_id = "".join(part.capitalize() for part in name.split("-"))
            self._deps[name] = self._layer(
                construct_id,
                f"third-party packages: {name.removeprefix('deps-')} ({self._target.architecture})",
                **deps_layer_bundling(self, name, features, self._target),
            )
        return self._deps[name][0]

    def for_function(self, function: str, extra: Sequence[lambda_.ILayerVersion] = ()) -> list[lambda_.ILayerVersion]:
        """The layers of functions/<function>: core, its deps, config, and models where it embeds.

        With bundling on, the synth fails here when the function's code and layers would unzip past
        the size budget (the message names the function, each part and its size). A layer built
        elsewhere (`extra`: the Web Adapter) counts as `EXTERNAL_LAYER_ALLOWANCE`."""
        features = bundles.features_of(function)
        deps = self.deps(features)
        chosen: list[tuple[str, lambda_.ILayerVersion, s3_assets.Asset]] = [
            ("core", self.core, self._core_asset),
            (bundles.deps_layer_name(features), deps, self._deps[bundles.deps_layer_name(features)][1]),
            ("config", self.config, self._config_asset),
        ]
        if "embedding" in features:
            chosen.append(("models", self.models, self._models_asset))
        layers = [layer for _, layer, _ in chosen] + list(extra)
        if len(layers) > bundles.MAX_LAYERS:
            raise ValueError(f"function {function} would have {len(layers)} layers; Lambda allows {bundles.MAX_LAYERS}")
        if cdk.Stack.of(self).bundling_required:
            outdir = Path(cdk.Stage.of(self).outdir)  # type: ignore[union-attr]
            parts = [(f"code (functions/{function})", bundles.tree_size(c.ROOT / c.FUNCTIONS_DIR / function))]
            parts += [(name, self._size(outdir / asset.asset_path)) for name, _, asset in chosen]
            parts += [("external layer", bundles.EXTERNAL_LAYER_ALLOWANCE) for _ in extra]
            bundles.check_size(function, parts)
        return layers

    def _size(self, staged: Path) -> int:
        """A staged layer's unzipped size, measured once however many functions carry it."""
        if staged not in self._sizes:
            self._sizes[staged] = bundles.tree_size(staged)
        return self._sizes[staged]

    def _layer(
        self, construct_id: str, description: str, **asset_options: object
    ) -> tuple[lambda_.LayerVersion, s3_assets.Asset]:
        asset = s3_assets.Asset(self, f"{construct_id}Asset", **asset_options)  # type: ignore[arg-type]
        layer = lambda_.LayerVersion(
            self,
            construct_id,
            code=lambda_.Code.from_bucket(asset.bucket, asset.s3_object_key),
            description=description,
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[architecture(self._stage)],
        )
        return layer, asset


def bundle_target(scope: Construct, stage: StageConfig) -> bundles.Target:
    """Lambda's platform for the stage's architecture; this machine's with context
    `bundle_for_this_machine=true` (tests that import the bundles here; never deploy that)."""
    if str(scope.node.try_get_context(c.CONTEXT_BUNDLE_FOR_THIS_MACHINE)).lower() in ("1", "true", "yes"):
        return bundles.Target.this_machine()
    return bundles.Target(architecture=stage.architecture)
