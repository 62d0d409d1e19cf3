"""Reconcile workflow task ReconcileBracket: compare one open bracket with the run's broker snapshot and repair it.

Input {"run_id", "bracket_id"}; output {"bracket_id", "status", "repair", "detail"}.
"""

from __future__ import annotations

from typing import Any

from bracketflow.observability import logger, metrics
from bracketflow.services.reconcile import reconcile_bracket


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return reconcile_bracket(str(event["run_id"]), str(event["bracket_id"]))
