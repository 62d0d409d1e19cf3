"""StopSyncQueue -> the GTT's stop leg follows the trailed stop (rules in services/sync_stop.py).

SQS batch with partial failures; a request that keeps failing goes to StopSyncDeadLetterQueue (the stop the streamer
trails is unaffected: this only keeps the broker-side safety net recent).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from bracketflow.contracts import StopSyncRequest
from bracketflow.observability import logger, metrics, tracer
from bracketflow.services.sync_stop import sync_stop

processor = BatchProcessor(event_type=EventType.SQS)


@tracer.capture_method
def record_handler(record: SQSRecord) -> str:
    return sync_stop(StopSyncRequest.from_json(record.body)).value


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
