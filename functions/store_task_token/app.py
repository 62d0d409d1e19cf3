"""WaitForEntryFill / WaitForEntryRest / WaitForExit: keep the workflow's task token on the bracket, then look once
more."""

from __future__ import annotations

from typing import Any

from bracketflow.observability import logger, metrics
from bracketflow.services.lifecycle import store_entry_rest_token, store_entry_token, store_exit_token

_STORES = {"EXIT": store_exit_token, "ENTRY_REST": store_entry_rest_token}


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """{"bracket_id", "token", "wait": "ENTRY" | "ENTRY_REST" | "EXIT"}; the task completes when the token is sent
    back."""
    store = _STORES.get(str(event.get("wait")), store_entry_token)
    return store(str(event["bracket_id"]), str(event["token"]))
