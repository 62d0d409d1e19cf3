"""RollbackBatchLeg (batch saga task): compensate one leg — cancel it if open, square off what filled.

{"batch_id", "leg"} in; {"leg", "status", "placed", "order_id", "rollback"} out. Idempotent: a compensated leg is
returned as recorded. Raises while the compensation is not done, for the state machine to retry.
"""

from __future__ import annotations

from typing import Any

from bracketflow.observability import logger, metrics, tracer
from bracketflow.schemas.batch import LegTask
from bracketflow.services.batch import rollback_leg


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    task = LegTask.model_validate(event)
    return rollback_leg(task.batch_id, task.leg)
