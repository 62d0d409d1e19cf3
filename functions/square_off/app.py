"""MIS square-off (schedule at 15:15 IST): open intraday brackets exited with reason EOD, unfilled entries cancelled.

The service acts only between the square-off time and the close unless the event says {"force": true}.
"""

from __future__ import annotations

from typing import Any

from bracketflow.observability import logger, metrics
from bracketflow.services.square_off import square_off_mis


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    force = isinstance(event, dict) and event.get("force") is True
    return square_off_mis(force=force)
