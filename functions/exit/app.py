"""ExitQueue -> exit orders, exactly once per bracket (docs/reliability.md; the rules are in services/execute_exit.py).

SQS batch with partial failures: a message whose exit could not be finished is reported failed and comes back after
the visibility timeout (it resumes where it stopped); after maxReceiveCount it lands in ExitDeadLetterQueue, whose
alarm pages a human. The SQS message id is the claim id, so a redelivery of the same message can resume its own
claim while any other message for the bracket is acknowledged as a duplicate.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from bracketflow.observability import logger, metrics, tracer
from bracketflow.services.execute_exit import ExitIntent, execute_exit

processor = BatchProcessor(event_type=EventType.SQS)


@tracer.capture_method
def record_handler(record: SQSRecord) -> dict[str, Any]:
    result = execute_exit(ExitIntent.from_json(record.body), claim_id=record.message_id)
    return {"bracket_id": result.bracket_id, "outcome": result.outcome.value, "order_id": result.broker_order_id}


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
