"""Exit a bracket whose stop the streamer saw crossed — exactly once (docs/reliability.md).

Input: an ExitRequest (bracketflow.contracts) from the ExitQueue (SQS Standard, so it may arrive twice or
concurrently): the streamer's crossed stop, the trader's DELETE of a PROTECTED bracket (MANUAL), the MIS square-off
(EOD), reconciliation's exits, or a strategy's own exit (services/signals.py): SIGNAL (an exit/close/reverse
alert), TIME (exit_after / exit_at) or KILL_SWITCH (the daily loss limit, or POST /api/v1/flatten). One of these
last three that finds the bracket ENTRY_FILLED (protection being placed) is answered NOT_YET, which the handler
hands back to SQS: it comes back in seconds and exits the bracket once it is PROTECTED. All come through the
queue so they get its retries and its DLQ,
and a claim id: the SQS message id, which stays the same across redeliveries of one message.

1. Claim: PROTECTED (or EXIT_FAILED, a retry) -> EXITING by a conditional write, with an ExitRequested event that
   names the claim id; exit_reason is set, and stop_price takes the stop that was hit when it is tighter (the last
   trailed stop may not have been persisted before the exit). A bracket in any other state was taken by another
   actor (the trader's DELETE, EOD, a second exit message): the message is acknowledged as a duplicate, nothing
   is placed. A bracket already EXITING under *this* claim id with no exit order is a redelivery after a crash
   between claim and placement: it resumes.
   The rest of an entry that still works (part of it filled) is cancelled before anything else
   (services/working_entry.py), so the exit is for the final filled quantity and no later fill reopens a position.
2. Cancel the GTT first. If it already triggered, the broker has closed (or is closing) the position itself: no
   exit is placed (that would open a new position); an ExitSkipped event records it and the watcher or
   reconciliation closes the bracket from the GTT's order. Unless its LIMIT child has not filled within
   GTT_CHILD_GRACE_S (the market gapped past the child's price) or the broker refused it: then the child is
   cancelled first, confirmed dead at the broker (GttOrderCancelled event, with what it filled), and the bracket is
   exited at market like any other — never a live child and an exit at once.
3. Look for an exit order with our tag (order_tag(bracket, EXIT)) that is not rejected/cancelled: a placement
   whose answer was lost is adopted, never repeated. Otherwise place the MARKET exit with market_protection for
   what is still open: the filled entry less what earlier exit orders of ours (cancelled in part by market
   protection, say) and the GTT's cancelled child filled, as the broker's own order book says.
   The Kite adapter itself resolves an ambiguous placement (timeout) by tag before retrying.
4. Record the exit leg (SENT_TO_BROKER, order id), an ExitPlaced event and the BROKERORDER#<id> map in one
   transaction; the watcher completes WaitForExit when that order fills.
An exit order the broker cancels or rejects after accepting it moves the bracket to EXIT_FAILED (the watcher), which
queues a new intent (services/lifecycle.queue_exit_retry): the exit is retried for the unfilled quantity until flat.
A placement that fails here (a rejection, the broker unreachable) raises, and the handler hands the message back to
SQS for a retry in seconds (retry_delay_s), not after the queue's visibility timeout, until its maxReceiveCount
sends it to the DLQ and its alarm; ExitRetries counts every failed attempt (its alarm: exits are failing).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from bracketflow import metrics_names
from bracketflow.adapters.broker import get_broker
from bracketflow.adapters.broker.port import BrokerPort, OrderReport, OrderRequest
from bracketflow.adapters.dynamo import lifecycle as store
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.adapters.sqs import send_json
from bracketflow.contracts import ExitRequest
from bracketflow.domain.bracket import Bracket, LegOrder
from bracketflow.domain.calendar import IST
from bracketflow.domain.enums import BracketStatus, ExitReason, LegRole, OrderStatus, PositionSide
from bracketflow.domain.events import ExitFailed, ExitPlaced, ExitRequested
from bracketflow.domain.ids import order_tag
from bracketflow.errors import BrokerError, BrokerRejected, BrokerTimeout, ConcurrentModification, PositionNotHeld
from bracketflow.observability import logger, metrics
from bracketflow.services.working_entry import settle_before_exit
from bracketflow.settings import get_settings

_ATTEMPTS = 4
# A failed exit comes back after 1, 2, 4, 8, then every RETRY_CAP_S seconds (SQS visibility, per receive).
RETRY_BASE_S = 1
RETRY_CAP_S = 10
_CHILD_POLL_S = 0.25
_DEAD_ORDER_STATUSES = frozenset({"REJECTED", "CANCELLED"})
# Exits decided away from the market (services/signals.py): one that finds the bracket ENTRY_FILLED (its GTT being
# placed this second) waits for the protection and exits then, instead of being dropped as someone else's exit.
_DEFERRABLE_REASONS = frozenset({ExitReason.SIGNAL, ExitReason.TIME, ExitReason.KILL_SWITCH})


class ExitOutcome(StrEnum):
    PLACED = "PLACED"  # we placed the exit order now
    ADOPTED = "ADOPTED"  # an exit order with our tag already existed (a lost answer): recorded, not placed again
    DUPLICATE = "DUPLICATE"  # someone else owns this exit, or it is done: nothing placed
    BROKER_CLOSED = "BROKER_CLOSED"  # the GTT had already triggered: the broker closes the position, not us
    UNKNOWN_BRACKET = "UNKNOWN_BRACKET"
    NOT_YET = "NOT_YET"  # a signal, time or kill-switch exit met the bracket placing its GTT: retried in seconds


@dataclass(frozen=True)
class ExitResult:
    outcome: ExitOutcome
    bracket_id: str
    broker_order_id: str | None = None
    detail: str | None = None


def execute_exit(
    intent: ExitRequest,
    claim_id: str,
    *,
    repo: BracketRepository | None = None,
    broker: BrokerPort | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ExitResult:
    repo = repo or BracketRepository()
    claimed = _claim(repo, intent, claim_id)
    if isinstance(claimed, ExitResult):
        logger.info("exit not placed", extra={"bracket_id": intent.bracket_id, "outcome": claimed.outcome})
        return claimed
    bracket, fresh = claimed
    if fresh:
        _arm_watchdog(intent, claim_id)
    broker = broker or get_broker()
    if bracket.entry_working:
        # The rest of a partly filled entry still works: cancel it first, and exit the final filled quantity.
        bracket = settle_before_exit(bracket.id)

    gtt_orders: list[OrderReport] = []
    if bracket.gtt_id:
        settled = _cancel_gtt(repo, broker, bracket, sleep)
        if isinstance(settled, ExitResult):
            return settled
        gtt_orders = settled

    owner = uuid.uuid4().hex
    if not store.take_exit_lease(bracket.id, owner, _lease_s()):
        current = repo.get(bracket.id)
        if current is None or current.status is not BracketStatus.EXITING or current.exit is not None:
            return ExitResult(ExitOutcome.DUPLICATE, bracket.id, detail="another attempt placed the exit")
        raise ConcurrentModification(f"bracket {bracket.id}: another attempt is placing its exit; retried")
    hold_s = 0.0
    try:
        current = repo.get(bracket.id)
        if current is None or current.status is not BracketStatus.EXITING or current.exit is not None:
            return ExitResult(ExitOutcome.DUPLICATE, bracket.id, detail="another attempt placed the exit")
        return _place_exit(repo, broker, current, intent, gtt_orders)
    except BrokerTimeout:
        # The order may exist and not be listed yet: no other attempt places for a while (EXIT_UNKNOWN_HOLD_S).
        hold_s = get_settings().exit_unknown_hold_s
        raise
    finally:
        store.hold_exit_lease(bracket.id, owner, hold_s)


def _place_exit(
    repo: BracketRepository, broker: BrokerPort, bracket: Bracket, intent: ExitRequest, gtt_orders: list[OrderReport]
) -> ExitResult:
    """Under the exit lease: adopt our tagged exit order if the broker has one, else place it for what is open."""
    tag = order_tag(bracket.id, LegRole.EXIT.value)
    # The tag map before the order: its COMPLETE may reach the watcher before _record_placed writes the order id.
    store.put_order_tag_map(tag, bracket, LegRole.EXIT.value, exit_reason=bracket.exit_reason)
    tagged = broker.find_orders_by_tag(tag)
    existing = [o for o in tagged if o.status.upper() not in _DEAD_ORDER_STATUSES]
    if existing:
        adopted = min(existing, key=lambda o: o.order_id)
        _record_placed(repo, bracket.id, adopted.order_id, adopted=True, quantity=adopted.quantity)
        return ExitResult(ExitOutcome.ADOPTED, bracket.id, adopted.order_id)

    quantity = open_quantity(bracket, [*tagged, *gtt_orders])
    if quantity <= 0:
        raise ValueError(f"bracket {bracket.id}: earlier exit orders filled all {bracket.entry.filled_quantity}")
    _check_position_held(broker, bracket, quantity)
    spec = bracket.spec
    request = OrderRequest(
        exchange=spec.exchange.value,
        tradingsymbol=spec.symbol,
        transaction_type=spec.exit_action.value,
        quantity=quantity,
        product=spec.product.value,
        order_type="MARKET",
        tag=tag,
        market_protection=get_settings().broker_market_protection,
    )
    try:
        order_id = broker.place_order(request)
    except BrokerRejected as exc:
        _record_failed(repo, bracket.id, exc.message)
        metrics.add_metric(name="ExitRejected", unit="Count", value=1)
        raise
    _record_placed(repo, bracket.id, order_id, adopted=False, quantity=quantity)
    metrics.add_metric(name="ExitsPlaced", unit="Count", value=1)
    logger.info(
        "exit placed",
        extra={"bracket_id": bracket.id, "order_id": order_id, "reason": intent.reason, "quantity": quantity},
    )
    return ExitResult(ExitOutcome.PLACED, bracket.id, order_id)


def _check_position_held(broker: BrokerPort, bracket: Bracket, quantity: int) -> None:
    """An exit must close a position, never open the reverse one: when the broker's net position on the bracket's
    instrument and product no longer holds `quantity` on the bracket's side (the trader closed it in the Kite app, the
    broker squared it off), nothing is placed and the exit is retried in seconds; reconciliation closes a bracket
    whose position is flat. Checked only for a bracket entered today (the positions the broker lists; a position
    carried from an earlier day may live in the holdings instead), and skipped when the positions cannot be read
    (an open position waits for no read)."""
    spec = bracket.spec
    if bracket.created_at.astimezone(IST).date() != datetime.now(IST).date():
        return
    try:
        net = sum(
            p.quantity
            for p in broker.positions()
            if p.exchange == spec.exchange.value and p.tradingsymbol == spec.symbol and p.product == spec.product.value
        )
    except BrokerError as exc:
        logger.warning("positions unreadable before an exit; placing it", extra={"error": exc.message})
        return
    held = max(net, 0) if bracket.position_side is PositionSide.LONG else max(-net, 0)
    if held < quantity:
        raise PositionNotHeld(
            f"bracket {bracket.id}: the broker's net {spec.symbol} {spec.product.value} position is {net}, an exit of "
            f"{quantity} would open a reverse position; nothing placed, retried (closed elsewhere: reconciliation "
            "closes the bracket)"
        )


def open_quantity(bracket: Bracket, dead_exits: list[OrderReport]) -> int:
    """What is still to exit: the filled entry less what dead exit orders (ours, and a GTT child we cancelled) filled
    before they ended. From the broker's book, never from our records alone: a fill counted twice would exit too
    little, one missed would sell into a reverse position."""
    filled = _exit_quantity(bracket)
    gone = sum(o.filled_quantity for o in dead_exits if o.status.upper() in _DEAD_ORDER_STATUSES)
    recorded = sum(leg.filled_quantity for leg in bracket.earlier_exits)
    if gone != recorded:
        logger.warning(
            "earlier exits filled a different quantity at the broker than recorded; the broker's count is used",
            extra={"bracket_id": bracket.id, "broker": gone, "recorded": recorded},
        )
    return filled - gone


def _lease_s() -> float:
    """How long one attempt may hold the right to place: past the end of its placement call however it ends (the
    account's rate-limit wait, connecting, the read timeout, the lookup of a lost answer), with a margin."""
    s = get_settings()
    return s.order_rate_wait_s + s.broker_connect_timeout_s + s.broker_timeout_s + s.broker_lookup_window_s + 5.0


def _arm_watchdog(intent: ExitRequest, claim_id: str) -> None:
    """Send a copy of the exit's message, delayed EXIT_WATCHDOG_S, that resumes this claim if no exit order was placed
    by then: an invocation that dies after deleting the GTT would otherwise leave the position naked until the
    queue's visibility timeout. A claim that did its work by then makes the copy a no-op (DUPLICATE)."""
    settings = get_settings()
    if not settings.exit_queue_url:
        return
    body = replace(intent, resume_claim=claim_id).to_dict()
    try:
        send_json(settings.exit_queue_url, body, delay_s=settings.exit_watchdog_s)
    except Exception:  # the queue's own redelivery still resumes a claim whose invocation died
        logger.exception("could not arm the exit watchdog", extra={"bracket_id": intent.bracket_id})


def retry_delay_s(receive_count: int) -> int:
    """Seconds before a failed exit intent is delivered again: 1, 2, 4, 8, then RETRY_CAP_S."""
    return int(min(RETRY_CAP_S, RETRY_BASE_S * 2 ** max(receive_count - 1, 0)))


def exit_attempt_failed(bracket_id: str | None, error: Exception) -> None:
    """The handler's note of an exit intent that raised: it comes back in seconds; ExitRetries feeds the alarm."""
    metrics.add_metric(name=metrics_names.EXIT_RETRIES, unit="Count", value=1)
    logger.warning("exit attempt failed; retrying", extra={"bracket_id": bracket_id, "error": str(error)})


def _exit_quantity(bracket: Bracket) -> int:
    return bracket.entry.filled_quantity or bracket.spec.quantity


def _tighter(bracket: Bracket, stop: Decimal) -> Decimal:
    if bracket.position_side is PositionSide.LONG:
        return max(bracket.stop_price, stop)
    return min(bracket.stop_price, stop)


def _claim(repo: BracketRepository, intent: ExitRequest, claim_id: str) -> tuple[Bracket, bool] | ExitResult:
    """(the bracket, True) when this message claims the exit now; (the bracket, False) when it resumes its own
    claim (a redelivery, or the watchdog's copy) that placed no exit order yet; otherwise an ExitResult."""
    for _ in range(_ATTEMPTS):
        bracket = repo.get(intent.bracket_id)
        if bracket is None:
            logger.error("exit intent for an unknown bracket", extra={"bracket_id": intent.bracket_id})
            return ExitResult(ExitOutcome.UNKNOWN_BRACKET, intent.bracket_id)
        if bracket.status in (BracketStatus.PROTECTED, BracketStatus.EXIT_FAILED):
            event = ExitRequested(
                bracket.id,
                data={
                    "reason": intent.reason,
                    "ltp": intent.ltp,
                    "stop_price": intent.stop_price,
                    "detected_at": intent.detected_at,
                    "claim_id": claim_id,
                },
                bracket_version=bracket.version + 1,
            )
            changes: dict[str, Any] = {"exit_reason": intent.reason, "stop_price": _tighter(bracket, intent.stop_price)}
            if bracket.exit is not None and bracket.exit.status in (OrderStatus.FAILED, OrderStatus.CANCELLED):
                changes["exit"] = None  # the failed attempt stays in the audit trail; a new exit leg follows
                if bracket.exit.filled_quantity > 0:  # what it sold before it was cancelled counts in the P&L
                    changes["earlier_exits"] = (*bracket.earlier_exits, bracket.exit)
            if intent.resume_claim:  # the watchdog's copy never claims anew
                return ExitResult(ExitOutcome.DUPLICATE, bracket.id, detail=bracket.status.value)
            try:
                return repo.transition(bracket, BracketStatus.EXITING, event, **changes), True
            except ConcurrentModification:
                continue
        if bracket.status is BracketStatus.ENTRY_FILLED and intent.reason in _DEFERRABLE_REASONS:
            return ExitResult(ExitOutcome.NOT_YET, bracket.id, detail="protection is being placed")
        if bracket.status is BracketStatus.EXITING and bracket.exit is None and _claimed_by(repo, bracket, claim_id):
            logger.warning("resuming an exit claimed by this message before", extra={"bracket_id": bracket.id})
            return bracket, False
        return ExitResult(ExitOutcome.DUPLICATE, bracket.id, detail=bracket.status.value)
    raise ConcurrentModification(f"bracket {intent.bracket_id} kept changing while claiming its exit")


def _claimed_by(repo: BracketRepository, bracket: Bracket, claim_id: str) -> bool:
    """True when the latest ExitRequested of this bracket carries our claim id."""
    requests = [e for e in repo.events(bracket.id) if e.get("type") == ExitRequested.type]
    return bool(requests) and requests[-1].get("claim_id") == claim_id


def _cancel_gtt(
    repo: BracketRepository, broker: BrokerPort, bracket: Bracket, sleep: Callable[[float], None]
) -> ExitResult | list[OrderReport]:
    """Delete the GTT before exiting. An ExitResult when it had already triggered and its order filled (or is filling
    within the grace): then we must not exit. Otherwise the GTT's orders that ended unfilled or in part (a child
    the market gapped past, cancelled here; one the broker refused): their fills count, and we exit the rest."""
    gtt_id = int(str(bracket.gtt_id))
    try:
        broker.delete_gtt(gtt_id)
        return []
    except BrokerRejected as refused:
        report = broker.gtt(gtt_id)
        if report.status != "triggered":
            raise
        detail = f"GTT {gtt_id} already triggered ({refused.message})"
    child_ids = [str(i) for i in report.triggered_order_ids]
    children = _await_children(broker, child_ids, sleep) if child_ids else []
    if not child_ids or any(c.status == "COMPLETE" for c in children):
        return _skip_exit(repo, bracket, gtt_id, child_ids, detail)
    live = [c for c in children if not c.is_terminal]
    for child in live:
        try:
            broker.cancel_order(str(child.order_id), child.variety or "regular")
        except BrokerRejected as exc:  # it filled as we cancelled: the history below says so
            logger.info("GTT order cancel refused", extra={"order_id": child.order_id, "error": exc.message})
    children = [_last_state(broker, i) for i in child_ids]
    if any(c.status == "COMPLETE" for c in children):
        return _skip_exit(repo, bracket, gtt_id, child_ids, detail)
    if any(not c.is_terminal for c in children):
        raise BrokerError(f"bracket {bracket.id}: the GTT's order is not confirmed cancelled yet; exit retried")
    _record_gtt_orders_dead(repo, bracket, gtt_id, children)
    return children


def _await_children(broker: BrokerPort, child_ids: list[str], sleep: Callable[[float], None]) -> list[OrderReport]:
    """The GTT's orders once any filled or all ended, or as they are after GTT_CHILD_GRACE_S (a LIMIT child the market
    gapped past rests unfilled for as long as the market stays beyond it)."""
    deadline = time.monotonic() + get_settings().gtt_child_grace_s
    while True:
        children = [_last_state(broker, i) for i in child_ids]
        if any(c.status == "COMPLETE" for c in children) or all(c.is_terminal for c in children):
            return children
        if time.monotonic() >= deadline:
            return children
        sleep(_CHILD_POLL_S)


def _last_state(broker: BrokerPort, order_id: str) -> OrderReport:
    history = broker.order_history(order_id)
    if not history:
        raise BrokerError(f"order {order_id} has no history at the broker yet")
    return history[-1]


def _record_gtt_orders_dead(
    repo: BracketRepository, bracket: Bracket, gtt_id: int, children: list[OrderReport]
) -> None:
    """A GttOrderCancelled event names the GTT's orders that ended without closing the position; what they filled
    joins earlier_exits (the P&L, and the exit that follows sells only the rest)."""
    legs = tuple(
        LegOrder(
            role=LegRole.EXIT,
            status=OrderStatus.FAILED if c.status == "REJECTED" else OrderStatus.CANCELLED,
            broker_order_id=c.order_id,
            quantity=c.quantity,
            filled_quantity=c.filled_quantity,
            average_price=c.average_price if c.filled_quantity else None,
            message=c.status_message,
        )
        for c in children
    )
    event = {
        "type": "GttOrderCancelled",
        "gtt_id": str(gtt_id),
        "orders": [
            {"order_id": str(c.order_id), "status": c.status, "filled_quantity": c.filled_quantity} for c in children
        ],
    }
    for _ in range(_ATTEMPTS):
        current = repo.get(bracket.id)
        if current is None or current.status is not BracketStatus.EXITING:
            return
        known = {leg.broker_order_id for leg in current.earlier_exits}
        fresh = tuple(leg for leg in legs if leg.filled_quantity > 0 and leg.broker_order_id not in known)
        try:
            repo.save(current, current.update(earlier_exits=(*current.earlier_exits, *fresh)), [event])
            break
        except ConcurrentModification:
            continue
    metrics.add_metric(name=metrics_names.GTT_ORDERS_CANCELLED, unit="Count", value=1)
    logger.warning(
        "GTT fired but its order did not fill; cancelled it, exiting at market",
        extra={"bracket_id": bracket.id, "gtt_id": gtt_id, "orders": [c.order_id for c in children]},
    )


def _skip_exit(repo: BracketRepository, bracket: Bracket, gtt_id: int, child_ids: list[str], detail: str) -> ExitResult:
    event = {
        "type": "ExitSkipped",
        "reason": "GTT_TRIGGERED",
        "gtt_id": str(gtt_id),
        "triggered_order_ids": child_ids,
    }
    for _ in range(_ATTEMPTS):
        current = repo.get(bracket.id)
        if current is None or current.status is not BracketStatus.EXITING:
            break
        try:
            repo.append_event(current, event)
            break
        except ConcurrentModification:
            continue
    logger.warning("GTT already triggered; no exit placed", extra={"bracket_id": bracket.id, "gtt_id": gtt_id})
    metrics.add_metric(name="ExitSkippedGttTriggered", unit="Count", value=1)
    return ExitResult(ExitOutcome.BROKER_CLOSED, bracket.id, detail=detail)


def record_exit_seen(bracket_id: str, order_id: str, quantity: int | None = None) -> bool:
    """The watcher matched an update of our exit order by its tag before this Lambda recorded the order id: record it
    the way the Lambda does (exit leg SENT_TO_BROKER, ExitPlaced, the BROKERORDER map), but only on a bracket this
    Lambda claimed and has not recorded an exit order for yet. True when the bracket's exit leg is now that order;
    the Lambda's own _record_placed then finds it recorded and writes nothing, so both orders end the same."""
    repo = BracketRepository()
    bracket = repo.get(bracket_id)
    if bracket is None or bracket.status is not BracketStatus.EXITING:
        return False
    if bracket.exit is None:
        _record_placed(repo, bracket_id, order_id, adopted=False, only_if_none=True, quantity=quantity)
        bracket = repo.get(bracket_id)
    return bracket is not None and bracket.exit is not None and bracket.exit.broker_order_id == order_id


def _record_placed(
    repo: BracketRepository,
    bracket_id: str,
    order_id: str,
    *,
    adopted: bool,
    only_if_none: bool = False,
    quantity: int | None = None,
) -> None:
    for _ in range(_ATTEMPTS):
        bracket = repo.get(bracket_id)
        if bracket is None:
            raise ConcurrentModification(f"bracket {bracket_id} vanished while recording its exit")
        if bracket.exit is not None and bracket.exit.broker_order_id == order_id:
            return
        if only_if_none and (bracket.exit is not None or bracket.status is not BracketStatus.EXITING):
            return  # the watcher never overwrites what the placing Lambda recorded
        leg = LegOrder(
            role=LegRole.EXIT,
            status=OrderStatus.SENT_TO_BROKER,
            broker_order_id=order_id,  # type: ignore[arg-type]
            quantity=quantity or _exit_quantity(bracket),
        )
        current = bracket.update(exit=leg)
        event = ExitPlaced(
            bracket_id,
            data={"broker_order_id": order_id, "reason": bracket.exit_reason, "adopted": adopted},
            bracket_version=current.version,
            at=current.updated_at,
        )
        try:
            repo.save(
                bracket,
                current,
                [event],
                legs=[store.leg_put(current, leg), store.broker_order_map_item(order_id, current, LegRole.EXIT.value)],
            )
            return
        except ConcurrentModification:
            continue
    raise ConcurrentModification(f"bracket {bracket_id} kept changing while recording exit order {order_id}")


def _record_failed(repo: BracketRepository, bracket_id: str, message: str) -> None:
    for _ in range(_ATTEMPTS):
        bracket = repo.get(bracket_id)
        if bracket is None or bracket.status is not BracketStatus.EXITING:
            return
        event = ExitFailed(bracket_id, data={"message": message}, bracket_version=bracket.version + 1)
        try:
            repo.transition(bracket, BracketStatus.EXIT_FAILED, event)
            return
        except ConcurrentModification:
            continue
