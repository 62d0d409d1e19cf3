"""The repairs a check makes: a Reconciled event noted, a bracket flagged for review or closed from the broker's
fill, a GTT cancelled or placed again, a stop exit queued."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from bracketflow.adapters.broker import get_broker
from bracketflow.adapters.broker.port import OrderReport
from bracketflow.adapters.dynamo import lifecycle as store
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.adapters.dynamo.gtt_claims import GttClaimedElsewhere, claim_alone, save_claiming
from bracketflow.adapters.instrument_store import current_master
from bracketflow.adapters.sqs import send_json
from bracketflow.contracts import ExitRequest
from bracketflow.domain.bracket import Bracket, LegOrder
from bracketflow.domain.enums import BracketStatus, ExitReason, LegRole, OrderStatus, PositionSide
from bracketflow.domain.events import ExitFilled, FlaggedForReview, Reconciled
from bracketflow.domain.ids import BrokerOrderId
from bracketflow.domain.validation import check_levels
from bracketflow.errors import BracketflowError, ConcurrentModification, ValidationFailed
from bracketflow.observability import logger
from bracketflow.services import lifecycle
from bracketflow.services.finalize import finalize
from bracketflow.services.lifecycle import event, retrying
from bracketflow.services.protect import CLAIM_ATTEMPTS, own_twin_or_new_gtt, protection_request
from bracketflow.services.reconcile.snapshot import utc_now
from bracketflow.settings import get_settings

Outcome = tuple[str, str] | None


def note(bracket_id: str, repair: str, detail: str, order: OrderReport | None = None, **data: Any) -> None:
    """Append a Reconciled event to whatever state the bracket is in now (a repair done by a lifecycle helper)."""
    repo = BracketRepository()
    broker = {} if order is None else {"order_id": str(order.order_id), "broker_status": order.status}

    def step(b: Bracket) -> Bracket:
        nxt = b.update()
        repo.save(b, nxt, [event(Reconciled, nxt, repair=repair, detail=detail, **broker, **data)])
        return nxt

    retrying(bracket_id, step)


def flag(bracket: Bracket, reason: str, order: OrderReport | None = None) -> Outcome:
    """NEEDS_REVIEW, only if the bracket is still as it was read (a change means someone acted: look next run)."""
    repo = BracketRepository()
    current = repo.get(bracket.id)
    if current is None or current.version != bracket.version:
        return None
    nxt = current.transition(BracketStatus.NEEDS_REVIEW)
    data: dict[str, Any] = {"reason": reason, "by": "reconcile", "previous_status": current.status.value}
    if order is not None:
        data.update(order_id=str(order.order_id), broker_status=order.status)
    try:
        repo.save(current, nxt, [event(FlaggedForReview, nxt, **data)])
    except ConcurrentModification:
        return None
    return "FLAGGED", reason


def close_from_broker(
    bracket: Bracket,
    order: OrderReport,
    reason: ExitReason,
    repair: str,
    detail: str,
    *,
    shared: bool = False,
) -> Outcome:
    """The broker closed the position (its GTT, or the trader by hand): record that exit, then close the bracket.

    From PROTECTED, or from EXITING with no exit order (the exit Lambda's claim that found the GTT fired). A `shared`
    order closed other brackets' positions too: this bracket records its own filled quantity of it, and the order
    is not mapped to this bracket alone."""
    repo = BracketRepository()
    price = order.average_price or Decimal(0)

    def step(b: Bracket) -> Bracket | None:
        claimed = b.status is BracketStatus.EXITING and b.exit is None
        if (b.status is not BracketStatus.PROTECTED and not claimed) or b.version != bracket.version:
            return None
        own = b.entry.filled_quantity if shared else order.filled_quantity
        leg = LegOrder(
            role=LegRole.EXIT,
            status=OrderStatus.EXECUTED,
            broker_order_id=BrokerOrderId(str(order.order_id)),
            quantity=own if shared else order.quantity,
            filled_quantity=own,
            average_price=price,
        )
        nxt = (
            b.update(exit=leg, exit_reason=reason)
            if claimed
            else b.transition(BracketStatus.EXITING, exit=leg, exit_reason=reason)
        )
        evs = [
            event(
                ExitFilled,
                nxt,
                filled_quantity=own,
                average_price=price,
                broker_order_id=str(order.order_id),
                gtt_id=b.gtt_id,
                reason=reason,
            ),
            event(Reconciled, nxt, repair=repair, detail=detail, order_id=str(order.order_id), exit_reason=reason),
        ]
        legs = [store.leg_put(nxt, leg)]
        if not shared:
            legs.append(store.broker_order_map_item(str(order.order_id), nxt, LegRole.EXIT.value))
        repo.save(b, nxt, evs, legs=legs)
        return nxt

    after = retrying(bracket.id, step)
    if (
        after.status is not BracketStatus.EXITING
        or after.exit is None
        or after.exit.broker_order_id != str(order.order_id)
    ):
        return None  # someone else moved it first (the watcher saw the GTT's fill)
    _complete_or_finalize(after)
    return repair, f"{detail}: {reason.value} @ {price}"


def _complete_or_finalize(bracket: Bracket) -> None:
    """Hand the exit to the waiting workflow; with none waiting (it ended or never got there), close it here."""
    if not lifecycle.complete_exit_wait(bracket):
        finalize(bracket.id, None)


def settle_exit(bracket: Bracket) -> Outcome:
    note(bracket.id, "EXIT_SETTLED", "the exit filled but the bracket was never closed")
    current = BracketRepository().get(bracket.id)
    if current is not None and current.status is BracketStatus.EXITING:
        _complete_or_finalize(current)
    return "EXIT_SETTLED", "exit filled earlier; closed now"


def cancel_gtt(gtt_id: int) -> None:
    """Cancel a GTT that would otherwise fire into a position that no longer exists (refusal: already gone)."""
    try:
        get_broker().delete_gtt(int(gtt_id))
    except BracketflowError as exc:
        logger.warning("GTT cancel refused", extra={"gtt_id": gtt_id, "error": str(exc)})


def reprotect(bracket: Bracket, why: str) -> Outcome:
    """The position is open but its GTT is gone: place a new one for the filled quantity at the current levels."""
    settings = get_settings()
    spec = bracket.spec
    broker = get_broker()
    key = f"{spec.exchange.value}:{spec.symbol}"
    quote = broker.quote([key]).get(key)
    last = quote.last_price if quote is not None and quote.last_price > 0 else bracket.entry.average_price
    instrument = current_master().get(spec.exchange.value, spec.symbol)
    tick = instrument.tick_size if instrument and instrument.tick_size > 0 else settings.default_tick_size
    try:
        assert last is not None
        check_levels(spec.action, last, bracket.stop_price, spec.target_price, note=" (the last traded price)")
    except (ValidationFailed, AssertionError):
        if last is not None and _through_the_stop(bracket, last) and settings.exit_queue_url:
            return queue_stop_exit(bracket, last, why)
        if last is not None and _past_the_target(bracket, last) and settings.exit_queue_url:
            # A new GTT would fire its target leg at once: the exit it would make, taken through the exit Lambda,
            # rather than a position left with no stop at all while it waits for a human.
            return queue_stop_exit(bracket, last, why, reason=ExitReason.TARGET)
        return flag(bracket, f"{why}; cannot re-protect: the market ({last}) is beyond the stop or target")
    request = protection_request(bracket, bracket.entry.filled_quantity, last, tick, settings.stop_limit_buffer_percent)
    # A GTT an earlier re-protect made and never recorded (its answer lost) is adopted, not made again.
    new_id = own_twin_or_new_gtt(broker, bracket, request)
    repo = BracketRepository()

    def step(b: Bracket) -> Bracket | None:
        if b.status is not BracketStatus.PROTECTED:
            return None
        nxt = b.update(gtt_id=new_id)
        ev = event(Reconciled, nxt, repair="REPROTECTED", detail=why, old_gtt_id=b.gtt_id, gtt_id=new_id)
        save_claiming(repo, b, nxt, [ev], new_id)  # the GTT becomes this bracket's only if no other holds it
        return nxt

    for _ in range(CLAIM_ATTEMPTS):
        try:
            after = retrying(bracket.id, step)
            break
        except GttClaimedElsewhere:
            # The broker's lost-create lookup answered with an identical bracket's GTT; ours, if made, is unclaimed.
            new_id = own_twin_or_new_gtt(broker, bracket, request)
    else:
        raise ConcurrentModification(f"bracket {bracket.id}: every GTT it found was claimed by another bracket first")
    if after.gtt_id != new_id:
        # The bracket moved on meanwhile: do not leave a GTT nobody owns, but never cancel another bracket's.
        if claim_alone(bracket.account_id, new_id, bracket.id, utc_now()):
            cancel_gtt(int(new_id))
        return None
    return "REPROTECTED", f"{why}; new GTT {new_id}"


def _through_the_stop(bracket: Bracket, last: Decimal) -> bool:
    if bracket.position_side is PositionSide.LONG:
        return last <= bracket.stop_price
    return last >= bracket.stop_price


def _past_the_target(bracket: Bracket, last: Decimal) -> bool:
    if bracket.position_side is PositionSide.LONG:
        return last >= bracket.spec.target_price
    return last <= bracket.spec.target_price


def queue_stop_exit(bracket: Bracket, last: Decimal, why: str, *, reason: ExitReason | None = None) -> Outcome:
    """The market went through the stop (or past the target) while no GTT stood: exit as the streamer would have
    (STOP, or TRAIL_STOP for a trailed stop) or as the GTT's target leg would have (TARGET) through the ExitQueue, so
    the exit Lambda claims it exactly once with the queue's retries (flagging it for review instead would make the
    exit Lambda refuse it, and leave the position open)."""
    reason = reason or (ExitReason.TRAIL_STOP if bracket.stop_has_trailed else ExitReason.STOP)
    detail = f"{why}; the market is at {last} (stop {bracket.stop_price}): {reason.value} exit queued"
    note(bracket.id, "STOP_EXIT_QUEUED", detail)
    intent = ExitRequest(
        bracket_id=bracket.id,
        reason=reason,
        ltp=last,
        stop_price=bracket.stop_price,
        detected_at=utc_now().isoformat().replace("+00:00", "Z"),
    )
    send_json(get_settings().exit_queue_url, intent.to_dict())
    return "STOP_EXIT_QUEUED", detail
