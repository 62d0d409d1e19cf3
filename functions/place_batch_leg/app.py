"""PlaceBatchLeg (batch saga task): place one leg through the rate-limited broker; {"batch_id", "leg"} in.

Returns {"leg", "status", "placed", "order_id", "rollback"}. Raises the broker's named errors (BrokerTimeout,
BrokerUnavailable, RateLimited ...) for the state machine's Retry; a rerun never places a second order.
"""

from __future__ import annotations

from typing import Any

from bracketflow.observability import logger, metrics, tracer
from bracketflow.schemas.batch import LegTask
from bracketflow.services.batch import place_leg


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    task = LegTask.model_validate(event)
    return place_leg(task.batch_id, task.leg)
