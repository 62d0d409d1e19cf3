"""EmergencyExit: protection could not be placed, so the filled quantity is flattened at market (docs/reliability.md).

A MARKET order on the exit side for the filled quantity, with market_protection (Kite requires it for MARKET orders
from April 2026), tagged order_tag(bracket, EXIT). The broker's book is searched for that tag first, so a retry after
a lost answer adopts the order already placed instead of flattening twice. The bracket goes ENTRY_FILLED ->
EXITING with exit_reason EMERGENCY, its ProtectionFailed and EmergencyExitPlaced events in the same write, and the
EmergencyExits metric (alarmed in template.yaml) counts it. WaitForExit then waits for the exit's fill. The rest of
an entry that still works (part of it filled) is cancelled first, and the final filled quantity is flattened.

A GTT an earlier PlaceProtection attempt created without recording it (its answer lost, its Lambda timed out) would
outlive the flattened position and later fire into a flat account, opening a reverse one. So the GTTs that may
protect this fill (services/protect.py leftover_gtts) are deleted before flattening when the broker's GTT list can be
read (the flatten never waits for it), and again after it, where a failure to read or delete fails the step so the
workflow's retry sweeps once more; a retry that finds the flatten already placed only sweeps. The broker may list a
new GTT only seconds after creating it, so an emergency flatten sweeps once more when BROKER_LOOKUP_WINDOW_S has
passed since the flatten was recorded (the position is already flat by then: this wait delays nothing that protects
it); a retry after an attempt that died before that sweep (a Lambda timeout right after the broker placed the
flatten) waits what is left of the window and sweeps then, before the workflow can close the bracket.
Such a GTT may even have fired already (the market went through its stop): then its order is the exit, and the
bracket is recorded PROTECTED by it instead of being flattened a second time (protect.adopt_fired_twin); when the
GTT list cannot be read, the flatten goes ahead (an open position waits for nothing), unless the order book shows an
order like the one such a GTT would place: then the step fails and is retried until the GTTs can be read, since a
flatten as well would open a reverse position.

The same flatten serves the trader's DELETE of a bracket whose entry had (partly) filled (ExitCancelledFill in the
workflow): exit_reason MANUAL, recorded as ExitRequested + ExitPlaced, with no ProtectionFailed and no alarm.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from bracketflow.adapters.broker import get_broker
from bracketflow.adapters.broker.port import BrokerPort, OrderRequest
from bracketflow.adapters.dynamo import lifecycle as store
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.domain.bracket import Bracket, LegOrder
from bracketflow.domain.enums import BracketStatus, ExitReason, LegRole, OrderStatus
from bracketflow.domain.events import EmergencyExitPlaced, ExitPlaced, ExitRequested, ProtectionFailed
from bracketflow.domain.ids import BrokerOrderId, order_tag
from bracketflow.errors import BrokerError, BrokerUnavailable, InvalidStateTransition
from bracketflow.observability import logger, metrics
from bracketflow.services.lifecycle import event, load, requested_exit_reason, retrying, utc_now
from bracketflow.services.protect import adopt_fired_twin, delete_leftover_gtts, sweep_request
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
    if exit_reason is ExitReason.MANUAL:  # a cancel asked for by a signal, a time exit or the kill switch says why
        exit_reason = requested_exit_reason(bracket_id) or exit_reason
    bracket = load(bracket_id)
    if bracket.exit is not None and bracket.exit.broker_order_id and bracket.status is not BracketStatus.ENTRY_FILLED:
        # Someone already exits it (an earlier attempt of ours, or the exit Lambda): wait for that exit, with no GTT
        # of ours left behind (an earlier attempt may have failed on the sweep after its flatten, or died before it).
        delete_leftover_gtts(bracket)
        if bracket.exit_reason is ExitReason.EMERGENCY:
            _sweep_after_listing_window(bracket)
        return _result(bracket)
    if bracket.status in (BracketStatus.EXITING, BracketStatus.EXIT_FAILED):
        # An exit is under way that this attempt did not record (its order refused or cancelled, and the exit
        # Lambda retrying it for what is still open): that exit owns the position, WaitForExit waits for it.
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
    try:
        delete_leftover_gtts(bracket)
    except BrokerError as exc:  # flatten first; the sweep after it must succeed
        logger.warning("GTT sweep before the flatten failed", extra={"bracket_id": bracket_id, "error": exc.message})
    earlier = [o for o in broker.find_orders_by_tag(req.tag) if o.status != "REJECTED"]
    if not earlier and exit_reason is ExitReason.EMERGENCY:
        adopted = _fired_twin_or_none(broker, bracket)
        if adopted is not None:
            return _result(adopted)
    order_id: BrokerOrderId = earlier[0].order_id if earlier else broker.place_order(req)
    if exit_reason is ExitReason.EMERGENCY:
        metrics.add_metric(name="EmergencyExits", unit="Count", value=1)
        logger.error(
            "protection failed: position flattened at market",
            extra={"bracket_id": bracket_id, "order_id": order_id, "quantity": quantity, "reason": reason},
        )
    else:
        logger.info("filled entry exited at market", extra={"bracket_id": bracket_id, "order_id": order_id})
    recorded = _record(bracket_id, order_id, quantity, reason, exit_reason)
    delete_leftover_gtts(bracket)
    if exit_reason is ExitReason.EMERGENCY:
        _sweep_after_listing_window(recorded)
    return _result(recorded)


def _sweep_after_listing_window(flattened: Bracket) -> None:
    """Sweep once more when BROKER_LOOKUP_WINDOW_S has passed since the flatten was recorded (`updated_at`): a GTT a
    lost create answer made before it is listed by then. A retry after an attempt that died before this sweep waits
    only what is left of the window (the position is already flat: the wait delays nothing that protects it)."""
    window = get_settings().broker_lookup_window_s
    waited = (utc_now() - flattened.updated_at).total_seconds()
    time.sleep(min(max(0.0, window - waited), window))
    delete_leftover_gtts(flattened)


def _fired_twin_or_none(broker: BrokerPort, bracket: Bracket) -> Bracket | None:
    """The bracket adopted by a GTT of an earlier protection attempt that already fired (protect.adopt_fired_twin),
    else None: flatten. Raises (retried) when the GTTs cannot be read and the order book suggests such a GTT fired."""
    bracket_id = bracket.id
    try:
        adopted = adopt_fired_twin(broker, bracket)
    except BrokerError as exc:  # the GTT list cannot be read: an open position must not wait for it, unless
        if _twin_child_in_the_book(broker, bracket):  # the order book shows a GTT of ours may have closed it
            raise BrokerUnavailable(
                f"bracket {bracket_id}: the broker's GTTs cannot be read ({exc.message}) and its order book shows "
                "an order like one a GTT of an earlier protection attempt would place: not flattened until "
                "the GTTs can be read (flattening too would open a reverse position); retried"
            ) from exc
        logger.warning(
            "could not look for a fired GTT before flattening",
            extra={"bracket_id": bracket_id, "error": exc.message},
        )
        adopted = None
    return adopted


def _twin_child_in_the_book(broker: BrokerPort, bracket: Bracket) -> bool:
    """An untagged order since the fill that looks like a leg of this bracket's protection (instrument, exit side,
    quantity, LIMIT at its stop-limit or target price), not refused or cancelled unfilled: what a GTT created by a
    lost create answer places when it fires. Only a reason to wait for the GTT list, never to adopt without it (two
    brackets with the same levels and quantity place the same orders; the GTT claims tell them apart)."""
    spec, req = bracket.spec, sweep_request(bracket)
    prices = {leg.price for leg in req.orders}
    since = bracket.updated_at - timedelta(seconds=1)  # the broker's timestamps are whole seconds
    return any(
        not o.tag
        and (o.exchange, o.tradingsymbol, o.product) == (spec.exchange.value, spec.symbol, spec.product.value)
        and o.transaction_type == spec.exit_action.value
        and o.order_type == "LIMIT"
        and o.quantity == bracket.entry.filled_quantity
        and o.price in prices
        and not (o.status in ("REJECTED", "CANCELLED") and not o.filled_quantity)
        and (o.order_timestamp is None or o.order_timestamp >= since)
        for o in broker.orders()
    )


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
