"""Reconcile workflow task ReconcileBracket: compare one open bracket with the run's broker snapshot and repair it.

Input {"run_id", "bracket_id"}; output {"bracket_id", "status", "repair", "detail"}.
Or {"bracket_id", "now": true[, "settle_s"]}, invoked by the watcher when a fill no order of ours made lands on the
bracket's position, or its GTT's order was refused: reconciled at once against the broker's live state (no run, no
snapshot), after `settle_s` seconds (0 to 10; HAND_FILL_SETTLE_S when absent).
"""

from __future__ import annotations

from typing import Any

from bracketflow.observability import logger, metrics
from bracketflow.services.reconcile import reconcile_bracket, reconcile_bracket_now


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event.get("now") is True and "run_id" not in event:
        settle = event.get("settle_s")
        settle_s = min(max(float(settle), 0.0), 10.0) if isinstance(settle, int | float) else None
        return reconcile_bracket_now(str(event["bracket_id"]), settle_s)
    return reconcile_bracket(str(event["run_id"]), str(event["bracket_id"]))
