"""CancelEntry task: the entry's wait timed out (or the trader cancelled); cancel the rest and report what filled.

The same function runs FollowEntry (input "follow": true): a protected bracket whose entry still works has its GTT
resized to what filled, and the rest cancelled when its validity ran out ("cancel_rest") or the bracket exits."""

from __future__ import annotations

from typing import Any

from bracketflow.observability import logger, metrics
from bracketflow.services.lifecycle import cancel_entry
from bracketflow.services.working_entry import follow_entry


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """{"bracket_id", "by"?: "timeout" | "user"} -> the entry outcome ({"outcome": "FILLED", ...} or CANCELLED/...);
    {"bracket_id", "follow": true, "cancel_rest"?: bool} -> follow_entry's report."""
    bracket_id = str(event["bracket_id"])
    if event.get("follow"):
        return follow_entry(bracket_id, cancel_rest=bool(event.get("cancel_rest")))
    return cancel_entry(bracket_id, by=str(event.get("by") or "timeout"))
