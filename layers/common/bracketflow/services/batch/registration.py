"""A batch's POST: its idempotency key, its registration (batch + legs + event in one transaction, then the saga
started) and the answer, held until the batch is final when the caller asks to wait."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from bracketflow.adapters.dynamo.batches import (
    BatchIdKey,
    BatchIdTaken,
    BatchRepository,
    event_item,
    leg_item,
    now_iso,
    state_item,
)
from bracketflow.adapters.sfn import WorkflowNotStarted, start_batch_workflow
from bracketflow.contracts import BatchWorkflowInput
from bracketflow.domain.accounts import Caller
from bracketflow.domain.ids import new_batch_id
from bracketflow.errors import Conflict, NotFound, ValidationFailed
from bracketflow.observability import logger, metrics
from bracketflow.services.batch.legs import BatchLeg, leg_tag, validate_legs
from bracketflow.services.batch.statuses import FAILED, IN_PROGRESS, LEG_CREATED
from bracketflow.services.batch.views import get_batch, is_final, wait_for_batch
from bracketflow.services.register_bracket import check_placement_rate
from bracketflow.settings import get_settings

_CLIENT_BATCH_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def parse_client_batch_id(body_value: Any, header_value: Any = None) -> str | None:
    """The batch's idempotency key from the body's client_batch_id or the Idempotency-Key header (one, or both equal).

    1..128 characters of letters, digits and _ . : - (a UUID fits); anything else is a 400 naming the field.
    """
    given = {name: v for name, v in (("client_batch_id", body_value), ("Idempotency-Key", header_value)) if v}
    values = {str(v).strip() for v in given.values()}
    if not values:
        return None
    if len(values) > 1:
        raise ValidationFailed("client_batch_id and the Idempotency-Key header differ: send one, or the same value")
    value = values.pop()
    if not _CLIENT_BATCH_ID.fullmatch(value):
        name = " / ".join(given)
        raise ValidationFailed(f"{name}: 1 to 128 characters of letters, digits, '_', '.', ':' or '-', got {value!r}")
    return value


def batch_request_hash(legs: Sequence[BatchLeg], rollback_on_failure: bool) -> str:
    """What makes two batch requests "the same": the validated legs in order and rollback_on_failure (not `wait`)."""

    def text(value: Any) -> str | None:  # 228.650 and 228.65 are one price
        return None if value is None else f"{value.normalize():f}" if isinstance(value, Decimal) else str(value)

    canonical = {
        "rollback_on_failure": bool(rollback_on_failure),
        "orders": [{name: text(value) for name, value in vars(leg).items()} for leg in legs],
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def _now_s() -> int:
    return int(time.time())


def _earlier_batch(caller: Caller, client_batch_id: str, digest: str, now_s: int) -> dict[str, Any] | None:
    """The batch a live client_batch_id names, if this is a resend of it; Conflict if it named another batch."""
    held = BatchRepository().batch_id_key(caller.account_id, client_batch_id, now_s)
    if held is None:
        return None  # expired between our write and this read: take it again
    if held.get("request_hash") != digest:
        raise Conflict(
            f"client_batch_id {client_batch_id!r} was already used for a different batch ({held['batch_id']}):"
            " use a new id for a new batch"
        )
    metrics.add_metric(name="DuplicateBatches", unit="Count", value=1)
    logger.info("resent batch answered with the original", extra={"batch_id": held["batch_id"]})
    return {**get_batch(caller, str(held["batch_id"])), "duplicate": True}


def register_batch(
    caller: Caller,
    orders: Sequence[Mapping[str, Any]],
    rollback_on_failure: bool,
    client_batch_id: str | None = None,
) -> dict[str, Any]:
    """Validate, record (batch + legs + BatchRegistered in one transaction), start the saga; the batch view.

    Bad input raises ValidationFailed before anything is written. If the saga cannot be started the batch is
    recorded FAILED (nothing was sent to the broker) and returned as such. With a client_batch_id the view carries
    "duplicate": false for a new batch, or is the earlier batch's view with "duplicate": true for a resend.
    """
    legs = validate_legs(orders)
    batch_id = new_batch_id()
    account_id = caller.account_id
    created_at = now_iso()
    repo = BatchRepository()
    state = state_item(
        batch_id,
        account_id,
        {
            "status": IN_PROGRESS,
            "rollback_on_failure": bool(rollback_on_failure),
            "total_orders": len(legs),
            "created_at": created_at,
            "updated_at": created_at,
            "client_batch_id": client_batch_id,
        },
    )
    leg_items = [
        leg_item(
            batch_id,
            account_id,
            n,
            {
                "tradingsymbol": leg.tradingsymbol,
                "exchange": leg.exchange.value,
                "transaction_type": leg.transaction_type.value,
                "quantity": leg.quantity,
                "order_type": leg.order_type.value,
                "product": leg.product.value,
                "price": leg.price,
                "trigger_price": leg.trigger_price,
                "validity": leg.validity,
                "tag": leg_tag(batch_id, n),
                "status": LEG_CREATED,
                "filled_quantity": 0,
                "updated_at": created_at,
            },
        )
        for n, leg in enumerate(legs, start=1)
    ]
    registered = event_item(
        batch_id,
        account_id,
        "BatchRegistered",
        {"total_orders": len(legs), "rollback_on_failure": bool(rollback_on_failure)},
    )
    if client_batch_id is None:
        repo.create(state, leg_items, registered)
    else:
        digest = batch_request_hash(legs, rollback_on_failure)
        window = get_settings().client_batch_id_window_s
        for _attempt in range(3):
            now_s = _now_s()
            try:
                repo.create(
                    state, leg_items, registered, BatchIdKey(account_id, client_batch_id, digest, now_s, window)
                )
                break
            except BatchIdTaken:
                earlier = _earlier_batch(caller, client_batch_id, digest, now_s)
                if earlier is not None:
                    return earlier
        else:
            raise Conflict("the batch collided with a concurrent one using the same client_batch_id; send it again")
    metrics.add_metric(name="BatchesRegistered", unit="Count", value=1)
    start = BatchWorkflowInput.for_batch(batch_id, account_id, rollback_on_failure, len(legs))
    try:
        start_batch_workflow(batch_id, start.to_dict())
    except WorkflowNotStarted as exc:
        logger.error("batch workflow did not start", extra={"batch_id": batch_id, "error": str(exc)})
        metrics.add_metric(name="WorkflowStartFailures", unit="Count", value=1)
        repo.update_state(
            batch_id,
            {
                "status": FAILED,
                "message": "the batch could not be started; nothing was sent to the broker",
                "completed_at": now_iso(),
                "updated_at": now_iso(),
            },
            when=("status", (IN_PROGRESS,)),
            event=event_item(batch_id, account_id, "BatchNotStarted", {"error": str(exc)}),
        )
    view = get_batch(caller, batch_id)
    return view if client_batch_id is None else {**view, "duplicate": False}


def place_batch(
    caller: Caller,
    orders: Sequence[Mapping[str, Any]],
    rollback_on_failure: bool,
    *,
    wait: bool = False,
    account_id: str | None = None,
    client_batch_id: str | None = None,
) -> dict[str, Any]:
    """The POST: register and start the batch; with wait, hold the answer until it is final (or the wait ends).

    account_id (the alias route's path) must be the caller's own account: any other looks like a missing one.
    client_batch_id (already parsed: parse_client_batch_id) makes a resend answer the first batch ("duplicate").
    The answer always says "duplicate" (false for a batch recorded by this call).
    """
    if account_id is not None and account_id != caller.account_id:
        raise NotFound(f"account {account_id} not found")
    # The key's placement limit (PLACEMENT_RATE_LIMIT_PER_SECOND) counts a batch as one placing request, like a
    # bracket: a runaway script cannot place batches faster than brackets. Invalid legs and a resend (answered as
    # one) are settled first and spend nothing.
    legs = validate_legs(orders)
    if client_batch_id is not None:
        earlier = _earlier_batch(caller, client_batch_id, batch_request_hash(legs, rollback_on_failure), _now_s())
        if earlier is not None:
            return _held_for(earlier, caller, wait)
    check_placement_rate(caller, what="placement requests (brackets or batches)")
    view = register_batch(caller, orders, rollback_on_failure, client_batch_id)
    return _held_for(view, caller, wait)


def _held_for(view: dict[str, Any], caller: Caller, wait: bool) -> dict[str, Any]:
    duplicate = bool(view.get("duplicate"))
    if wait and not is_final(view):
        view = wait_for_batch(caller, view["batch_id"])
    return {**view, "duplicate": duplicate}
