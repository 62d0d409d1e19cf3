"""EmergencyExit: protection could not be placed, so the filled quantity is flattened at market (docs/reliability.md).

A MARKET order on the exit side for the filled quantity, with market_protection (Kite requires it for MARKET orders
from April 2026), tagged order_tag(bracket, EXIT). The broker's book is searched for that tag first, so a retry after
a lost answer adopts the order already placed instead of flattening twice. The bracket goes ENTRY_FILLED ->
EXITING with exit_reason EMERGENCY, its ProtectionFailed and EmergencyExitPlaced events in the same write, and the
EmergencyExits metric (alarmed in template.yaml) counts it. WaitForExit then waits for the exit's fill. The rest of
an entry that still works (part of it filled) is cancelled first, and the final filled quantity is flattened.

The same flatten serves the trader's DELETE of a bracket whose entry had (partly) filled (ExitCancelledFill in the
workflow): exit_reason MANUAL, recorded as ExitRequested + ExitPlaced, with no ProtectionFailed and no alarm.
"""

from __future__ import annotations

from typing import Any

from bracketflow.adapters.broker import get_broker
from bracketflow.adapters.broker.port import OrderRequest
from bracketflow.adapters.dynamo import lifecycle as store
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.domain.bracket import Bracket, LegOrder
from bracketflow.domain.enums import BracketStatus, ExitReason, LegRole, OrderStatus
from bracketflow.domain.events import EmergencyExitPlaced, ExitPlaced, ExitRequested, ProtectionFailed
from bracketflow.domain.ids import BrokerOrderId, order_tag
from bracketflow.errors import InvalidStateTransition
from bracketflow.observability import logger, metrics
from bracketflow.services.lifecycle import event, load, retrying
from bracketflow.services.working_entry import settle_before_exit
from bracketflow.settings import get_settings


def exit_request(bracket: Bracket, quantity: int) -> OrderRequest:
    spec = bracket.spec
    return OrderRequest(
        exchange=spec.exchange.value,
        tradingsymbol=spec.symbol,
        transaction_type=spec.exit_action.value,
        quantity=quantity,
        product=spec.product.value,
        order_type="MARKET",
        tag=order_tag(bracket.id, LegRole.EXIT.value),
        market_protection=get_settings().broker_market_protection,
    )


def emergency_exit(bracket_id: str, reason: str, exit_reason: ExitReason = ExitReason.EMERGENCY) -> dict[str, Any]:
    """Flatten the filled quantity; returns {"broker_order_id", "quantity", "status"}. Safe to repeat."""
    bracket = load(bracket_id)
    if bracket.exit is not None and bracket.exit.broker_order_id and bracket.status is not BracketStatus.ENTRY_FILLED:
        # Someone already exits it (an earlier attempt of ours, or the exit Lambda): wait for that exit.
        return _result(bracket)
    if bracket.status is not BracketStatus.ENTRY_FILLED:
        raise InvalidStateTransition("bracket", bracket.status.value, f"{BracketStatus.EXITING.value} (emergency)")
    if bracket.entry_working:
        bracket = settle_before_exit(bracket_id)  # the rest of the entry must not fill after the flatten
    quantity = bracket.entry.filled_quantity
    req = exit_request(bracket, quantity)
    assert req.tag is not None
    # The tag map before the order, with what the watcher needs to record this exit itself should the order's
    # COMPLETE reach it before _record below (reason, message, quantity).
    store.put_order_tag_map(
        req.tag, bracket, LegRole.EXIT.value, exit_reason=exit_reason, message=reason, quantity=quantity
    )
    broker = get_broker()
    earlier = [o for o in broker.find_orders_by_tag(req.tag) if o.status != "REJECTED"]
    order_id: BrokerOrderId = earlier[0].order_id if earlier else broker.place_order(req)
    if exit_reason is ExitReason.EMERGENCY:
        metrics.add_metric(name="EmergencyExits", unit="Count", value=1)
        logger.error(
            "protection failed: position flattened at market",
            extra={"bracket_id": bracket_id, "order_id": order_id, "quantity": quantity, "reason": reason},
        )
    else:
        logger.info("filled entry exited at market", extra={"bracket_id": bracket_id, "order_id": order_id})
    return _result(_record(bracket_id, order_id, quantity, reason, exit_reason))


def record_exit_seen(bracket_id: str, order_id: str, tag_map: dict[str, Any]) -> Bracket:
    """The watcher matched an update of this flatten by its tag (TAG map written by emergency_exit above) before the
    order id was recorded: record it exactly as emergency_exit does. Only an ENTRY_FILLED bracket moves, so whichever
    of the two comes second writes nothing and both orders of arrival end in the same state."""
    return _record(
        bracket_id,
        order_id,
        int(tag_map.get("quantity") or 0),
        str(tag_map.get("message") or ""),
        ExitReason(tag_map["exit_reason"]),
    )


def _record(bracket_id: str, order_id: str, quantity: int, reason: str, exit_reason: ExitReason) -> Bracket:
    repo = BracketRepository()

    def step(b: Bracket) -> Bracket | None:
        if b.status is not BracketStatus.ENTRY_FILLED:
            return None
        leg = LegOrder(
            role=LegRole.EXIT,
            status=OrderStatus.SENT_TO_BROKER,
            broker_order_id=BrokerOrderId(order_id),
            quantity=quantity,
        )
        nxt = b.transition(BracketStatus.EXITING, exit=leg, exit_reason=exit_reason)
        if exit_reason is ExitReason.EMERGENCY:
            evs = [
                event(ProtectionFailed, nxt, message=reason),
                event(EmergencyExitPlaced, nxt, broker_order_id=order_id, quantity=quantity, reason=reason),
            ]
        else:
            evs = [
                event(ExitRequested, nxt, reason=exit_reason, by="user", message=reason),
                event(ExitPlaced, nxt, broker_order_id=order_id, reason=exit_reason, quantity=quantity),
            ]
        repo.save(
            b,
            nxt,
            evs,
            legs=[store.leg_put(nxt, leg), store.broker_order_map_item(order_id, nxt, LegRole.EXIT.value)],
        )
        return nxt

    return retrying(bracket_id, step)


def _result(bracket: Bracket) -> dict[str, Any]:
    leg = bracket.exit
    return {
        "broker_order_id": None if leg is None else leg.broker_order_id,
        "quantity": 0 if leg is None else leg.quantity,
        "status": bracket.status.value,
    }
