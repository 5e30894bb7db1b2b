"""What each Lambda function carries, and how its third-party layer is built for the real target.

Plain Python (no aws_cdk import): the CDK app, the size and completeness tests and the cold-start
bench all read this one table.

A function's bundle is its folder under functions/ plus its layers: `core` (llm_gateway), `config`
(the stage's gateway YAML), one `deps-<features>` layer holding exactly the third-party packages its
features need (resolved together by pip, so versions agree), and `models` (the prepared embedding
model) when it embeds text. Each feature names the packages it brings; a function names its
features. Lambda allows five layers per function: the streaming function, the largest, uses five
(core, config, deps, models, the Web Adapter).

Layers are built for the stage's architecture and Lambda's CPython 3.12, accepting every wheel tag
Amazon Linux 2023 (glibc 2.34) can load. The build leaves out what the runtime provides (boto3 and
its dependencies), packages nothing imports at run time (the Hugging Face hub client that
`tokenizers` pulls in; the tokenizer ships in the core layer), tests, caches, and onnxruntime's C
API library and offline tools (the Python binding links neither).
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
FUNCTIONS_DIR = ROOT / "functions"

# Lambda refuses a function whose code and layers unzip to more than this; we keep headroom below it.
LAMBDA_UNZIPPED_LIMIT = 262_144_000
SIZE_BUDGET = 200 * 1024 * 1024
MAX_LAYERS = 5
# What a published layer we do not build counts for (the Lambda Web Adapter's is about 5 MB).
EXTERNAL_LAYER_ALLOWANCE = 10 * 1024 * 1024

# Amazon Linux 2023 (the python3.12 runtime) has glibc 2.34.
LAMBDA_PYTHON = "3.12"
LAMBDA_GLIBC_MINOR = 34
_MACHINE = {"arm64": "aarch64", "x86_64": "x86_64"}

# Third-party packages by feature, named as pyproject.toml pins them (its base `dependencies` or
# an optional group); `base` goes to every function.
FEATURES: dict[str, tuple[str, ...]] = {
    "base": (
        "pydantic",
        "pyyaml",
        "urllib3",
        "numpy",
        "pyahocorasick",
        "jsonschema",
        "google-re2",
        "aws-lambda-powertools",
    ),
    "providers": ("openai", "anthropic", "httpx"),  # provider SDKs: invoke, and the LLM judge
    "embedding": ("onnxruntime", "tokenizers"),  # plus the `models` layer
    "momento": ("momento",),  # exact and semantic cache, rate limits on AWS
    "web": ("starlette", "uvicorn", "orjson"),  # the ASGI app of the streaming function
}

# Every function folder under functions/ and the features its code imports (on any request, with
# every tenant feature on). tests/infrastructure/test_lambda_bundles.py imports each from its bundle.
FUNCTION_FEATURES: dict[str, frozenset[str]] = {
    "authorizer": frozenset(),
    "router": frozenset(),  # keeps the guard's planned candidates that can take the request, reserves
    "cache_lookup": frozenset({"embedding", "momento"}),
    # rate limits (Momento), topic filter and harmful-content head (embedding), the LLM judge
    "guard": frozenset({"embedding", "momento", "providers"}),
    "invoke": frozenset({"providers"}),
    # groundedness and the harmful-content head on answers (embedding), the LLM judge
    "moderate": frozenset({"embedding", "providers"}),
    "finish": frozenset({"momento"}),  # stores the answer in the exact and semantic caches
    "record_failure": frozenset(),
    "review_ingest": frozenset(),
    "batch_submit": frozenset(),
    "batch_status": frozenset(),  # GET /v1/batches on the REST API
    "rollout_gates": frozenset(),  # the rollouts' gates, every minute
    "shadow": frozenset({"providers"}),  # the shadow copies' model calls
    "batch_work": frozenset({"embedding", "momento", "providers"}),  # the whole chain, line by line
    "stream": frozenset({"embedding", "momento", "providers", "web"}),  # the whole chain in-process
    "distill_collect": frozenset({"embedding"}),  # near-duplicates by the semantic cache's embedding
    "distill_evaluate": frozenset({"embedding"}),  # the similarity scorer
}

# Provided by Lambda's Python runtime (boto3 and what it needs); never shipped.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six")
# Required by a package we ship but never imported at run time.
NOT_IMPORTED = {"huggingface-hub": "tokenizers' hub download; the tokenizer is read from the core layer"}
# Paths (globs relative to the layer's python/ folder) that nothing imports at run time.
PRUNED = (
    "**/__pycache__",
    "*/tests",
    "*/*/tests",
    "*/*/*/tests",
    "onnxruntime/capi/libonnxruntime.so*",  # the C API library: the Python binding does not link it
    "onnxruntime/transformers",
    "onnxruntime/quantization",
    "onnxruntime/tools",
    "onnxruntime/datasets",
)
_BUILD_VERSION = "1"  # bump when the build or the pruning changes


@dataclass(frozen=True)
class Target:
    """What the layers are built for: Lambda's (architecture, CPython), or this machine's for tests."""

    architecture: str = "arm64"
    python_version: str = LAMBDA_PYTHON
    glibc_minor: int = LAMBDA_GLIBC_MINOR

    def __post_init__(self) -> None:
        if self.architecture not in _MACHINE:
            raise ValueError(f"architecture must be one of {sorted(_MACHINE)}, not {self.architecture!r}")

    @property
    def machine(self) -> str:
        return _MACHINE[self.architecture]

    def platforms(self) -> list[str]:
        """Every manylinux tag this glibc loads, newest first (pip takes a wheel tagged with any)."""
        tags = [f"manylinux_2_{minor}_{self.machine}" for minor in range(self.glibc_minor, 16, -1)]
        tags.append(f"manylinux2014_{self.machine}")
        if self.machine == "x86_64":
            tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
        return tags

    @classmethod
    def this_machine(cls) -> Target:
        """This interpreter's platform: the bundle a test can import here."""
        machine = os.uname().machine
        architecture = {v: k for k, v in _MACHINE.items()}.get(machine, machine)
        return cls(architecture=architecture, python_version=f"{sys.version_info.major}.{sys.version_info.minor}")


class BundleTooLarge(ValueError):
    """A function's code and layers would unzip to more than the size budget."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def features_of(function: str) -> frozenset[str]:
    try:
        return FUNCTION_FEATURES[function]
    except KeyError:
        raise KeyError(f"functions/{function} is not in FUNCTION_FEATURES (cdk/lambda_bundles.py)") from None


def deps_layer_name(features: Iterable[str]) -> str:
    """`deps-base`, `deps-embedding-momento`, ...: one layer per distinct feature set."""
    chosen = sorted(set(features) - {"base"})
    return "deps-" + ("-".join(chosen) if chosen else "base")


def _pins(pyproject: Path = PYPROJECT) -> dict[str, str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    pinned: dict[str, str] = {}
    for line in [*project["dependencies"], *(x for g in project.get("optional-dependencies", {}).values() for x in g)]:
        pinned.setdefault(canonical(Requirement(line).name), line)
    return pinned


def requirements(features: Iterable[str], pyproject: Path = PYPROJECT) -> list[str]:
    """Pinned requirement strings for `base` plus `features`, extras as the feature table names them."""
    pinned = _pins(pyproject)
    chosen: list[str] = []
    for feature in ("base", *sorted(set(features) - {"base"})):
        for name in FEATURES[feature]:
            wanted = Requirement(name)
            line = pinned.get(canonical(wanted.name))
            if line is None:
                raise ValueError(f"{wanted.name} is not pinned in {pyproject.name}")
            pin = Requirement(line)
            extras = f"[{','.join(sorted(wanted.extras))}]" if wanted.extras else ""
            chosen.append(f"{canonical(pin.name)}{extras}{pin.specifier}")
    return chosen


def pip_command(target_dir: Path, reqs: Sequence[str], target: Target) -> list[str]:
    """pip installing wheels for `target` into `target_dir` (no source builds, no bytecode)."""
    platforms = [arg for tag in target.platforms() for arg in ("--platform", tag)]
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        *platforms,
        "--implementation",
        "cp",
        "--python-version",
        target.python_version,
        "--only-binary=:all:",
        "--target",
        str(target_dir),
        *reqs,
    ]


def cache_dir() -> Path:
    """Built layers, keyed by what they were built from (LLM_GATEWAY_LAYER_CACHE overrides)."""
    configured = os.environ.get("LLM_GATEWAY_LAYER_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llm-gateway" / "lambda-layers"


def build_deps(features: Iterable[str], target: Target, output: Path) -> Path:
    """Fill `output/python` with the feature set's packages for `target`, pruned; return that folder.

    A build is kept in `cache_dir()` under the digest of its inputs, so synthesizing several stages
    (or running the tests after a synth) builds each layer once.
    """
    return build_packages(requirements(features), target, output, pruned=True)


def build_runtime_provided(target: Target, output: Path) -> Path:
    """What Lambda's Python runtime provides (boto3 and its dependencies), for running a bundle here."""
    return build_packages(["boto3"], target, output, pruned=False)


def build_packages(reqs: Sequence[str], target: Target, output: Path, *, pruned: bool) -> Path:
    key = hashlib.sha256(
        json.dumps([_BUILD_VERSION, reqs, target.platforms(), target.python_version, pruned and PRUNED]).encode()
    ).hexdigest()[:20]
    cached = cache_dir() / key / "python"
    if not cached.is_dir():
        cached.parent.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=cached.parent.parent))
        try:
            _pip_install(work / "python", reqs, target)
            if pruned:
                prune(work / "python", reqs, target)
            os.replace(work, cached.parent)
        except OSError:
            if not cached.is_dir():
                raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    destination = output / "python"
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(cached, destination, symlinks=True)
    return destination


def _pip_install(folder: Path, reqs: Sequence[str], target: Target) -> None:
    command = pip_command(folder, reqs, target)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shown = " ".join(command[1:])
        raise RuntimeError(f"building a Lambda layer with pip failed ({shown}):\n{result.stderr[-4000:]}")


@dataclass(frozen=True)
class _Dist:
    name: str
    record: Path
    requires: tuple[str, ...]


def _installed(folder: Path) -> dict[str, _Dist]:
    found: dict[str, _Dist] = {}
    for info in folder.glob("*.dist-info"):
        metadata = email.parser.Parser().parsestr((info / "METADATA").read_text(encoding="utf-8"))
        name = canonical(metadata["Name"])
        found[name] = _Dist(name, info / "RECORD", tuple(metadata.get_all("Requires-Dist") or ()))
    return found


def _environment(target: Target, extra: str = "") -> dict[str, str]:
    return {
        "python_version": target.python_version,
        "python_full_version": f"{target.python_version}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "os_name": "posix",
        "platform_system": "Linux",
        "platform_machine": target.machine,
        "extra": extra,
    }


def needed_distributions(folder: Path, reqs: Sequence[str], target: Target) -> set[str]:
    """The installed distributions the requirements reach, without what the runtime provides
    and what nothing imports (their own dependencies go too, unless something else needs them)."""
    installed = _installed(folder)
    dropped = {canonical(n) for n in (*RUNTIME_PROVIDED, *NOT_IMPORTED)}
    keep: set[str] = set()
    pending = [Requirement(r) for r in reqs]
    while pending:
        requirement = pending.pop()
        name = canonical(requirement.name)
        if name in dropped or name not in installed:
            continue
        fresh = name not in keep
        keep.add(name)
        extras = ["", *sorted(requirement.extras)]
        for line in installed[name].requires:
            child = Requirement(line)
            if child.marker is not None and not any(
                child.marker.evaluate(_environment(target, extra)) for extra in extras
            ):
                continue
            if fresh or requirement.extras:
                pending.append(child)
    return keep


def prune(folder: Path, reqs: Sequence[str], target: Target) -> None:
    """Delete distributions nobody needs at run time (by their RECORD) and the `PRUNED` paths."""
    installed = _installed(folder)
    keep = needed_distributions(folder, reqs, target)
    for name, dist in installed.items():
        if name in keep:
            continue
        for row in dist.record.read_text(encoding="utf-8").splitlines():
            relative = row.split(",", 1)[0]
            path = (folder / relative).resolve()
            if path.is_relative_to(folder.resolve()) and path.is_file():
                path.unlink()
        _remove_empty_dirs(folder)
    for pattern in PRUNED:
        for path in list(folder.glob(pattern)):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def _remove_empty_dirs(folder: Path) -> None:
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(path.iterdir()):
            path.rmdir()


def tree_size(folder: Path) -> int:
    """Bytes of the files under `folder` (what Lambda counts: the unzipped size)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def check_size(function: str, parts: Sequence[tuple[str, int]], budget: int = SIZE_BUDGET) -> int:
    """The function's unzipped total; `BundleTooLarge` names the function, its parts and sizes when
    the total passes `budget`."""
    total = sum(size for _, size in parts)
    if total > budget:
        listed = ", ".join(f"{name} {size / 2**20:.1f} MiB" for name, size in sorted(parts, key=lambda p: -p[1]))
        raise BundleTooLarge(
            f"function {function} would unzip to {total / 2**20:.1f} MiB, over the {budget / 2**20:.0f} MiB "
            f"budget (Lambda's limit is {LAMBDA_UNZIPPED_LIMIT / 2**20:.0f} MiB): {listed}"
        )
    return total
