"""A batch as the API shows it: the batch, each leg and its compensation; and the wait for a final status."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from bracketflow.adapters.dynamo.batches import BatchRepository
from bracketflow.domain.accounts import Caller
from bracketflow.errors import NotFound
from bracketflow.services.batch.statuses import FINAL_STATUSES, LEG_CANCELLED, LEG_PLACED, LEG_SQUARED_OFF
from bracketflow.settings import get_settings


def _leg_view(leg: Mapping[str, Any]) -> dict[str, Any]:
    rollback = None
    if leg.get("rollback"):
        rollback = {
            "status": leg["rollback"],
            "action": leg.get("rollback_action"),
            "order_id": leg.get("rollback_order_id"),
            "quantity": leg.get("rollback_quantity"),
        }
    return {
        "leg": int(leg["leg"]),
        "tradingsymbol": leg["tradingsymbol"],
        "exchange": leg["exchange"],
        "transaction_type": leg["transaction_type"],
        "quantity": int(leg["quantity"]),
        "order_type": leg["order_type"],
        "product": leg["product"],
        "price": None if leg.get("price") is None else Decimal(str(leg["price"])),
        "trigger_price": None if leg.get("trigger_price") is None else Decimal(str(leg["trigger_price"])),
        "status": leg["status"],
        "order_id": leg.get("order_id"),
        "broker_status": leg.get("broker_status"),
        "filled_quantity": int(leg.get("filled_quantity") or 0),
        "average_price": None if leg.get("average_price") is None else Decimal(str(leg["average_price"])),
        "message": leg.get("message"),
        "rollback": rollback,
    }


def batch_view(batch: Mapping[str, Any], legs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The batch API's response fields, plus the batch status and each leg."""
    placed = [leg for leg in legs if leg["status"] in (LEG_PLACED, LEG_CANCELLED, LEG_SQUARED_OFF)]
    return {
        "account_id": batch["account_id"],
        "batch_id": batch["batch_id"],
        "batch_status": batch["status"],
        "rollback_on_failure": bool(batch.get("rollback_on_failure")),
        "total_orders": int(batch["total_orders"]),
        "succeeded": len(placed),
        "failed": int(batch["total_orders"]) - len(placed),
        "order_ids": [str(leg["order_id"]) for leg in placed],
        "created_at": batch["created_at"],
        "completed_at": batch.get("completed_at"),
        "message": batch.get("message"),
        "client_batch_id": batch.get("client_batch_id"),
        "legs": [_leg_view(leg) for leg in sorted(legs, key=lambda leg: int(leg["leg"]))],
    }


def get_batch(caller: Caller, batch_id: str, *, with_events: bool = False) -> dict[str, Any]:
    """The batch, if it is the caller's; another account's batch is NotFound exactly like a missing one."""
    repo = BatchRepository()
    batch = repo.get(batch_id) if isinstance(batch_id, str) and batch_id.startswith("bt_") else None
    if batch is None or batch.get("account_id") != caller.account_id:
        raise NotFound(f"batch {batch_id} not found")
    view = batch_view(batch, repo.legs(batch_id))
    if with_events:
        view["events"] = repo.events(batch_id)
    return view


def is_final(view: Mapping[str, Any]) -> bool:
    return view.get("batch_status") in FINAL_STATUSES


def wait_for_batch(
    caller: Caller,
    batch_id: str,
    seconds: float | None = None,
    *,
    poll_s: float = 0.2,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll the batch until it is final or `seconds` (BATCH_WAIT_SECONDS, default 5) pass; the latest view."""
    limit = get_settings().batch_wait_s if seconds is None else seconds
    deadline = clock() + max(0.0, limit)
    view = get_batch(caller, batch_id)
    while not is_final(view) and clock() < deadline:
        sleep(poll_s)
        view = get_batch(caller, batch_id)
    return view
