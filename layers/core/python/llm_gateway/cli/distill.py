"""`llm-gateway distill`: a tenant's own traffic into a smaller self-hosted model (docs/distillation.md).

    distill collect --tenant T --route R [--since 30d] --out DATA
    distill train DATA --out STUDENT [--epochs 4] [--learning-rate 1e-3] [--rank 16] [--batch 8] [--threads N]
                  [--gguf q8_0|q4_1|f16|f32]
    distill train DATA --out STUDENT --provider-model MODEL [--suffix S] [--poll-s 30] [--wait 86400]
    distill eval DATA --student STUDENT --name NAME --out EVAL [--teacher ROUTE_OR_MODEL] [--baseline MODEL]
                 [--tenant T] [--like MODEL] [--scoring auto|json|exact|similarity] [--limit N]
    distill register EVAL --config FILE [--route R [--stages 1,5,25,50,100]]

`collect` reads the tenant's traces in the local store `serve` writes (the tenant must have opted
in, and keep content: `training.opt_in`, `traces.store_content`), keeps the answers fit to learn
from (`distill.collect`) and writes the splits, a Hugging Face dataset and a data card into DATA.
`train` fine-tunes the packaged model with LoRA on this machine (`distill.train`; the `distill`
extra) into a checkpoint the local endpoint's torch engine serves (with `--gguf`, also a GGUF file
for its llama.cpp engine: `distill.export`), or starts a fine-tuning job at the provider of
the configuration's `--provider-model` and waits for it (`distill.provider`; STUDENT/job.json).
`eval` runs the test split through the gateway on the teacher, the student (under NAME) and an
optional baseline, and writes each run's report and their comparison (`distill.evaluate`).
`register` writes a student whose quality ratio meets its tenant's `training.min_quality_ratio`
into the configuration file as a candidate model allowed to the tenant (`distill.register`), and
with `--route` starts a staged rollout of that route to it, gated on the eval's runs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import re
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .replay import since_bound
from .store_location import existing_store, load_local_config, report_folder

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")  # it names the answering model in headers
JOB_FILE = "job.json"  # a provider fine-tune's result in the train command's --out
GGUF_FILE = "student.gguf"  # the student for the llama.cpp engine (train --gguf)
RUNS = ("teacher", "student", "baseline")


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    distill = commands.add_parser("distill", help="a tenant's traffic into a smaller self-hosted model")
    actions = distill.add_subparsers(dest="action", required=True)
    collect = actions.add_parser(
        "collect", help="the tenant's answers fit to learn from, as a dataset", parents=parents
    )
    collect.add_argument("--tenant", required=True)
    collect.add_argument("--route", required=True)
    collect.add_argument("--since", default="30d", help="30m, 24h, 7d, 2w back, or an ISO date or date-time (30d)")
    collect.add_argument("--out", type=Path, required=True, help="the dataset's folder")
    collect.add_argument(
        "--split",
        default="80,10,10",
        help="%% of the examples for train, validation and test, oldest to newest (80,10,10); a larger test "
        "share gives the rollout's eval gate (distill register --route) more cases to confirm the bar with",
    )

    train = actions.add_parser("train", help="fine-tune a student on a collection", parents=parents)
    train.add_argument("data", type=Path, help="a collection's folder (distill collect --out)")
    train.add_argument("--out", type=Path, required=True, help="the student's folder")
    train.add_argument("--epochs", type=int, default=4, help="at most this many (early stopping on validation loss)")
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--rank", type=int, default=16, help="LoRA rank (16)")
    train.add_argument("--batch", type=int, default=8)
    train.add_argument("--threads", type=int, help="CPU threads for training (torch's default)")
    train.add_argument(
        "--gguf",
        choices=("q8_0", "q4_1", "f16", "f32"),
        help="also write STUDENT/student.gguf for the llama.cpp engine, its matrices in this type",
    )
    train.add_argument("--provider-model", help="fine-tune this openai model of the configuration at its provider")
    train.add_argument("--suffix", help="the provider's fine-tuned model name suffix")
    train.add_argument("--poll-s", type=float, default=30.0, help="how often to look at the provider's job (30 s)")
    train.add_argument("--wait", type=float, default=86_400.0, help="how long to wait for the provider's job (1 day)")

    evaluate = actions.add_parser("eval", help="the student against the teacher on the test split", parents=parents)
    evaluate.add_argument("data", type=Path, help="the collection's folder (its test.jsonl and card.json)")
    evaluate.add_argument("--student", type=Path, required=True, help="the train command's --out")
    evaluate.add_argument("--name", required=True, help="the model name the student is evaluated and registered as")
    evaluate.add_argument("--out", type=Path, required=True, help="the folder for the reports")
    evaluate.add_argument("--teacher", help="the route or model answering as the teacher (the collection's route)")
    evaluate.add_argument("--baseline", help="a model of the tenant to run too (for example the untuned one)")
    evaluate.add_argument("--tenant", help="run as this tenant (the collection's)")
    evaluate.add_argument("--like", help="the model whose price and limits a local student takes (the packaged one)")
    evaluate.add_argument("--scoring", choices=("auto", "json", "exact", "similarity"), default="auto")
    evaluate.add_argument("--limit", type=int, help="only the first N test examples")
    evaluate.add_argument(
        "--baseline-limit",
        type=int,
        help="the baseline on only the first N of them (a slow or priced baseline: enough to show where it stands)",
    )

    register = actions.add_parser("register", help="a student that met its bar into the configuration")
    register.add_argument("eval", type=Path, help="the eval command's --out")
    register.add_argument("--config", required=True, help="the configuration file to add the student to")
    register.add_argument("--route", help="then start a staged rollout of this route of the tenant to the student")
    register.add_argument("--stages", default="1,5,25,50,100", help="the rollout's shares, in %% (1,5,25,50,100)")


def distill(args: argparse.Namespace) -> int:
    from .distill_register import register_command

    actions = {"collect": _collect, "train": _train, "eval": _evaluate, "register": register_command}
    return actions[args.action](args)


def _collect(args: argparse.Namespace) -> int:
    from ..adapters.local.traces import SqliteTraceStore
    from ..distill.collect import CollectionRefused, collect, split_shares
    from ..distill.dataset import write
    from ..semantic.embeddings import default_embedder

    try:
        split = split_shares(args.split)
    except ValueError as exc:
        raise ConfigError(f"--split: {exc}") from None
    config = load_local_config(args.config)
    now = time.time()
    since = since_bound(args.since, now)
    policy = config.tenants.get(args.tenant)
    if policy is not None and not policy.traces.store_content:
        raise ConfigError(
            f"tenant {args.tenant} keeps no content in its traces (`traces.store_content`): nothing to learn from"
        )
    report_folder(args.out, ("card.json", "README.md", "train.jsonl", "validation.jsonl", "test.jsonl"))
    store = SqliteTraceStore(existing_store(config))
    try:
        found = collect(
            config,
            args.tenant,
            args.route,
            store.with_content(args.tenant, since, now),
            default_embedder().embed,
            split,
        )
    except CollectionRefused as exc:
        raise ConfigError(str(exc)) from None
    finally:
        store.close()
    written = write(found, args.out, tenant=args.tenant, route=args.route, since=since)
    print(json.dumps({"examples": written["examples"], "removed": written["removed"], "out": str(args.out)}))
    return 0


def _collection(data: Path, splits: tuple[str, ...]) -> dict[str, Any]:
    """The collection's card; ConfigError when `data` is not a collection with `splits`."""
    missing = [name for name in ("card.json", *(f"{s}.jsonl" for s in splits)) if not (data / name).is_file()]
    if missing:
        raise ConfigError(f"{data}: not a collection (distill collect --out): no {', '.join(missing)}")
    try:
        found = json.loads((data / "card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{data / 'card.json'}: cannot be read ({exc})") from None
    if not isinstance(found, dict):
        raise ConfigError(f"{data / 'card.json'}: not a data card")
    return found


def _train(args: argparse.Namespace) -> int:
    _collection(args.data, ("train", "validation"))
    if args.provider_model:
        if args.gguf:
            raise ConfigError("--gguf exports a student trained here; a provider's fine-tune stays at the provider")
        return _train_at_provider(args)
    if args.epochs < 1 or args.rank < 1 or args.batch < 1 or not args.learning_rate > 0:
        raise ConfigError("--epochs, --rank and --batch are at least 1, --learning-rate is positive")
    if args.threads is not None and args.threads < 1:
        raise ConfigError("--threads is at least 1")
    if args.out.exists() and any(args.out.iterdir()):
        raise ConfigError(f"--out {args.out}: not empty (a student's folder holds one student)")
    from ..distill.train import Settings, read_split, train  # torch and peft are imported by `train` itself

    try:
        for split in ("train", "validation"):
            read_split(args.data / f"{split}.jsonl")
    except ValueError as exc:
        raise ConfigError(f"{args.data}: {exc}") from None
    settings = Settings(
        epochs=args.epochs, learning_rate=args.learning_rate, rank=args.rank, batch=args.batch, threads=args.threads
    )
    try:
        found = train(args.data, args.out, settings)
    except ImportError as exc:
        raise ConfigError(f"fine-tuning needs the distill extra: pip install 'llm-gateway[distill]' ({exc})") from None
    except ValueError as exc:
        raise ConfigError(f"{args.data}: {exc}") from None
    exported = None
    if args.gguf:
        from ..distill.export import export_gguf

        try:
            exported = export_gguf(args.out, args.out / GGUF_FILE, args.gguf, args.out.resolve().name)["gguf"]
        except ValueError as exc:
            raise ConfigError(f"the student in {args.out} is trained, but not exported as GGUF: {exc}") from None
    best = min(found["epochs"], key=lambda e: e["validation_loss"])
    print(
        json.dumps(
            {
                "student": str(args.out),
                "gguf": exported,
                "epochs": len(found["epochs"]),
                "best_epoch": best["epoch"],
                "validation_loss": round(best["validation_loss"], 4),
                "seconds": found["seconds"],
            }
        )
    )
    return 0


def _train_at_provider(args: argparse.Namespace) -> int:
    from ..distill.provider import FineTuningFailed, FineTuningRefused, registered_model, submit_and_wait

    if not (args.poll_s > 0 and args.wait > 0):
        raise ConfigError("--poll-s and --wait are positive (seconds)")
    config = load_local_config(args.config)
    report_folder(args.out, (JOB_FILE,))
    if (args.out / JOB_FILE).exists():
        raise ConfigError(f"--out {args.out}: holds a fine-tune's {JOB_FILE} already (a student's folder holds one)")
    try:
        found = submit_and_wait(config, args.data, args.provider_model, args.suffix, args.poll_s, args.wait)
    except FineTuningRefused as exc:
        raise ConfigError(str(exc)) from None
    except FineTuningFailed as exc:
        print(f"llm-gateway: {exc}", flush=True)
        return 1
    student = registered_model(config.models[args.provider_model], str(found["fine_tuned_model"]))
    found["model"] = student.model_dump(mode="json", exclude_defaults=True)
    (args.out / JOB_FILE).write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: found[k] for k in ("job_id", "status", "fine_tuned_model", "trained_tokens")}))
    return 0


def _student(config: Any, student: Path, like: str | None) -> tuple[Any, dict[str, Any]]:
    """The student's model configuration and what the eval report records of where it came from."""
    from pydantic import ValidationError

    from ..config import ModelConfig
    from ..distill.evaluate import like_model, student_model, weights_digest
    from .supervisor import weights_problem

    job = student / JOB_FILE
    if job.is_file():
        try:
            found = json.loads(job.read_text(encoding="utf-8"))
            return ModelConfig.model_validate(found["model"]), {"provider_job": found.get("job_id")}
        except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
            raise ConfigError(f"{job}: not a provider fine-tune's result ({exc})") from None
    weights = student.resolve()
    if weights_problem(weights) is not None:
        raise ConfigError(f"--student {student}: neither a checkpoint folder (config.json), a GGUF file nor {JOB_FILE}")
    try:
        model = student_model(like_model(config, like), weights)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        digest = weights_digest(weights)
    except OSError as exc:
        raise ConfigError(f"--student {student}: cannot be read ({exc.strerror or exc})") from None
    return model, {"weights": str(weights), "weights_sha256": digest}


def _eval_targets(args: argparse.Namespace, card: dict[str, Any], config: Any) -> tuple[str, str]:
    """The tenant the eval runs as and the teacher it asks, the arguments checked."""
    tenant = args.tenant or card.get("tenant")
    if not isinstance(tenant, str) or tenant not in config.tenants:
        raise ConfigError(f"tenant {tenant} is not in this configuration")
    policy = config.tenants[tenant]
    teacher = args.teacher or card.get("route")
    if not isinstance(teacher, str):
        raise ConfigError(f"{args.data / 'card.json'} names no route: say --teacher ROUTE_OR_MODEL")
    for role, target in (("teacher", teacher), ("baseline", args.baseline)):
        if target is not None and target not in policy.routes and target not in policy.allowed_models:
            raise ConfigError(f"--{role} {target} is neither a route nor a model (allowed_models) of tenant {tenant}")
    for option, value in (("--limit", args.limit), ("--baseline-limit", args.baseline_limit)):
        if value is not None and value < 1:
            raise ConfigError(f"{option} is at least 1")
    if args.baseline_limit is not None and args.baseline is None:
        raise ConfigError("--baseline-limit: there is no --baseline")
    if not MODEL_NAME.fullmatch(args.name):
        raise ConfigError(f"--name {args.name!r}: letters, digits and . _ : - only (at most 128), as in a header")
    if args.name in policy.routes:  # a request for it would reach the route, never the student
        raise ConfigError(f"--name {args.name}: tenant {tenant} has a route of that name")
    return tenant, teacher


def _evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..adapters.local.wiring import local_deps
    from ..distill.evaluate import render, suite_name, summary, test_cases, with_student
    from ..experiments.evals import Gateway, report, run_suite
    from .eval import write_run
    from .main import chain_config

    card = _collection(args.data, ("test",))
    config = load_local_config(args.config)
    tenant, teacher = _eval_targets(args, card, config)
    policy = config.tenants[tenant]
    try:
        cases = test_cases(args.data, args.scoring)[: args.limit]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    model, origin = _student(config, args.student, args.like)
    if "weights" in origin and args.out.resolve().is_relative_to(args.student.resolve()):
        raise ConfigError(f"--out {args.out}: inside --student (the reports would change the weights evaluated)")
    try:
        config = with_student(config, tenant, args.name, model)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    report_folder(args.out, ("report.json", "report.md"))
    targets = {"teacher": str(teacher), "student": args.name, **({"baseline": args.baseline} if args.baseline else {})}
    for name in targets:
        report_folder(args.out / name, ("report.json", "report.md"))
    suite = suite_name(args.data)
    runs: dict[str, dict[str, Any]] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with contextlib.ExitStack() as stack, Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        gateway = Gateway(local_deps(chain_config(config, stack), stack), tenant)
        for name, target in targets.items():
            asked = cases[: args.baseline_limit] if name == "baseline" else cases
            task = bar.add_task(name, total=len(asked))
            results = run_suite(asked, gateway, target, None, functools.partial(bar.advance, task))
            runs[name] = report(results, suite=suite, target=target, tenant=tenant, judge=None)
            write_run(args.out / name, runs[name])
    found = summary(
        runs,
        policy.training.min_quality_ratio,
        name=args.name,
        tenant=tenant,
        route=card.get("route"),
        suite=suite,
        model=model.model_dump(mode="json", exclude_defaults=True),
        **origin,
    )
    (args.out / "report.json").write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    (args.out / "report.md").write_text(render(found), encoding="utf-8")
    quality = found["quality_ratio"]
    print(
        f"quality_ratio={'-' if quality is None else f'{quality:.4f}'} meets_bar={str(found['meets_bar']).lower()} "
        + " ".join(f"{name}_pass_rate={run['pass_rate']:.4f}" for name, run in found["runs"].items())
        + f" cost_ratio={found['cost_ratio']} report {args.out / 'report.json'}"
    )
    return 0
