"""Reconcile workflow task TakeSnapshot: the broker's orders, positions and GTTs once per run, and the open brackets."""

from __future__ import annotations

from typing import Any

from bracketflow.observability import logger, metrics
from bracketflow.services.reconcile import take_snapshot


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return take_snapshot()
