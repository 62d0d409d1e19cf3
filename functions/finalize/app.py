"""Finalize task (P&L, CLOSED, unwatch) and RecordFailure (a step that failed for good), one function."""

from __future__ import annotations

from typing import Any

from bracketflow.observability import logger, metrics
from bracketflow.services.finalize import finalize
from bracketflow.services.lifecycle import record_failure


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """{"bracket_id", "exit": {...}} closes the bracket; {"bracket_id", "failure": {"Error","Cause"}, "step"} records
    a failed workflow (FAILED when nothing reached the broker, NEEDS_REVIEW otherwise)."""
    bracket_id = str(event["bracket_id"])
    failure = event.get("failure")
    if failure is not None:
        error = failure.get("Error", "States.Runtime")
        return record_failure(bracket_id, str(error), str(failure.get("Cause", "")), str(event.get("step", "")))
    return finalize(bracket_id, (event.get("exit") or {}).get("exit") or None)
