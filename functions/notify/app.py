"""DynamoDB stream of the brackets table -> live updates: WebSocket pushes per account, then Telegram notices.

Off the trading path: a push or Telegram failure is logged and counted, never raised into a trading Lambda.
"""

from __future__ import annotations

from typing import Any

from bracketflow.observability import logger, metrics, tracer
from bracketflow.services.notify import handle_stream_batch


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    delivery = handle_stream_batch(event.get("Records") or [])
    logger.debug("stream batch delivered", extra={"delivery": delivery.__dict__})
    return {
        "pushed": delivery.pushed,
        "gone": delivery.gone,
        "failed": delivery.failed,
        "telegrams": delivery.telegrams,
    }
