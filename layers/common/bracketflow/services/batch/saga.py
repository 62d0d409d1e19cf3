"""The batch saga's steps (statemachine/batch.asl.json): place a leg, settle the placements, roll a leg back, finish.

Every step is idempotent: a leg's order is found by its deterministic tag before anything is placed, and every leg
change is a conditional write with its audit event, so a rerun records nothing twice and places nothing new.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from bracketflow.adapters.broker import get_broker
from bracketflow.adapters.broker.port import OrderReport, OrderRequest
from bracketflow.adapters.dynamo.batches import BatchRepository, event_item, now_iso
from bracketflow.errors import BrokerError, BrokerRejected, NotFound
from bracketflow.observability import logger, metrics
from bracketflow.services.batch.legs import square_off_tag
from bracketflow.services.batch.statuses import (
    FAILED,
    IN_PROGRESS,
    LEG_CANCELLED,
    LEG_CREATED,
    LEG_FAILED,
    LEG_PLACED,
    LEG_SQUARED_OFF,
    PARTIAL,
    PLACED,
    ROLLBACK_DONE,
    ROLLBACK_GAVE_UP,
    ROLLBACK_NOT_NEEDED,
    ROLLED_BACK,
    ROLLING_BACK,
)


class LegStillOpen(BrokerError):
    """A cancel was sent but the order is not closed yet; the saga retries the compensation."""

    status_code = 503


class SquareOffRejected(BrokerError):
    """The square-off order was rejected or cancelled by the broker; the saga retries (a new order, same tag)."""

    status_code = 503


def _latest(broker: Any, order_id: str) -> OrderReport | None:
    history = broker.order_history(order_id)
    return history[-1] if history else None


def _by_tag(broker: Any, tag: str, *, usable_only: bool = False) -> OrderReport | None:
    """The newest order carrying our tag (usable_only: ignoring REJECTED/CANCELLED ones that filled nothing)."""
    found = broker.find_orders_by_tag(tag)
    if usable_only:
        found = [o for o in found if not (o.status in ("REJECTED", "CANCELLED") and o.filled_quantity == 0)]
    return found[-1] if found else None


def _fill_fields(report: OrderReport | None) -> dict[str, Any]:
    if report is None:
        return {}
    return {
        "broker_status": report.status,
        "filled_quantity": report.filled_quantity,
        "average_price": report.average_price if report.average_price else None,
    }


def _leg_result(leg: Mapping[str, Any]) -> dict[str, Any]:
    """What a task returns to the saga (small: the execution history keeps it)."""
    return {
        "leg": int(leg["leg"]),
        "status": leg["status"],
        "placed": leg["status"] in (LEG_PLACED, LEG_CANCELLED, LEG_SQUARED_OFF),
        "order_id": leg.get("order_id"),
        "rollback": leg.get("rollback"),
    }


def _require_leg(repo: BatchRepository, batch_id: str, leg: int) -> dict[str, Any]:
    found = repo.leg(batch_id, leg)
    if found is None:
        raise NotFound(f"batch {batch_id} has no leg {leg}")
    return found


def place_leg(batch_id: str, leg_no: int) -> dict[str, Any]:
    """Place one leg. A rerun finds the leg recorded (or its order by tag) and places nothing new.

    A broker rejection (at the call, or an order that comes back REJECTED) makes the leg FAILED. Errors that
    leave the outcome unknown (timeouts, 5xx, rate limits) raise after the adapter's own look-up by tag, for the
    saga to retry.
    """
    repo = BatchRepository()
    leg = _require_leg(repo, batch_id, leg_no)
    if leg["status"] != LEG_CREATED:
        return _leg_result(leg)
    state = repo.get(batch_id)
    if state is None or state["status"] != IN_PROGRESS:
        # A late duplicate run after the batch settled (or began rolling back) must not open a new position.
        return _record_leg_failed(repo, leg, "not placed: the batch had already settled", order_id=None)
    broker = get_broker()
    report = _by_tag(broker, leg["tag"])
    if report is None:
        request = OrderRequest(
            exchange=leg["exchange"],
            tradingsymbol=leg["tradingsymbol"],
            transaction_type=leg["transaction_type"],
            quantity=int(leg["quantity"]),
            product=leg["product"],
            order_type=leg["order_type"],
            price=None if leg.get("price") is None else Decimal(str(leg["price"])),
            trigger_price=None if leg.get("trigger_price") is None else Decimal(str(leg["trigger_price"])),
            validity=leg.get("validity") or "DAY",
            tag=leg["tag"],
        )
        try:
            order_id = broker.place_order(request)
        except BrokerRejected as exc:
            return _record_leg_failed(repo, leg, exc.message, order_id=None)
        try:
            report = _latest(broker, order_id)
        except BrokerError as exc:  # placed; its state is read again when the batch settles
            logger.warning("placed leg's status unknown", extra={"batch_id": batch_id, "error": exc.message})
            report = None
        if report is None:
            return _record_leg_placed(repo, leg, order_id, None)
    if report.status == "REJECTED":
        return _record_leg_failed(repo, leg, report.status_message or "rejected by the broker", report.order_id)
    return _record_leg_placed(repo, leg, report.order_id, report)


def _record_leg_placed(
    repo: BatchRepository, leg: Mapping[str, Any], order_id: str, report: OrderReport | None
) -> dict[str, Any]:
    batch_id, n = leg["batch_id"], int(leg["leg"])
    changes = {"status": LEG_PLACED, "order_id": str(order_id), "updated_at": now_iso(), **_fill_fields(report)}
    event = event_item(
        batch_id,
        leg["account_id"],
        "BatchLegPlaced",
        {"leg": n, "order_id": str(order_id), "broker_status": None if report is None else report.status},
    )
    repo.update_leg(batch_id, n, changes, when=("status", (LEG_CREATED,)), event=event)
    return _leg_result(_require_leg(repo, batch_id, n))


def _record_leg_failed(
    repo: BatchRepository, leg: Mapping[str, Any], message: str, order_id: str | None
) -> dict[str, Any]:
    batch_id, n = leg["batch_id"], int(leg["leg"])
    changes = {"status": LEG_FAILED, "message": message[:500], "updated_at": now_iso()}
    if order_id is not None:
        changes |= {"order_id": str(order_id), "broker_status": "REJECTED"}
    event = event_item(batch_id, leg["account_id"], "BatchLegFailed", {"leg": n, "reason": message[:500]})
    repo.update_leg(batch_id, n, changes, when=("status", (LEG_CREATED,)), event=event)
    metrics.add_metric(name="BatchLegsFailed", unit="Count", value=1)
    return _leg_result(_require_leg(repo, batch_id, n))


def _error_text(outcome: Mapping[str, Any]) -> str:
    error = outcome.get("error") or {}
    if isinstance(error, Mapping):
        return f"could not be placed: {error.get('Error', 'error')}: {str(error.get('Cause', ''))[:300]}"
    return "could not be placed"


def settle_placements(batch_id: str, outcomes: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """After the placement Map: decide the batch's fate.

    Legs still CREATED are those the Map gave up on (their outcome carries the error): they become FAILED.
    Placed legs' broker status is read once more (Kite may reject after accepting). Then:
    - no failed leg: PLACED; failed legs and rollback off: PARTIAL (FAILED if nothing was placed);
    - failed legs and rollback on: ROLLING_BACK, and the answer lists every leg in reverse order to compensate
      (failed legs too: a leg whose placement failed ambiguously may still surface at the broker by its tag).
    """
    repo = BatchRepository()
    batch = repo.get(batch_id)
    if batch is None:
        raise NotFound(f"batch {batch_id} not found")
    errors = {int(o["leg"]): o for o in outcomes if isinstance(o, Mapping) and o.get("leg") is not None}
    broker = None
    for leg in repo.legs(batch_id):
        n = int(leg["leg"])
        if leg["status"] == LEG_CREATED:
            _record_leg_failed(repo, leg, _error_text(errors.get(n, {})), order_id=None)
        elif leg["status"] == LEG_PLACED and leg.get("order_id") and batch["status"] == IN_PROGRESS:
            broker = broker or get_broker()
            try:
                report = _latest(broker, leg["order_id"])
            except BrokerError:
                continue
            if report is not None and report.status == "REJECTED" and report.filled_quantity == 0:
                _reject_placed_leg(repo, leg, report)
            elif report is not None:
                repo.update_leg(batch_id, n, _fill_fields(report), when=("status", (LEG_PLACED,)), event=None)
    legs = repo.legs(batch_id)
    failed = [leg for leg in legs if leg["status"] == LEG_FAILED]
    placed = [leg for leg in legs if leg["status"] == LEG_PLACED]
    if batch["status"] == ROLLING_BACK or (
        failed and batch.get("rollback_on_failure") and batch["status"] == IN_PROGRESS
    ):
        repo.update_state(
            batch_id,
            {"status": ROLLING_BACK, "updated_at": now_iso()},
            when=("status", (IN_PROGRESS,)),
            event=event_item(
                batch_id,
                batch["account_id"],
                "BatchRollbackStarted",
                {
                    "failed_legs": [int(leg["leg"]) for leg in failed],
                    "placed_legs": [int(leg["leg"]) for leg in placed],
                },
            ),
        )
        metrics.add_metric(name="BatchRollbacks", unit="Count", value=1)
        return {"rollback": True, "rollback_legs": sorted((int(leg["leg"]) for leg in legs), reverse=True)}
    if batch["status"] == IN_PROGRESS:
        status = PLACED if not failed else (PARTIAL if placed else FAILED)
        _finish(repo, batch, status, None)
    return {"rollback": False, "rollback_legs": []}


def _reject_placed_leg(repo: BatchRepository, leg: Mapping[str, Any], report: OrderReport) -> None:
    batch_id, n = leg["batch_id"], int(leg["leg"])
    message = report.status_message or "rejected by the broker"
    repo.update_leg(
        batch_id,
        n,
        {"status": LEG_FAILED, "broker_status": "REJECTED", "message": message[:500], "updated_at": now_iso()},
        when=("status", (LEG_PLACED,)),
        event=event_item(batch_id, leg["account_id"], "BatchLegFailed", {"leg": n, "reason": message[:500]}),
    )


def rollback_leg(batch_id: str, leg_no: int) -> dict[str, Any]:
    """Compensate one leg: cancel it if open, square off what filled. Idempotent; raises to be retried.

    A leg already compensated returns its record without a broker call. The leg's order is found by its id or, if
    it never got one, by its tag. An open order is cancelled (an already cancelled one counts as done); if any
    quantity had filled, an opposite MARKET order (with market protection) for exactly the filled quantity closes
    it, tagged square_off_tag so a retry finds that order instead of placing a second one.
    """
    repo = BatchRepository()
    leg = _require_leg(repo, batch_id, leg_no)
    if leg.get("rollback") in (ROLLBACK_DONE, ROLLBACK_NOT_NEEDED):
        return _leg_result(leg)
    broker = get_broker()
    order = _latest(broker, leg["order_id"]) if leg.get("order_id") else _by_tag(broker, leg["tag"])
    if order is None:
        if leg.get("order_id"):
            raise LegStillOpen(f"leg {leg_no} order {leg['order_id']} is not visible at the broker yet; retrying")
        return _record_rollback(repo, leg, None, ROLLBACK_NOT_NEEDED, "NONE", leg["status"], None, 0)
    never_live = order.status == "REJECTED" or (order.is_terminal and leg["status"] == LEG_FAILED)
    if never_live and order.filled_quantity == 0:
        return _record_rollback(repo, leg, order, ROLLBACK_NOT_NEEDED, "NONE", LEG_FAILED, None, 0)
    cancelled = False
    if not order.is_terminal:
        try:
            broker.cancel_order(order.order_id, order.variety or "regular")
            cancelled = True
        except BrokerRejected:
            pass  # it filled (or was cancelled) meanwhile: the history below says which
        order = _latest(broker, order.order_id)
        if order is None or not order.is_terminal:
            raise LegStillOpen(f"leg {leg_no} order is still open after the cancel; retrying")
    filled = int(order.filled_quantity)
    if filled == 0:
        return _record_rollback(repo, leg, order, ROLLBACK_DONE, "CANCEL", LEG_CANCELLED, None, 0)
    square_off = _by_tag(broker, square_off_tag(batch_id, leg_no), usable_only=True)
    if square_off is None:
        opposite = "SELL" if leg["transaction_type"] == "BUY" else "BUY"
        request = OrderRequest(
            exchange=leg["exchange"],
            tradingsymbol=leg["tradingsymbol"],
            transaction_type=opposite,
            quantity=filled,
            product=leg["product"],
            order_type="MARKET",
            tag=square_off_tag(batch_id, leg_no),
        )
        square_off_id = broker.place_order(request)
        square_off = _latest(broker, square_off_id)
        if square_off is None:
            raise SquareOffRejected(f"leg {leg_no}: square-off {square_off_id} not visible yet; retrying")
    if square_off.status in ("REJECTED", "CANCELLED") and square_off.filled_quantity == 0:
        raise SquareOffRejected(
            f"leg {leg_no}: square-off {square_off.order_id} was {square_off.status}"
            f" ({square_off.status_message or 'no reason given'}); retrying"
        )
    action = "CANCEL_AND_SQUARE_OFF" if cancelled or order.status == "CANCELLED" else "SQUARE_OFF"
    return _record_rollback(repo, leg, order, ROLLBACK_DONE, action, LEG_SQUARED_OFF, str(square_off.order_id), filled)


def _record_rollback(
    repo: BatchRepository,
    leg: Mapping[str, Any],
    order: OrderReport | None,
    outcome: str,
    action: str,
    leg_status: str,
    square_off_order_id: str | None,
    quantity: int,
) -> dict[str, Any]:
    batch_id, n = leg["batch_id"], int(leg["leg"])
    changes: dict[str, Any] = {
        "rollback": outcome,
        "rollback_action": action,
        "status": leg_status,
        "updated_at": now_iso(),
        **_fill_fields(order),
    }
    if order is not None and not leg.get("order_id"):
        changes["order_id"] = str(order.order_id)  # an ambiguous placement that surfaced by its tag
    if square_off_order_id is not None:
        changes |= {"rollback_order_id": square_off_order_id, "rollback_quantity": quantity}
    kind = {
        "CANCEL": "BatchLegCancelled",
        "SQUARE_OFF": "BatchLegSquaredOff",
        "CANCEL_AND_SQUARE_OFF": "BatchLegSquaredOff",
    }.get(action, "BatchLegNeedsNoRollback")
    event = event_item(
        batch_id,
        leg["account_id"],
        kind,
        {
            "leg": n,
            "order_id": changes.get("order_id") or leg.get("order_id"),
            "action": action,
            "square_off_order_id": square_off_order_id,
            "quantity": quantity or None,
        },
    )
    repo.update_leg(batch_id, n, changes, when=("rollback", (None, ROLLBACK_GAVE_UP)), event=event)
    return _leg_result(_require_leg(repo, batch_id, n))


def finish_batch(batch_id: str, outcomes: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """After the rollback Map: ROLLED_BACK when every leg is compensated, else FAILED (needs review, alarm)."""
    repo = BatchRepository()
    batch = repo.get(batch_id)
    if batch is None:
        raise NotFound(f"batch {batch_id} not found")
    if batch["status"] != ROLLING_BACK:  # already finished (a rerun): nothing to record twice
        return {"batch_id": batch_id, "status": batch["status"]}
    errors = {int(o["leg"]): o for o in outcomes if isinstance(o, Mapping) and o.get("error")}
    for leg in repo.legs(batch_id):
        n = int(leg["leg"])
        if leg.get("rollback") in (ROLLBACK_DONE, ROLLBACK_NOT_NEEDED):
            continue
        error = errors.get(n, {}).get("error") or {}
        cause = f"{error.get('Error', 'not compensated')}: {str(error.get('Cause', ''))[:300]}"
        repo.update_leg(
            batch_id,
            n,
            {"rollback": ROLLBACK_GAVE_UP, "message": f"rollback gave up: {cause}"[:500], "updated_at": now_iso()},
            when=("rollback", (None,)),
            event=event_item(batch_id, leg["account_id"], "BatchLegRollbackGaveUp", {"leg": n, "reason": cause}),
        )
    legs = repo.legs(batch_id)
    stuck = [int(leg["leg"]) for leg in legs if leg.get("rollback") == ROLLBACK_GAVE_UP]
    if stuck:
        metrics.add_metric(name="BatchRollbackIncomplete", unit="Count", value=1)
        logger.error("batch rollback incomplete", extra={"batch_id": batch_id, "legs": stuck})
        message = f"rollback incomplete for legs {stuck}: check them at the broker (needs review)"
        _finish(repo, batch, FAILED, message, expected=(ROLLING_BACK,))
    else:
        undone = any(leg["status"] in (LEG_CANCELLED, LEG_SQUARED_OFF) for leg in legs)
        _finish(repo, batch, ROLLED_BACK if undone else FAILED, None, expected=(ROLLING_BACK,))
    final = repo.get(batch_id) or batch
    return {"batch_id": batch_id, "status": final["status"]}


def _finish(
    repo: BatchRepository,
    batch: Mapping[str, Any],
    status: str,
    message: str | None,
    expected: tuple[str, ...] = (IN_PROGRESS,),
) -> None:
    at = now_iso()
    legs = repo.legs(batch["batch_id"])
    placed = [leg for leg in legs if leg["status"] in (LEG_PLACED, LEG_CANCELLED, LEG_SQUARED_OFF)]
    repo.update_state(
        batch["batch_id"],
        {"status": status, "completed_at": at, "updated_at": at, "message": message},
        when=("status", expected),
        event=event_item(
            batch["batch_id"],
            batch["account_id"],
            "BatchCompleted",
            {"status": status, "succeeded": len(placed), "failed": len(legs) - len(placed), "message": message},
        ),
    )
    metrics.add_metric(name=f"Batches{status.title().replace('_', '')}", unit="Count", value=1)
