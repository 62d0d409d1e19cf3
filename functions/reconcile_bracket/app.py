"""Reconcile workflow task ReconcileBracket: compare one open bracket with the run's broker snapshot and repair it.

Input {"run_id", "bracket_id"}; output {"bracket_id", "status", "repair", "detail"}.
Or {"bracket_id", "now": true}, invoked by the watcher when a fill no order of ours made lands on the bracket's
position: reconciled at once against the broker's live state (no run, no snapshot).
"""

from __future__ import annotations

from typing import Any

from bracketflow.observability import logger, metrics
from bracketflow.services.reconcile import reconcile_bracket, reconcile_bracket_now


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event.get("now") is True and "run_id" not in event:
        return reconcile_bracket_now(str(event["bracket_id"]))
    return reconcile_bracket(str(event["run_id"]), str(event["bracket_id"]))
