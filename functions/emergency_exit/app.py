"""EmergencyExit task: protection could not be placed; flatten the filled quantity at market."""

from __future__ import annotations

import json
from typing import Any

from bracketflow.domain.enums import ExitReason
from bracketflow.observability import logger, metrics
from bracketflow.services.emergency_exit import emergency_exit


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """{"bracket_id", "error": {"Error", "Cause"}, "exit_reason"?} -> the exit order.

    `error` is the caught protection failure; ExitCancelledFill sends exit_reason MANUAL (the trader cancelled).
    """
    error = event.get("error") or {}
    reason = f"{error.get('Error', 'ProtectionFailed')}: {_message(error.get('Cause'))}"
    exit_reason = ExitReason(str(event.get("exit_reason") or ExitReason.EMERGENCY.value))
    return emergency_exit(str(event["bracket_id"]), reason, exit_reason)


def _message(cause: Any) -> str:
    try:
        parsed = json.loads(cause) if isinstance(cause, str) else cause
    except ValueError:
        return str(cause)[:500]
    return str(parsed.get("errorMessage") if isinstance(parsed, dict) else parsed)[:500]
