"""PlaceEntry task: the bracket's entry order at the broker, once (our tag finds an attempt whose answer was lost)."""

from __future__ import annotations

from typing import Any

from bracketflow.observability import logger, metrics
from bracketflow.services.lifecycle import place_entry


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """{"bracket_id"} -> {"outcome": "PLACED", "broker_order_id", "timeout_s"} or {"outcome": "DONE", ...}."""
    return place_entry(str(event["bracket_id"]))
