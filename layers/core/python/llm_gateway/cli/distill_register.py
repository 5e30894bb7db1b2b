"""`llm-gateway distill register EVAL --config FILE [--route R [--stages 1,5,25,50,100]]`: a
student whose eval met its tenant's bar written into the operator's configuration file
(`distill.register`), then, with `--route`, a staged rollout of that route to it gated on the
eval's runs. Everything the command reads (the eval's report and runs, the file, the weights, the
stages) is checked before the file is edited, so a refusal leaves the file as it was."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from ..config import parse_config
from ..errors import ConfigError
from .distill import MODEL_NAME
from .store_location import load_local_config


def register_command(args: argparse.Namespace) -> int:
    from ..distill.register import RegistrationByHand, register, write_in_place

    runs = {name: args.eval / name / "report.json" for name in ("teacher", "student", "")}
    if not all(path.is_file() for path in runs.values()):
        raise ConfigError(f"{args.eval}: not a distill eval's folder (distill eval --out)")
    summary = _summary(args.eval / "report.json")
    name, tenant = summary["name"], summary["tenant"]
    config_path = Path(args.config)
    original, text = _config_text(config_path)
    config = parse_config(text, args.config)
    if tenant not in config.tenants:
        raise ConfigError(f"the eval's tenant {tenant} is not in {args.config}")
    policy = config.tenants[tenant]
    quality, bar = summary["quality_ratio"], policy.training.min_quality_ratio
    if quality is None or quality < bar:
        raise ConfigError(
            f"{name}'s quality ratio {quality} on the held-out split is below tenant {tenant}'s bar {bar} "
            "(training.min_quality_ratio): not registered"
        )
    model = _evaluated_model(args.eval / "report.json", summary, name, policy.routes)
    if args.route is not None and args.route not in policy.routes:
        raise ConfigError(f"tenant {tenant} has no route {args.route}")
    gate = None if args.route is None else _gate(args, runs, summary)  # read before anything is written
    try:
        edited = register(text, name, model, tenant)
    except (RegistrationByHand, ValueError) as exc:
        raise ConfigError(f"{args.config}: {exc}") from None
    write_in_place(config_path, original, edited)
    print(f"registered {name} (candidate, tenant {tenant}) in {args.config}: restart `llm-gateway serve` to serve it")
    if gate is None:
        return 0
    return _rollout(args, tenant, name, *gate)


MAX_SUMMARY_BYTES = 64 * 2**20  # an eval's comparison is a few kilobytes


def _summary(path: Path) -> dict[str, Any]:
    """An eval's comparison, its name a model name, its tenant a string and its quality ratio a
    number (or None: the teacher passed nothing); ConfigError otherwise."""
    try:
        if path.stat().st_size > MAX_SUMMARY_BYTES:
            raise ConfigError(f"{path}: larger than a distill eval's report can be")
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(found, dict) or "quality_ratio" not in found or "name" not in found:
        raise ConfigError(f"{path}: not a distill eval's report")
    name, tenant, quality = found["name"], found.get("tenant"), found["quality_ratio"]
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise ConfigError(f"{path}: the student's name {name!r} is not a model name (letters, digits and . _ : -)")
    if not isinstance(tenant, str):
        raise ConfigError(f"{path}: names no tenant")
    number = isinstance(quality, int | float) and not isinstance(quality, bool) and math.isfinite(quality)
    if quality is not None and not number:
        raise ConfigError(f"{path}: quality_ratio {quality!r} is not a number")
    return found


def _config_text(path: Path) -> tuple[bytes, str]:
    """The configuration file's bytes and its text (line endings as they are)."""
    try:
        original = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return original, original.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config {path}: not UTF-8 text ({exc})") from None


def _evaluated_model(report: Path, summary: dict[str, Any], name: str, routes: Any) -> Any:
    """The student's model configuration as evaluated, fit to register, its weights unchanged."""
    from pydantic import ValidationError

    from ..config import ModelConfig
    from ..distill.evaluate import weights_digest
    from ..distill.register import student_problem

    try:
        model = ModelConfig.model_validate(summary.get("model"))
    except ValidationError as exc:
        said = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'model'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{report}: the student's model is not valid ({said})") from None
    problem = student_problem(model, name, routes)
    if problem is not None:
        raise ConfigError(f"{report}: {name} cannot be registered: {problem}")
    if model.weights is not None:
        weights = Path(model.weights)
        try:
            same = weights.exists() and weights_digest(weights) == summary.get("weights_sha256")
        except OSError as exc:
            raise ConfigError(f"the weights at {weights} cannot be read ({exc.strerror or exc})") from None
        if not same:
            raise ConfigError(f"the weights at {weights} are not the ones evaluated: evaluate them again")
    return model


def _gate(
    args: argparse.Namespace, runs: dict[str, Path], summary: dict[str, Any]
) -> tuple[tuple[dict[str, Any], dict[str, Any]], float, tuple[float, ...]]:
    """What the rollout needs, checked before the configuration is edited: the eval's teacher and
    student runs, the teacher's pass rate and the stages."""
    from .eval import read_run

    found = summary.get("runs")
    teacher = found.get("teacher") if isinstance(found, dict) else None
    rate = teacher.get("pass_rate") if isinstance(teacher, dict) else None
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise ConfigError(f"{args.eval / 'report.json'}: no teacher's pass rate between 0 and 1 (runs.teacher)")
    try:
        stages = tuple(float(s) for s in args.stages.split(","))
    except ValueError:
        raise ConfigError(f"--stages {args.stages}: shares in %, comma-separated") from None
    return (read_run(runs["teacher"]), read_run(runs["student"])), float(rate), stages


def _rollout(
    args: argparse.Namespace,
    tenant: str,
    name: str,
    evals: tuple[dict[str, Any], dict[str, Any]],
    teacher_rate: float,
    stages: tuple[float, ...],
) -> int:
    """The staged rollout of the route to the registered student, gated on the eval's paired runs:
    its pass rate may be lower than the teacher's by the share its tenant's bar allows."""
    from ..experiments.rollouts import start
    from ..ports import RolloutGates
    from .rollout import _actor, _experiments, _store

    config = load_local_config(args.config)
    margin = max(0.02, teacher_rate * (1 - config.tenants[tenant].training.min_quality_ratio))
    try:
        store, close = _store(config, None)
    except ConfigError as exc:
        raise ConfigError(f"{name} is registered, but its rollout did not start: {exc}") from None
    try:
        started = start(
            store,
            config,
            tenant,
            args.route,
            name,
            stages,
            RolloutGates(eval_margin=round(margin, 4)),
            _actor(),
            experiments=_experiments(config, None),
            evals=evals,
        )
    except ValueError as exc:
        raise ConfigError(f"{name} is registered, but its rollout did not start: {exc}") from None
    finally:
        close()
    print(f"started {started.rollout_id}: {tenant}/{args.route} {started.baseline} -> {name} at {started.share:g} %")
    return 0
