"""The `distill_collect` function: the distillation workflow's first step on AWS.

It runs `distill.collect.collect` — the same filters, deduplication and time split as
`llm-gateway distill collect` — on the tenant's traces in the deployment's trace table
(`DynamoTraceStore.with_content`), with the deployment's configuration and the semantic cache's
embedding model (the `models` layer), and writes the collection under
`distill/<tenant>/<run_id>/data/` in the deployment's bucket: `train.jsonl`, `validation.jsonl`,
`test.jsonl` (chat fine-tuning format), `card.json` (the data card `distill collect` writes; no
Hugging Face dataset here) and `test-invocations.jsonl` (each test case as the model endpoint's
request, what the evaluation's batch transform sends). It returns the counts and the locations the
workflow's SageMaker steps read.

A refusal fails the execution with `CollectionRefused` and the reason: the tenant has not opted
in, keeps no content, a teacher's terms are not stated to allow training, or too few examples
are left to fill the three splits. The function reads the trace table (Query) and writes under
`distill/` in the bucket, nothing else.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol

from aws_lambda_powertools.utilities.typing import LambdaContext

from ..config import GatewayConfig
from ..distill.collect import CollectionRefused, collect, split_shares
from ..distill.dataset import SPLITS, card, split_lines
from ..endpoint_contract import EndpointMessage, InvocationRequest
from ..experiments.scorers import EvalCase
from ..ports import Trace
from .distill_run import CARD, INVOCATIONS, DistillRunInvalid, RunFiles, RunStart, job_name, settings
from .observability import logger, metrics

_ROLES: dict[str, Literal["system", "user", "assistant"]] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}


class ContentTraces(Protocol):
    def with_content(self, tenant: str, since: float, until: float) -> Iterable[Trace]: ...


def moment(value: float | str, now: float, *, end: bool = False) -> float:
    """Epoch seconds, or what `distill collect --since` takes (`30d`, an ISO date or date-time)."""
    if isinstance(value, int | float):
        return float(value)
    from ..errors import ConfigError

    try:
        if end:
            from ..guard.report import parse_bound

            return float(parse_bound(value, end=True) or now)
        from ..cli.replay import since_bound

        return since_bound(value, now)
    except ConfigError as exc:
        raise DistillRunInvalid(str(exc).replace("--since", "since")) from None


def invocation(case: EvalCase) -> InvocationRequest:
    """A test case as the model endpoint's request (the batch transform posts one a line to
    /invocations): the prompt, greedy, the case's token cap."""
    return InvocationRequest(
        messages=[EndpointMessage(role=_ROLES[m.role], content=m.text()) for m in case.messages],
        max_tokens=int(case.params["max_tokens"]),
        temperature=float(case.params.get("temperature", 0.0)),
    )


def collect_run(
    start: RunStart,
    *,
    config: GatewayConfig,
    traces: ContentTraces,
    embed: Callable[[list[str]], Any],
    s3: Any,
    bucket: str,
    now: float,
) -> dict[str, Any]:
    """Collect the run's examples and write them to the bucket; what the workflow reads next."""
    from ..distill.evaluate import cases_of

    since = moment(start.since, now)
    until = moment(start.until, now, end=True) if start.until is not None else now
    if since >= until:
        raise DistillRunInvalid(f"since ({since:.0f}) is not before until ({until:.0f})")
    policy = config.tenants.get(start.tenant)
    if policy is not None and policy.training.opt_in and not policy.traces.store_content:
        raise CollectionRefused(
            f"tenant {start.tenant} keeps no content in its traces (`traces.store_content`): nothing to learn from"
        )
    contents = traces.with_content(start.tenant, since, until)
    found = collect(config, start.tenant, start.route, contents, embed, split_shares(start.split))
    counts = {name: len(getattr(found, name)) for name in SPLITS}
    if not all(counts.values()):
        raise CollectionRefused(
            f"too few examples of tenant {start.tenant} on route {start.route} to train and evaluate: "
            f"{counts} from {found.read} traces (removed: {found.removed}); every split needs one"
        )
    files = RunFiles(bucket, start.tenant, start.run_id)
    about = card(found, tenant=start.tenant, route=start.route, since=since, until=until, run_id=start.run_id)
    bodies = {f"{name}.jsonl": split_lines(getattr(found, name)) for name in SPLITS}
    cases = cases_of([example.chat()["messages"] for example in found.test])
    bodies[INVOCATIONS] = "".join(invocation(case).model_dump_json() + "\n" for case in cases)
    bodies[CARD] = json.dumps(about, indent=2) + "\n"
    for name, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=files.data + name, Body=body.encode("utf-8"))
    return {
        "tenant": start.tenant,
        "route": start.route,
        "run_id": start.run_id,
        "job_name": job_name(start.tenant, start.run_id),
        "examples": counts,
        "teachers": found.models,
        "data": files.uri(files.data),
        "invocations": files.uri(files.data + INVOCATIONS),
        "model": files.uri(files.model),
        "transform": files.uri(files.transform),
    }


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from ..adapters.aws.batch import default_s3_client
    from ..adapters.aws.dynamodb import default_client
    from ..adapters.aws.traces import DynamoTraceStore
    from ..config import load_config
    from ..semantic.embeddings import default_embedder

    current = settings()
    if not current.trace_table:
        raise RuntimeError("distill_collect needs TRACE_TABLE")
    start = RunStart.model_validate(event)
    found = collect_run(
        start,
        config=load_config(current.config_path),
        traces=DynamoTraceStore(current.trace_table, default_client()),
        embed=lambda texts: default_embedder().embed(texts),  # loaded only when there is something to embed
        s3=default_s3_client(),
        bucket=current.bucket,
        now=time.time(),
    )
    metrics.add_metric(name="DistillExamples", unit="Count", value=sum(found["examples"].values()))
    logger.info("collected", extra={"run_id": start.run_id, "examples": found["examples"]})
    return found
