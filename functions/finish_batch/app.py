"""FinishBatch (batch saga task), two steps of settling the batch:

step "settle" (after placing): PLACED / PARTIAL / FAILED, or ROLLING_BACK with the legs to undo in reverse order
  -> {"rollback": bool, "rollback_legs": [n, ...]}
step "finish" (after rolling back): ROLLED_BACK, or FAILED with an alarm metric if a compensation gave up
  -> {"batch_id", "status"}
"""

from __future__ import annotations

from typing import Any

from bracketflow.observability import logger, metrics, tracer
from bracketflow.schemas.batch import FinishTask
from bracketflow.services.batch import finish_batch, settle_placements


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    task = FinishTask.model_validate(event)
    if task.step == "settle":
        return settle_placements(task.batch_id, task.outcomes)
    return finish_batch(task.batch_id, task.outcomes)
