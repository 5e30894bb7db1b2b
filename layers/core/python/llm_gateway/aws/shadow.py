"""The `shadow` function: SQS batches of shadow copies (`adapters/aws/shadow.py`) -> the route's
shadow model -> the pair table, after the users had their answers.

Each copy is sent to the shadow model the configuration names for its route now (a copy of a route
that no longer has it is dropped) alone, with the chain's own invoke step (its retries, no
fallback, no cache, no moderation: the answer is never shown), unless the route's shadow budget
for the day is spent; the pair is kept once per request, and a redelivered message whose pair is kept
is not sent again.
Powertools' batch processor reports per-message failures: a copy whose storing failed is tried
again (and dead-lettered after the queue's receive limit); a shadow model's failure is a pair with
outcome `error`, not a failed message.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..adapters.aws.shadow import DynamoShadowPairs, job_of
from ..experiments.shadow import shadow_pair
from .observability import logger, metrics
from .runtime import deps, settings

processor = BatchProcessor(event_type=EventType.SQS)


@cache
def pairs() -> DynamoShadowPairs:
    from ..adapters.aws.dynamodb import default_client

    table = settings().shadow_table
    if not table:
        raise RuntimeError("shadow needs SHADOW_TABLE")
    return DynamoShadowPairs(table, default_client())


def _record(record: SQSRecord) -> None:
    current = deps()
    try:
        job = job_of(record.body, current.config)
    except (KeyError, TypeError, ValueError) as exc:  # not a copy: dropped, not retried (its content never logged)
        logger.warning(
            "a shadow message that is not a copy was dropped",
            extra={"message_id": record.message_id, "error": type(exc).__name__},
        )
        return
    if job is None:
        logger.info("a copy the configuration no longer shadows was dropped", extra={"message_id": record.message_id})
        return
    state = job.state
    route = state.router.route if state.router is not None else ""
    if pairs().kept(state.tenant().tenant, route, state.received_at, state.request_id):
        return  # a redelivered copy: sent and kept already
    pair = shadow_pair(job, current, pairs().spent_today)
    if pair is not None:
        pairs().add(pair, state.received_at)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=_record, processor=processor, context=context)
