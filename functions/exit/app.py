"""ExitQueue -> exit orders, exactly once per bracket (docs/reliability.md; the rules are in services/execute_exit.py).

SQS batch with partial failures: a message whose exit could not be finished is reported failed and made visible again
in seconds (ChangeMessageVisibility, backing off 1, 2, 4, 8 ... RETRY_CAP_S by its receive count), not after the
queue's visibility timeout, which stays >= 6 x this function's timeout for an exit that is merely slow; it resumes where
it stopped. After maxReceiveCount it lands in ExitDeadLetterQueue, whose alarm pages a human. The SQS message id is
the claim id, so a redelivery of the same message can resume its own claim while any other message for the bracket is
acknowledged as a duplicate.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from bracketflow.adapters.sqs import retry_in
from bracketflow.contracts import ExitRequest
from bracketflow.errors import ExitNotYetPossible
from bracketflow.observability import logger, metrics, tracer
from bracketflow.services.execute_exit import ExitOutcome, execute_exit, exit_attempt_failed, retry_delay_s
from bracketflow.settings import get_settings

processor = BatchProcessor(event_type=EventType.SQS)


@tracer.capture_method
def record_handler(record: SQSRecord) -> dict[str, Any]:
    try:
        request = ExitRequest.from_json(record.body)
        # The watchdog's delayed copy acts for the claim it checks on; any other message is its own claim.
        result = execute_exit(request, claim_id=request.resume_claim or record.message_id)
    except Exception as exc:
        exit_attempt_failed(_bracket_id(record), exc)
        _retry_soon(record)
        raise
    if result.outcome is ExitOutcome.NOT_YET:  # a strategy's exit waits for the protection being placed: not a failure
        _retry_soon(record)
        raise ExitNotYetPossible(f"bracket {result.bracket_id}: {result.detail}; exit retried")
    return {"bracket_id": result.bracket_id, "outcome": result.outcome.value, "order_id": result.broker_order_id}


def _retry_soon(record: SQSRecord) -> None:
    queue_url = get_settings().exit_queue_url
    if not queue_url:
        return
    try:
        retry_in(queue_url, record.receipt_handle, retry_delay_s(int(record.attributes.approximate_receive_count)))
    except Exception:  # the queue's visibility timeout still brings it back
        logger.exception("could not shorten the failed exit's visibility", extra={"message_id": record.message_id})


def _bracket_id(record: SQSRecord) -> str | None:
    try:
        return str(record.json_body.get("bracket_id"))
    except Exception:
        return None


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
