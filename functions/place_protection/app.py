"""PlaceProtection task: the GTT two-leg OCO for the filled quantity; the bracket becomes PROTECTED."""

from __future__ import annotations

from typing import Any

from bracketflow.observability import logger, metrics
from bracketflow.services.protect import place_protection


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """{"bracket_id"} -> {"gtt_id", "watch": <the streamer's watch message>}."""
    return place_protection(str(event["bracket_id"]))
