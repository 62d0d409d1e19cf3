"""The risk watch, every minute: brackets whose exit_after / exit_at came are exited (reason TIME), and accounts whose
day's loss reached the limit are flattened and halted (the kill switch, reason KILL_SWITCH)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bracketflow.adapters.broker import get_broker
from bracketflow.observability import logger, metrics
from bracketflow.services import kill_switch, time_exits


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # The schedule's own time (EventBridge's "time"), so a late or replayed run acts for the minute it was meant for.
    at = _event_time(event)
    timed = time_exits.exit_due_brackets(at)  # first: it needs no broker, so a broker outage never delays it
    tripped = kill_switch.check_daily_loss(get_broker())
    return {"time_exits": timed, "kill_switch": tripped}


def _event_time(event: Any) -> datetime | None:
    raw = event.get("time") if isinstance(event, dict) else None
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00")) if raw else None
    except ValueError:
        return None
