"""`llm-gateway` command line: serve the gateway (and the local model endpoint), hash keys."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import EXAMPLE_CONFIG, ApiKey, GatewayConfig, hash_key, load_config
from ..contracts import ChatCompletionRequest
from ..errors import ConfigError
from ..registry import warn_retiring
from . import alerts, batch, cost_report, distill, experiment, guard_report, replay, rollout, shadow, trace
from . import eval as evals
from .store_location import load_local_config, note_if_new
from .supervisor import Backoff, start_local_endpoints, with_endpoint_url

__all__ = ["main", "mint_demo_keys", "start_local_endpoints", "with_endpoint_url"]  # cli.batch and bench use these

if TYPE_CHECKING:
    from ..deps import Deps


def mint_demo_keys(config: GatewayConfig) -> tuple[GatewayConfig, dict[str, str]]:
    """A fresh random key per demo tenant; only digests go into the running configuration."""
    minted = {name: "sk-gw-" + secrets.token_urlsafe(24) for name, tenant in config.tenants.items() if tenant.demo}
    extra = {name: [ApiKey(id="demo", sha256=hash_key(key))] for name, key in minted.items()}
    return config.with_tenant_keys(extra), minted


def mint_demo_admin_key(config: GatewayConfig) -> tuple[GatewayConfig, str | None]:
    """With demo tenants and no admin key configured: a fresh admin key (for /metrics and /admin)."""
    if config.admin_api_keys or not any(tenant.demo for tenant in config.tenants.values()):
        return config, None
    key = "sk-gw-admin-" + secrets.token_urlsafe(24)
    return config.model_copy(update={"admin_api_keys": [ApiKey(id="demo-admin", sha256=hash_key(key))]}), key


def chain_config(config: GatewayConfig, stack: contextlib.ExitStack) -> GatewayConfig:
    """The configuration of a command that sends requests through the chain itself (`eval run`,
    `replay`): demo tenants get a key to run as, and the local model endpoint runs for the
    command's lifetime when a model uses it."""
    config, _ = mint_demo_keys(config)
    config, _ = start_local_endpoints(config, stack)
    return config


class Shutdown(Exception):
    """SIGINT/SIGTERM after the server drained: unwind so the model endpoint child is stopped too."""


def _shutdown(signum: int, frame: object) -> None:
    raise Shutdown(signum)


def serve(host: str, port: int, config_path: str | None, restart: Backoff | None = None) -> int:
    """Serve the gateway; with local models, run their endpoints, each under an
    `EndpointSupervisor` (restarted with `restart` backoff when it dies)."""
    import uvicorn

    from ..adapters.local.wiring import local_deps
    from ..http.app import create_app
    from ..http.protocol import http_protocol
    from ..http.serving import AnnouncingServer, ready_line
    from ..runner import InProcessRunner

    config = load_local_config(config_path)
    config, minted = mint_demo_keys(config)
    config, admin_key = mint_demo_admin_key(config)
    # uvicorn drains on SIGINT/SIGTERM, then re-raises the signal to the handler installed before it
    # started: this one, which unwinds through the ExitStack instead of killing the process outright.
    signal.signal(signal.SIGINT, _shutdown)
    signal.signal(signal.SIGTERM, _shutdown)
    with contextlib.ExitStack() as stack:
        config, supervisors = start_local_endpoints(config, stack, restart)
        if any(t.semantic_cache.enabled for t in config.tenants.values()):
            # Load (on a new machine: first prepare) the embedding model now, not on the first request.
            from ..semantic.embeddings import default_embedder

            default_embedder()
        deps = local_deps(config, stack)
        warn_retiring(deps.config, deps.metrics, datetime.now(UTC).date())
        stack.enter_context(alert_watcher(deps))
        stack.enter_context(rollout_watcher(deps))
        deps.model_endpoints = tuple(supervisors)
        for supervisor in supervisors:
            supervisor.on_url_change(lambda old, new: repoint(deps, old, new))
        app = create_app(InProcessRunner(deps))

        def announce(bound_host: str, bound_port: int) -> list[str]:
            """The base URL, then the demo keys minted for this run."""
            lines = [ready_line(bound_host, bound_port, "/v1")]
            lines += [f"tenant {name} key={key}" for name, key in minted.items()]
            return lines + ([f"admin key={admin_key}"] if admin_key is not None else [])

        config_ = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off", http=http_protocol()
        )
        AnnouncingServer(config_, announce).run()
    return 0


def alert_watcher(deps: Deps) -> contextlib.AbstractContextManager[object]:
    """The alerts, evaluated every `alerting.interval_s` over the local store while `serve` runs."""
    from ..adapters.local.sqlite import SqliteStore
    from ..alerts import AlertWatcher, LocalAlertHistory, Periodic

    if not isinstance(deps.audit, SqliteStore):
        return contextlib.nullcontext()
    watcher = AlertWatcher(deps.config, LocalAlertHistory(deps.audit.query), deps.clock)
    return Periodic(deps.config.alerting.interval_s, watcher.check, "alerts")


def rollout_watcher(deps: Deps) -> contextlib.AbstractContextManager[object]:
    """The running rollouts' gates and experiments' guardrails, evaluated every `ROLLOUT_CHECK_S`
    while `serve` runs."""
    from ..adapters.local.sqlite import SqliteStore
    from ..alerts import Periodic
    from ..experiments.rollouts import ROLLOUT_CHECK_S, LocalEvidence, RolloutController

    if not isinstance(deps.audit, SqliteStore) or deps.rollouts is None:
        return contextlib.nullcontext()
    from ..experiments import ab

    controller = RolloutController(deps.rollouts, LocalEvidence(deps.audit.query, deps.config), deps.clock)
    experiments, query = deps.experiments, deps.audit.query

    def check() -> None:
        controller.check()
        if experiments is not None:
            ab.check(experiments, lambda experiment: ab.analyse(query, experiment))

    return Periodic(ROLLOUT_CHECK_S, check, "rollouts")


def repoint(deps: Deps, old_url: str, new_url: str) -> None:
    """After the endpoint came back on another port: the models that called `old_url` call `new_url`."""
    deps.config = with_endpoint_url(deps.config, new_url, current=old_url)


def purge(config_path: str | None, selection: dict[str, str | None]) -> int:
    from pydantic import ValidationError

    from ..adapters.local.semantic import LocalSemanticIndex
    from ..adapters.local.sqlite import SqliteStore
    from ..cache.purge import PurgeRequest, purge_stores

    config = load_local_config(config_path)
    try:
        request = PurgeRequest.model_validate({k: v for k, v in selection.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError("; ".join(str(e["msg"]) for e in exc.errors())) from exc
    if request.tenant not in config.tenants:
        raise ConfigError(f"unknown tenant '{request.tenant}'")
    store = SqliteStore(config.storage_path)
    # Servers sharing the store drop the purged rows from memory on their next lookup (a marker
    # in the same file): this process need not load the index itself.
    semantic = LocalSemanticIndex(config.storage_path, load=False)
    try:
        removed = purge_stores(store, semantic, request, config.tenants[request.tenant].guards.pii)
    finally:
        semantic.close()
        store.close()
    if request.model is not None:
        which = f", model {request.model}"
    elif request.kb_version is not None:
        which = f", knowledge-base version {request.kb_version}"
    elif request.system_prompt is not None:
        which = f", system prompt {request.tag}"
    else:
        which = ""
    print(f"purged {removed} cached answers of tenant {request.tenant}{which}")
    return 0


def _prompts(path: Path) -> list[ChatCompletionRequest]:
    """A JSONL file of chat request bodies (`messages`) or of `{"text": ...}` objects, or plain text
    with one prompt per line."""
    from pydantic import ValidationError

    requests = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = {"text": line}
        if not isinstance(row, dict):
            row = {"text": str(row)}
        body = {
            "model": "calibration",
            "messages": row.get("messages") or [{"role": "user", "content": row.get("text")}],
        }
        try:
            requests.append(ChatCompletionRequest.model_validate(body))
        except ValidationError as exc:
            raise ConfigError(
                f"{path}:{number}: not a chat request or a text prompt ({exc.errors()[0]['msg']})"
            ) from exc
    return requests


def route_calibrate(args: argparse.Namespace) -> int:
    """Thresholds for a route's `complexity.thresholds` from a tenant's own prompts."""
    from ..routing.complexity import calibrated_thresholds, default_scorer, knob_share

    share, tiers = args.small_share, args.tiers
    if args.route is not None:
        config = load_config(args.config or EXAMPLE_CONFIG)
        tenant, _, route_name = args.route.partition(".")
        route = config.tenants[tenant].routes.get(route_name) if tenant in config.tenants else None
        if route is None or route.complexity is None:
            raise ConfigError(f"no route '{args.route}' (tenant.route) with complexity routing in the configuration")
        prices = [config.models[m].price for m in route.complexity.models]
        tiers = len(route.complexity.models)
        if share is None:
            try:
                share = knob_share(route.complexity, prices)
            except ValueError as exc:
                raise ConfigError(f"{exc}: give --small-share") from exc
    if share is None or not 0 <= share <= 1:
        raise ConfigError("give --small-share between 0 and 1 (or --route with a share or cost knob)")
    if tiers < 2:
        raise ConfigError("--tiers: a route with complexity routing has at least two models")
    requests = _prompts(args.prompts)
    if not requests:
        raise ConfigError(f"{args.prompts}: no prompts")
    scorer = default_scorer()
    scores = [scorer.score(r) for r in requests]
    thresholds = calibrated_thresholds(scores, share, tiers)
    reference = [scorer.model.threshold(s) for s in (share * (i + 1) / (tiers - 1) for i in range(tiers - 1))]
    below_reference = sum(score < reference[-1] for score in scores) / len(scores)
    print(f"{len(scores)} prompts; {share:.0%} kept off the largest model over {tiers} tiers")
    if len(scores) < 200:
        print("note: fewer than 200 prompts; the thresholds will move with more traffic")
    print(f"the packaged reference mix's thresholds would keep {below_reference:.1%} of these prompts off it")
    print("for this traffic, set the route's complexity knob to:")
    print(f"  thresholds: [{', '.join(f'{t:g}' for t in thresholds)}]")
    return 0


def config_option() -> argparse.ArgumentParser:
    """The `--config` every command that reads the configuration takes (argparse parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--config",
        default=os.environ.get("LLM_GATEWAY_CONFIG"),
        help="YAML configuration (default: $LLM_GATEWAY_CONFIG, else the shipped example)",
    )
    return parent


def _add_serve_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    serve_cmd = commands.add_parser("serve", help="serve the gateway (and the local model) over HTTP", parents=parents)
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8080)
    serve_cmd.add_argument(
        "--endpoint-restart-s",
        type=float,
        nargs=2,
        metavar=("FIRST", "MAX"),
        default=(Backoff.initial_s, Backoff.max_s),
        help="backoff before restarting a crashed local model endpoint: first delay, doubled up to MAX (0.5 30)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llm-gateway", description="An OpenAI-compatible LLM gateway.")
    commands = parser.add_subparsers(dest="command", required=True)
    configured = [config_option()]
    _add_serve_parser(commands, configured)
    check_cmd = commands.add_parser("check-config", help="validate a configuration file and exit")
    check_cmd.add_argument("config", type=Path)
    purge_cmd = commands.add_parser(
        "purge", help="remove a tenant's cached answers from the local store", parents=configured
    )
    purge_cmd.add_argument("--tenant", required=True)
    only = purge_cmd.add_mutually_exclusive_group()
    only.add_argument("--model", help="only this pinned model version")
    only.add_argument("--kb-version", help="only answers given from this knowledge-base version (metadata.kb_version)")
    only.add_argument("--system-prompt-file", type=Path, help="only answers given under the system prompt in this file")
    review_cmd = commands.add_parser(
        "review", help="the human review queue: list, approve, reject, export", parents=configured
    )
    review_cmd.add_argument("action", choices=["list", "approve", "reject", "export", "export-approved"])
    review_cmd.add_argument(
        "target", nargs="?", help="approve/reject: the item id; export, export-approved: the JSONL file"
    )
    review_cmd.add_argument("--tenant", help="only this tenant's items")
    review_cmd.add_argument("--status", default="pending", choices=["pending", "approved", "rejected", "all"])
    review_cmd.add_argument("--by", default=os.environ.get("USER", "reviewer"), help="reviewer name recorded")
    review_cmd.add_argument("--table", help="a deployment's review table (DynamoDB) instead of the local store")
    cost_report.add_parser(commands, configured)
    calibrate_cmd = commands.add_parser(
        "route-calibrate", help="complexity-router thresholds from a tenant's own prompts", parents=configured
    )
    calibrate_cmd.add_argument("--prompts", type=Path, required=True, help="JSONL chat requests or text, one per line")
    calibrate_cmd.add_argument("--small-share", type=float, help="share of traffic to keep off the largest model")
    calibrate_cmd.add_argument("--tiers", type=int, default=2, help="models in the route (without --route)")
    calibrate_cmd.add_argument("--route", help="tenant.route: its models and knob (a share or a cost)")
    batch.add_parser(commands, configured)
    guard_report.add_parser(commands, configured)
    trace.add_parser(commands, configured)
    alerts.add_parser(commands, configured)
    replay.add_parser(commands, configured)
    experiment.add_parser(commands, configured)
    evals.add_parser(commands, configured)
    rollout.add_parser(commands, configured)
    shadow.add_parser(commands, configured)
    distill.add_parser(commands, configured)
    hash_cmd = commands.add_parser("hash-key", help="print the SHA-256 digest to put in a tenant's api_keys")
    hash_cmd.add_argument("key", help="the API key, or - to read it from standard input (keeps it out of history)")
    args = parser.parse_args(argv)
    commands_by_name: dict[str, Callable[[], int]] = {
        "serve": lambda: serve(args.host, args.port, args.config, Backoff(*args.endpoint_restart_s)),
        "purge": lambda: purge(
            args.config,
            {
                "tenant": args.tenant,
                "model": args.model,
                "kb_version": args.kb_version,
                "system_prompt": args.system_prompt_file.read_text(encoding="utf-8")
                if args.system_prompt_file
                else None,
            },
        ),
        "review": lambda: review(args.config, args.action, args.target, args.tenant, args.status, args.by, args.table),
        "check-config": lambda: check_config(args.config),
        "cost-report": lambda: cost_report.cost_report(args),
        "route-calibrate": lambda: route_calibrate(args),
        "batch": lambda: batch.run(args),
        "guard-report": lambda: guard_report.guard_report(args),
        "trace": lambda: trace.trace(args),
        "alerts": lambda: alerts.alerts(args),
        "replay": lambda: replay.replay(args),
        "experiment": lambda: experiment.experiment(args),
        "eval": lambda: evals.evaluate(args),
        "rollout": lambda: rollout.rollout(args),
        "shadow": lambda: shadow.shadow(args),
        "distill": lambda: distill.distill(args),
        "hash-key": lambda: print_key_digest(args.key),
    }
    try:
        return commands_by_name[args.command]()
    except Shutdown:
        return 0
    except ConfigError as exc:
        print(f"llm-gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a deployment's AWS service refused (--table, --batch-bucket): said in one line
        if not _aws_error(exc):
            raise
        print(f"llm-gateway: AWS refused: {exc}", file=sys.stderr)
        return 2


def _aws_error(exc: Exception) -> bool:
    """Whether `exc` is botocore's (a missing table or bucket, credentials, throttling...)."""
    return type(exc).__module__.startswith("botocore")


def deployment_table_client() -> Any:
    """The DynamoDB client `--table` reads a deployment's table with. boto3 comes with the `aws`
    extra: without it, a ConfigError (one line, exit 2) that says what to install."""
    try:
        import boto3  # noqa: F401
        import botocore  # noqa: F401
    except ImportError:
        raise ConfigError("--table needs boto3, which is not installed: pip install 'llm-gateway[aws]'") from None
    from ..adapters.aws.dynamodb import default_client

    return default_client()


def review(
    config_path: str | None,
    action: str,
    target: str | None,
    tenant: str | None,
    status: str,
    by: str,
    table: str | None = None,
) -> int:
    """List pending items; approve (the request was fine: an input a classifier layer refused or
    flagged is allow-listed in the local store) or reject (the layer was right) one; export
    decided items as JSONL training data: text, layer, label (1 = the layer was right), or the
    approved texts (`export-approved`, label benign). `table`: a deployment's review table
    (DynamoDB, the environment's AWS credentials) instead of the local store."""
    import json

    store: Any
    storage_path = None
    if table:
        from ..adapters.aws.review import DynamoReviewStore

        store = DynamoReviewStore(table, deployment_table_client())
    else:
        from ..adapters.local.review import SqliteReviewQueue

        storage_path = load_local_config(config_path).storage_path
        if action == "list":
            note_if_new(storage_path)
        store = SqliteReviewQueue(storage_path)
    try:
        if action == "list":
            for item in store.items(None if status == "all" else status, tenant):
                score = "" if item.score is None else f" score={item.score:.2f}"
                done = "refused" if item.action == "block" else "flagged"
                print(
                    f"{item.item_id} {item.status} {item.tenant} {item.kind}/{item.layer} {done}{score}: "
                    f"{item.text[:80]!r}"
                )
            return 0
        if target is None:
            raise ConfigError(f"review {action} needs {'a file' if action.startswith('export') else 'an item id'}")
        if action == "export-approved":
            return guard_report.export_approved(store, target, tenant)
        if action == "export":
            decided = [i for i in store.items(None, tenant, limit=1_000_000) if i.status != "pending"]
            with Path(target).open("w", encoding="utf-8") as out:
                for item in decided:
                    row = {"text": item.text, "layer": item.layer, "label": int(item.status == "rejected")}
                    out.write(json.dumps({**row, "kind": item.kind, "tenant": item.tenant}) + "\n")
            print(f"exported {len(decided)} reviewed items to {target}")
            return 0
        try:
            decided_item = store.decide(target, approved=action == "approve", reviewer=by, now=time.time())
        except KeyError:
            raise ConfigError(f"no review item {target!r}") from None
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        print(f"{decided_item.item_id} {decided_item.status} by {by}")
        learned = guard_report.remember(decided_item, storage_path, time.time()) if storage_path else None
        if learned:
            print(learned)
        return 0
    finally:
        if hasattr(store, "close"):
            store.close()


def check_config(path: Path) -> int:
    """Every problem of the file, one line each (`FILE: location: problem`) on stderr, exit 1; or ok."""
    from ..config_check import config_problems

    problems = config_problems(path)
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if problems:
        print(f"{path}: {len(problems)} problem{'s' if len(problems) > 1 else ''}", file=sys.stderr)
        return 1
    config = load_config(path)
    print(f"ok: {len(config.tenants)} tenants, {len(config.models)} models")
    return 0


def print_key_digest(key: str) -> int:
    print(hash_key(sys.stdin.readline().strip() if key == "-" else key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
