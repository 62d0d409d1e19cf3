"""Scheduled each morning: Kite's instrument list (GET /instruments, ~100k rows) into the stack's bucket, as the
compact master every symbol lookup uses in Kite mode (adapters/instrument_store.py). Paper mode keeps the master
shipped with the package (the paper exchange's own), so there is nothing to download."""

from __future__ import annotations

from typing import Any

from bracketflow.adapters.broker import get_broker
from bracketflow.adapters.instrument_store import store_master
from bracketflow.observability import logger, metrics
from bracketflow.settings import get_settings


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = get_settings()
    if settings.broker != "kite" or not settings.instruments_bucket:
        return {"downloaded": False, "reason": "paper mode keeps the shipped instrument master"}
    rows = store_master(get_broker().instruments_csv(), settings.instruments_bucket)
    logger.info("instrument master stored", extra={"rows": rows})
    return {"downloaded": True, "rows": rows}
