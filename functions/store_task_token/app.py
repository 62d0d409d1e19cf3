"""WaitForEntryFill / WaitForExit: keep the workflow's task token on the bracket, then look once more."""

from __future__ import annotations

from typing import Any

from bracketflow.observability import logger, metrics
from bracketflow.services.lifecycle import store_entry_token, store_exit_token


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """{"bracket_id", "token", "wait": "ENTRY" | "EXIT"}; the task completes when the token is sent back."""
    store = store_exit_token if event.get("wait") == "EXIT" else store_entry_token
    return store(str(event["bracket_id"]), str(event["token"]))
