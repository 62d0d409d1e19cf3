"""CancelEntry task: the entry's wait timed out (or the trader cancelled); cancel the rest and report what filled."""

from __future__ import annotations

from typing import Any

from bracketflow.observability import logger, metrics
from bracketflow.services.lifecycle import cancel_entry


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """{"bracket_id", "by"?: "timeout" | "user"} -> the entry outcome ({"outcome": "FILLED", ...} or CANCELLED/...)."""
    return cancel_entry(str(event["bracket_id"]), by=str(event.get("by") or "timeout"))
