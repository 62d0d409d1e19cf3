"""The watcher: order updates from the streamer's order-events queue and from Kite postbacks, acted on once."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from bracketflow.contracts import OrderEvent
from bracketflow.errors import ValidationFailed
from bracketflow.observability import logger, metrics
from bracketflow.schemas import wire_json
from bracketflow.services.order_updates import BadPostback, UpdateNotYetMatched, ingest, verify_postback

# A batch whose every record is handed back (say one update of ours, not mapped yet) answers with the failed items
# like any partial failure instead of erroring the invocation: same redelivery, no Lambda error alarm noise.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
api = APIGatewayRestResolver()


def record_handler(record: SQSRecord) -> str:
    """An OrderEvent (bracketflow.contracts): the streamer's copy of a Kite order update.

    Raising fails only this record (ReportBatchItemFailures): UpdateNotYetMatched (one of our orders that nothing
    maps yet) comes back after the visibility timeout, and after maxReceiveCount goes to the DLQ and its alarm."""
    event = OrderEvent.from_json(record.body)
    return ingest(event.order, event.source)


_POSTBACK_BODY = {
    "requestBody": {
        "description": "Kite's order update, with its checksum (SHA-256 of order_id + order_timestamp + api_secret)",
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


@api.post(
    "/broker/postback",
    summary="The broker's order update (Kite postback)",
    responses={
        200: {"description": "Acted on, already known, or left to the ticker's copy (data.outcome)"},
        400: {"description": "Not JSON or not an order update", "content": {"application/json": {}}},
        401: {"description": "The checksum does not match this app's secret", "content": {"application/json": {}}},
    },
    openapi_extensions=_POSTBACK_BODY,
)
def postback() -> Response[dict]:
    event = api.current_event
    try:
        body = wire_json.loads(wire_json.body_text(event.body, event.is_base64_encoded) or "")
    except ValidationFailed as exc:
        return _answer(400, {"status": "error", "message": f"a postback must be the order update as JSON: {exc}"})
    try:
        order = verify_postback(body)
    except BadPostback as exc:
        return _answer(401, {"status": "error", "message": str(exc)})
    try:
        outcome = ingest(order, "postback")
    except UpdateNotYetMatched:
        # Kite does not send a postback again; the same update's ticker copy on the queue is retried instead.
        outcome = "retry"
    except (KeyError, TypeError, ValueError) as exc:
        return _answer(400, {"status": "error", "message": f"not an order update: {exc}"})
    return _answer(200, {"status": "success", "data": {"outcome": outcome}})


def _answer(status: int, body: dict[str, Any]) -> Response[dict]:
    return Response(status_code=status, content_type="application/json", body=body)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse | dict[str, Any]:
    if "Records" in event:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    return api.resolve(event, context)
