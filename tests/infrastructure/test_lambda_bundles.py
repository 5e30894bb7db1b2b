"""Every function's real bundle: within Lambda's size limit with headroom, and complete.

The layers are built the way `cdk synth` builds them (pip, wheels only, from the layer cache after the
first build; PyPI must be reachable the first time):
- for Lambda's platform (CPython 3.12, the stage's architecture), to measure each function's unzipped
  size (code + its layers) against the 200 MiB budget;
- for this machine's platform (same feature sets, same pruning), to import each handler and use each
  of its features from its bundle alone (`python -I -S`, only the bundle's folders and what Lambda's
  runtime provides on sys.path), so a missing dependency fails here, not at deployment.
"""

from __future__ import annotations

import pytest

from cdk import constants as c
from cdk import lambda_bundles as bundles
from cdk.assembly import FunctionBundle, function_bundles, run_isolated
from tests.infrastructure.synth import synthesize

STACK = c.stack_name("dev")
# What a deployed stage sets that the dev stage in cdk.json leaves to the operator.
DEPLOYED = {c.ENV_MOMENTO_ENDPOINT: "cell-1.example.momentohq.com", "AWS_REGION": "eu-west-1"}

# What each feature lets a function do, exercised from the bundle: every module a step imports
# lazily for that feature, and the feature's real work where it needs files (the embedding model).
PROBES: dict[str, str] = {
    "base": """
import llm_gateway.aws.handler, llm_gateway.aws.runtime, llm_gateway.schema_validator, llm_gateway.config
import llm_gateway.adapters.aws.dynamodb, llm_gateway.adapters.aws.budget, llm_gateway.adapters.aws.review
import llm_gateway.guard.step, llm_gateway.moderation.step, llm_gateway.finish, llm_gateway.routing.step
import llm_gateway.cache.step, llm_gateway.invoke.step, llm_gateway.cache.purge
from llm_gateway.config import load_config
import os
if "GATEWAY_CONFIG_PATH" in os.environ:  # every function but the authorizer
    load_config(os.environ["GATEWAY_CONFIG_PATH"])
from llm_gateway.schema_validator import bounded_errors
assert bounded_errors({"type": "object", "properties": {"id": {"pattern": "^[a-z]+$"}}}, {"id": "A"})  # re2
import boto3  # from the runtime
""",
    "providers": """
import llm_gateway.providers.openai, llm_gateway.providers.anthropic, llm_gateway.providers.sagemaker
import llm_gateway.moderation.judge
from llm_gateway.providers.base import default_registry
registry = default_registry()
for name in ("openai", "anthropic", "sagemaker"):
    registry.get(name)
""",
    "embedding": """
from llm_gateway.semantic.embeddings import default_embedder
vector = default_embedder().embed_one("How do I reset my password?")
assert vector.shape == (384,), vector.shape
import llm_gateway.moderation.grounding, llm_gateway.guard.topics, llm_gateway.semantic.verifier
""",
    "momento": """
import momento, momento.requests, momento.responses
from momento import CacheClient, Configurations, CredentialProvider
import llm_gateway.adapters.aws.momento, llm_gateway.adapters.aws.momento_semantic
""",
    "web": """
import uvicorn, starlette, orjson
import uvicorn.loops.auto, uvicorn.protocols.http.auto, uvicorn.lifespan.off
from llm_gateway.aws.streaming_app import streaming_app
from llm_gateway.http.app import create_app
""",
}


def _handler_import(bundle: FunctionBundle) -> str:
    if bundle.folder == c.STREAM_FOLDER:
        # app.py reads the stage's secrets at import (it needs AWS): the web probe builds its parts
        return "import importlib.util\nassert importlib.util.find_spec('app') is not None\n"
    return f"import {bundle.handler.rsplit('.', 1)[0]}\n"


@pytest.fixture(scope="module")
def lambda_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FunctionBundle]:
    out = tmp_path_factory.mktemp("cdk-lambda")
    synthesize("dev", outdir=out, bundled=True)
    return function_bundles(out, STACK)


@pytest.fixture(scope="module")
def local_bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FunctionBundle]:
    out = tmp_path_factory.mktemp("cdk-here")
    synthesize("dev", outdir=out, bundled=True, for_this_machine=True)
    return function_bundles(out, STACK)


@pytest.fixture(scope="module")
def runtime_provided(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(bundles.build_runtime_provided(bundles.Target.this_machine(), tmp_path_factory.mktemp("runtime")))


def test_every_function_unzips_within_the_budget_with_lambda_platform_wheels(
    lambda_bundles: dict[str, FunctionBundle],
) -> None:
    assert set(lambda_bundles) == set(bundles.FUNCTION_FEATURES)
    rows = []
    for folder, bundle in sorted(lambda_bundles.items(), key=lambda item: -item[1].size()):
        parts = bundle.parts()
        rows.append(
            f"{folder:15} {bundle.size() / 2**20:7.1f} MiB  " + ", ".join(f"{n} {s / 2**20:.1f}" for n, s in parts)
        )
        assert bundle.size() <= bundles.SIZE_BUDGET, rows[-1]
        assert len(bundle.layers) + len(bundle.external_layers) <= bundles.MAX_LAYERS, folder
    print("\nunzipped size per function (code + layers):\n" + "\n".join(rows))
    # The Lambda build holds Lambda's wheels, not this machine's: aarch64 CPython 3.12 extensions
    deps = {path for bundle in lambda_bundles.values() for name, path in bundle.layers if name.startswith("LayersDeps")}
    extensions = [p.name for d in deps for p in d.rglob("*.so")]
    assert extensions and all("x86_64" not in name and "cpython-311" not in name for name in extensions)
    assert any("cpython-312-aarch64" in name for name in extensions)


def test_nothing_the_runtime_provides_or_nothing_imports_is_shipped(lambda_bundles: dict[str, FunctionBundle]) -> None:
    for bundle in lambda_bundles.values():
        for _, layer in bundle.layers:
            top = {p.name for p in (layer / "python").iterdir()} if (layer / "python").is_dir() else set()
            assert not {"boto3", "botocore", "s3transfer", "huggingface_hub", "hf_xet", "aws_xray_sdk"} & top
            assert not list((layer / "python").glob("*/tests")), layer
            assert not list(layer.rglob("__pycache__")), layer
    models = [p for b in lambda_bundles.values() for _, layer in b.layers for p in layer.rglob("*.onnx")]
    assert len({p.resolve() for p in models}) == 1  # one copy of the model, in the models layer


@pytest.mark.parametrize("folder", sorted(bundles.FUNCTION_FEATURES))
def test_each_handler_imports_and_uses_its_features_from_its_bundle_alone(
    local_bundles: dict[str, FunctionBundle], runtime_provided: str, folder: str
) -> None:
    bundle = local_bundles[folder]
    features = ["base", *sorted(bundles.features_of(folder))]
    code = _handler_import(bundle) + "".join(PROBES[f] for f in features) + "print('probed', flush=True)\n"
    done = run_isolated(bundle, code, extra_path=[runtime_provided], env=DEPLOYED)
    assert done.returncode == 0 and "probed" in done.stdout, done.stderr[-3000:]


@pytest.mark.parametrize("feature", ["embedding", "providers", "momento"])
def test_a_function_without_a_feature_cannot_use_it(
    local_bundles: dict[str, FunctionBundle], runtime_provided: str, feature: str
) -> None:
    # The probes can fail: the authorizer carries no feature, so each feature's probe fails there
    done = run_isolated(local_bundles["authorizer"], PROBES["base"] + PROBES[feature], extra_path=[runtime_provided])
    assert done.returncode != 0 and ("ModuleNotFoundError" in done.stderr or "RuntimeError" in done.stderr)
