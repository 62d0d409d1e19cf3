"""Reconcile workflow task Summarize: repairs counted, orphan GTTs reported (cancelled when configured), metrics."""

from __future__ import annotations

from typing import Any

from bracketflow.observability import logger, metrics
from bracketflow.services.reconcile import summarize


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return summarize(str(event["run_id"]), list(event.get("results") or []))
