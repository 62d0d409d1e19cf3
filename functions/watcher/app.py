"""The watcher: order updates from the streamer's order-events queue and from Kite postbacks, acted on once."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from bracketflow.observability import logger, metrics
from bracketflow.services.order_updates import BadPostback, ingest, verify_postback

processor = BatchProcessor(event_type=EventType.SQS)
api = APIGatewayRestResolver()


def record_handler(record: SQSRecord) -> str:
    """{"source": "ticker", "received_at", "order": {<Kite order update data>}}"""
    body = json.loads(record.body)
    return ingest(body["order"], str(body.get("source") or "queue"))


@api.post("/broker/postback")
def postback() -> Response[dict]:
    try:
        body = json.loads(api.current_event.body or "")
    except ValueError:
        return _answer(400, {"status": "error", "message": "a postback must be the order update as JSON"})
    try:
        order = verify_postback(body)
    except BadPostback as exc:
        return _answer(401, {"status": "error", "message": str(exc)})
    try:
        outcome = ingest(order, "postback")
    except (KeyError, TypeError, ValueError) as exc:
        return _answer(400, {"status": "error", "message": f"not an order update: {exc}"})
    return _answer(200, {"status": "success", "data": {"outcome": outcome}})


def _answer(status: int, body: dict[str, Any]) -> Response[dict]:
    return Response(status_code=status, content_type="application/json", body=body)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if "Records" in event:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    return api.resolve(event, context)
