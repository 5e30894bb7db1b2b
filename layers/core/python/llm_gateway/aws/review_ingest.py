"""The `review_ingest` function: SQS batches of flagged items -> the review table.

Powertools' batch processor reports per-message failures (`batchItemFailures`), so one bad
message is retried (and, after the queue's receive limit, dead-lettered) without the rest of its
batch; storing is idempotent, so a redelivered message never makes a second item.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from ..adapters.aws.review import DynamoReviewStore, ingest
from .observability import logger, metrics
from .runtime import settings

processor = BatchProcessor(event_type=EventType.SQS)


@cache
def store() -> DynamoReviewStore:
    from ..adapters.aws.dynamodb import default_client

    table = settings().review_table
    if not table:
        raise RuntimeError("review_ingest needs REVIEW_TABLE")
    return DynamoReviewStore(table, default_client())


def _record(record: SQSRecord) -> None:
    if ingest(store(), [record.body]):
        metrics.add_metric(name="ReviewItemsStored", unit="Count", value=1)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=_record, processor=processor, context=context)
