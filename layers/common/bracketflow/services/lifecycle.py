"""The bracket workflow's entry and exit steps (statemachine/bracket.asl.json), and the order facts they act on.

PlaceEntry -> WaitForEntryFill (task token) -> [timeout: CancelEntry] -> ... -> WaitForExit (task token) -> Finalize.

Every step is safe to run twice (Step Functions retries, a second start, a watcher and a task racing):
- the entry is placed with our tag (order_tag(bracket, ENTRY)); before placing, the broker's book is searched for that
  tag, so an attempt whose answer was lost is adopted, never repeated blindly;
- every change is a conditional write of the next version with its audit event; a lost race re-reads and re-decides;
- a task token is stored on the bracket, then the bracket (and the broker) is looked at again: a fill that arrived
  before the token was stored is never lost, and completing a token twice is harmless.

Outcomes handed to the workflow (the WaitForEntryFill output, also CancelEntry's):
  {"outcome": "FILLED", "filled_quantity": int, "average_price": str, "working": bool, "rest_timeout_s"?: int}
      The first fill, partial or whole, ends the wait: what filled is protected at once. "working" says the rest of
      the entry still works at the broker; the workflow then follows it (WaitForEntryRest, services/working_entry.py)
      until it is complete, cancelled or expired, at the latest after rest_timeout_s (the rest of its validity).
  {"outcome": "REJECTED" | "CANCELLED" | "EXPIRED", "message": str | None}
  {"outcome": "CANCEL_REQUESTED"}  (WaitForEntryFill only) the trader's DELETE: CancelEntry runs with by="user",
                                    and whatever filled is exited at market with reason MANUAL (a trader who cancels
                                    wants out, not a smaller protected position)
The trader's DELETE is recorded as a CancelRequested event (services/cancel_bracket.py). PlaceEntry looks for it
before sending the entry (CREATED -> CANCELLED, nothing sent) and WaitForEntryFill looks again after storing its
token, so a request that raced the placement is still honoured: the API completes a stored token, the task sees a
request recorded before its token was.
WaitForExit's output (agreed with the exit Lambda and reconciliation):
  {"exit": {"reason": ExitReason, "price": str, "order_id": str | None, "quantity": int}}

Notifications: functions/notify (a later issue) turns audit events into `bracket_order_update` messages:
  EntryPlaced -> entry_order_placed; BracketClosed -> completed; ProtectionFailed / EmergencyExitPlaced ->
  partial_failure; EntryRejected / WorkflowFailed -> error; and every event whose bracket_version changed the
  status -> a status-change update (the STATE item's stream image carries old and new status).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bracketflow import metrics_names
from bracketflow.adapters import sfn
from bracketflow.adapters.broker import get_broker
from bracketflow.adapters.broker.port import BrokerPort, OrderReport, OrderRequest
from bracketflow.adapters.dynamo import lifecycle as store
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.contracts import ExitRequest
from bracketflow.domain.bracket import Bracket
from bracketflow.domain.enums import BracketStatus, ExitReason, LegRole, OrderStatus, Validity
from bracketflow.domain.events import (
    BracketEvent,
    EntryCancelled,
    EntryCompleted,
    EntryExpired,
    EntryFilled,
    EntryPartiallyFilled,
    EntryPlaced,
    EntryRejected,
    EntryRestCancelled,
    ExitFailed,
    ExitFilled,
    FlaggedForReview,
)
from bracketflow.domain.ids import BrokerOrderId, order_tag
from bracketflow.domain.states import is_terminal
from bracketflow.errors import (
    BrokerRejected,
    ConcurrentModification,
    EntryCancelPending,
    NotFound,
)
from bracketflow.observability import logger, metrics
from bracketflow.settings import get_settings

IST_CLOSE = (10, 0)  # 15:30 IST is 10:00 UTC
MIN_ENTRY_WAIT_S = 60
IOC_ENTRY_WAIT_S = 60
_ATTEMPTS = 8

FILLED, REJECTED, CANCELLED, EXPIRED = "FILLED", "REJECTED", "CANCELLED", "EXPIRED"
CANCEL_REQUESTED = "CANCEL_REQUESTED"  # WaitForEntryFill's outcome when the trader asked to cancel
CANCEL_REQUESTED_EVENT = "CancelRequested"


@dataclass(frozen=True)
class OrderFact:
    """One state of one broker order, from an order update (ticker/postback) or the broker's order history."""

    order_id: str
    status: str  # Kite's: OPEN, COMPLETE, CANCELLED, REJECTED, TRIGGER PENDING, UPDATE ...
    filled_quantity: int = 0
    quantity: int = 0
    average_price: Decimal | None = None
    status_message: str | None = None
    tag: str | None = None
    exchange: str | None = None
    tradingsymbol: str | None = None
    transaction_type: str | None = None
    product: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status in ("COMPLETE", "CANCELLED", "REJECTED")

    @classmethod
    def from_report(cls, report: OrderReport) -> OrderFact:
        return cls(
            order_id=str(report.order_id),
            status=report.status,
            filled_quantity=report.filled_quantity,
            quantity=report.quantity,
            average_price=report.average_price,
            status_message=report.status_message,
            tag=report.tag,
            exchange=report.exchange,
            tradingsymbol=report.tradingsymbol,
            transaction_type=report.transaction_type,
            product=report.product,
        )

    @classmethod
    def from_kite(cls, data: dict[str, Any]) -> OrderFact:
        """A Kite order update's `data` object (or a postback body), as sent; numbers may arrive as JSON numbers."""
        avg = data.get("average_price")
        return cls(
            order_id=str(data["order_id"]),
            status=str(data.get("status") or "").upper(),
            filled_quantity=int(data.get("filled_quantity") or 0),
            quantity=int(data.get("quantity") or 0),
            average_price=None if avg in (None, "") else Decimal(str(avg)),
            status_message=data.get("status_message") or None,
            tag=data.get("tag") or None,
            exchange=data.get("exchange"),
            tradingsymbol=data.get("tradingsymbol"),
            transaction_type=data.get("transaction_type"),
            product=data.get("product"),
        )


def utc_now() -> datetime:
    return datetime.now(UTC)


def load(bracket_id: str) -> Bracket:
    found = BracketRepository().get(bracket_id)
    if found is None:
        raise NotFound(f"bracket {bracket_id} not found")
    return found


def retrying(bracket_id: str, step: Callable[[Bracket], Bracket | None]) -> Bracket:
    """Run `step` on a fresh read until its conditional write wins (or it decides nothing is to be done: None)."""
    for _ in range(_ATTEMPTS):
        bracket = load(bracket_id)
        try:
            changed = step(bracket)
        except ConcurrentModification:
            continue
        return changed if changed is not None else bracket
    raise ConcurrentModification(f"bracket {bracket_id} kept changing under {getattr(step, '__name__', 'a step')}")


def event(cls: type[BracketEvent], bracket: Bracket, **data: Any) -> BracketEvent:
    return cls(bracket_id=bracket.id, data=data, at=bracket.updated_at, bracket_version=bracket.version)


# ---------- outcomes ----------


def entry_undecided(bracket: Bracket) -> bool:
    """The entry order is at the broker and its outcome not recorded: ENTRY_PENDING, or NEEDS_REVIEW flagged while
    the entry was still working (its leg still SENT_TO_BROKER). Either way the broker's answer decides what comes
    next, and a fill is recorded, then protected or flattened: never ignored because a review is pending."""
    return bracket.entry.status is OrderStatus.SENT_TO_BROKER and bracket.status in (
        BracketStatus.ENTRY_PENDING,
        BracketStatus.NEEDS_REVIEW,
    )


def entry_outcome(bracket: Bracket) -> dict[str, Any] | None:
    """What WaitForEntryFill reports for this bracket, or None while the entry is still working (or undecided)."""
    status = bracket.status
    if status is BracketStatus.ENTRY_PENDING or status is BracketStatus.CREATED or entry_undecided(bracket):
        return None
    if status is BracketStatus.FAILED:
        return {"outcome": REJECTED, "message": bracket.entry.message}
    if status is BracketStatus.CANCELLED:
        return {"outcome": CANCELLED, "message": bracket.entry.message}
    if status is BracketStatus.EXPIRED:
        return {"outcome": EXPIRED, "message": bracket.entry.message}
    if bracket.entry.status is not OrderStatus.EXECUTED and not bracket.entry_working:
        return None  # flagged for review before any of the entry filled: nothing to protect, never FILLED with 0
    outcome: dict[str, Any] = {
        "outcome": FILLED,
        "filled_quantity": bracket.entry.filled_quantity,
        "average_price": str(bracket.entry.average_price),
        "working": bracket.entry_working,
    }
    if bracket.entry_working:
        outcome["rest_timeout_s"] = rest_timeout_s(bracket)
    return outcome


def exit_outcome(bracket: Bracket) -> dict[str, Any] | None:
    """WaitForExit's output once the exit order has filled, else None. Earlier exit orders that filled part of the
    position before they were cancelled count too: quantity is the sum, price the average over every fill."""
    leg = bracket.exit
    if leg is None or leg.status is not OrderStatus.EXECUTED:
        return None
    fills = [f for f in (*bracket.earlier_exits, leg) if f.filled_quantity > 0 and f.average_price is not None]
    quantity = sum(f.filled_quantity for f in fills) or leg.filled_quantity
    price = leg.average_price
    if len(fills) > 1:
        price = sum(((f.average_price or Decimal(0)) * f.filled_quantity for f in fills), Decimal(0)) / quantity
    return {
        "exit": {
            "reason": None if bracket.exit_reason is None else bracket.exit_reason.value,
            "price": str(price),
            "order_id": leg.broker_order_id,
            "quantity": quantity,
        }
    }


# ---------- PlaceEntry ----------


def entry_timeout_s(bracket: Bracket, now: datetime | None = None) -> int:
    """How long WaitForEntryFill waits: a DAY order until the close (15:30 IST) on Kite; IOC a minute; otherwise
    (the paper market never closes, TTL) ENTRY_TIMEOUT_S."""
    settings = get_settings()
    validity = bracket.spec.validity
    if validity is Validity.IOC:
        return min(IOC_ENTRY_WAIT_S, settings.entry_timeout_s)
    if validity is Validity.DAY and settings.broker == "kite":
        at = now or utc_now()
        close = at.replace(hour=IST_CLOSE[0], minute=IST_CLOSE[1], second=0, microsecond=0)
        if close <= at:
            close += timedelta(days=1)  # an AMO placed after the close works the next session
        return max(MIN_ENTRY_WAIT_S, int((close - at).total_seconds()))
    return max(1, settings.entry_timeout_s)


def rest_timeout_s(bracket: Bracket, now: datetime | None = None) -> int:
    """How much of the entry's validity is left: the rest of a partly filled entry is cancelled when it runs out
    (the same deadline WaitForEntryFill had, counted from when the entry was placed)."""
    at = now or utc_now()
    placed = [e for e in BracketRepository().events(bracket.id) if e.get("type") == EntryPlaced.type]
    since = datetime.fromisoformat(str(placed[0]["at"]).replace("Z", "+00:00")) if placed else bracket.created_at
    deadline = since + timedelta(seconds=entry_timeout_s(bracket, now=since))
    return max(1, int((deadline - at).total_seconds()))


def entry_request(bracket: Bracket) -> OrderRequest:
    spec = bracket.spec
    limit_price = spec.entry_price if spec.price_type.has_limit_price else None
    return OrderRequest(
        exchange=spec.exchange.value,
        tradingsymbol=spec.symbol,
        transaction_type=spec.action.value,
        quantity=spec.quantity,
        product=spec.product.value,
        order_type=spec.price_type.value,
        price=limit_price,
        trigger_price=spec.trigger_price if spec.price_type.needs_trigger else None,
        validity=spec.validity.value,
        disclosed_quantity=spec.disclosed_quantity or None,
        tag=order_tag(bracket.id, LegRole.ENTRY.value),
    )


def cancel_requested(bracket_id: str) -> bool:
    """True once the trader has asked (DELETE) for this bracket to end: a CancelRequested event in its trail."""
    return any(e.get("type") == CANCEL_REQUESTED_EVENT for e in BracketRepository().events(bracket_id))


def requested_exit_reason(bracket_id: str) -> ExitReason | None:
    """The exit reason a cancel request asked for (a strategy's signal, a time exit, the kill switch), or None for the
    trader's own DELETE: whatever of the entry filled before the cancel is exited with that reason."""
    for e in reversed(BracketRepository().events(bracket_id)):
        if e.get("type") == CANCEL_REQUESTED_EVENT and e.get("exit_reason"):
            return ExitReason(str(e["exit_reason"]))
    return None


def place_entry(bracket_id: str) -> dict[str, Any]:
    """Place the entry once; returns {"outcome": "PLACED", "broker_order_id", "timeout_s"} or a final outcome."""
    bracket = load(bracket_id)
    if bracket.status is BracketStatus.CREATED and not cancel_requested(bracket.id) and bracket.reverse_of:
        waiting = reverse_still_open(bracket)
        if waiting and utc_now() - bracket.created_at < timedelta(seconds=get_settings().reverse_wait_s):
            # Never both directions at once: the entry goes only once the old position is closed (flat at the broker).
            return {"outcome": WAIT_FOR_FLAT, "waiting_for": waiting}
        if waiting:
            return {"outcome": "DONE", "status": _abandon_reverse(bracket.id, waiting).status.value, "entry": None}
    if bracket.status is BracketStatus.CREATED:
        bracket = _cancel_unsent_entry(bracket.id) if cancel_requested(bracket.id) else _send_entry(bracket)
    # ENTRY_FILLED too: a retried PlaceEntry may find the fill already recorded; the wait then completes at once.
    if bracket.status in (BracketStatus.ENTRY_PENDING, BracketStatus.ENTRY_FILLED):
        return {
            "outcome": "PLACED",
            "broker_order_id": bracket.entry.broker_order_id,
            "timeout_s": entry_timeout_s(bracket),
        }
    return {"outcome": "DONE", "status": bracket.status.value, "entry": entry_outcome(bracket)}


def _send_entry(bracket: Bracket) -> Bracket:
    broker = get_broker()
    req = entry_request(bracket)
    assert req.tag is not None
    # An attempt before this one wrote the tag map, and may have placed the order before it died (a Lambda timeout).
    tried_before = store.get_order_tag_map(req.tag) is not None
    # The tag map first: the fill's update may reach the watcher before we record the order id below.
    store.put_order_tag_map(req.tag, bracket, LegRole.ENTRY.value)
    # An earlier attempt may have placed it and lost the answer (a Lambda timeout, a retry): adopt that order.
    earlier = broker.find_orders_by_tag(req.tag)
    if not earlier and tried_before:
        seen = _entry_listed_late(bracket.id, broker, req.tag)
        if isinstance(seen, Bracket):
            return seen
        earlier = seen
    if earlier:
        order_id: BrokerOrderId = earlier[0].order_id
        logger.warning(
            "entry already at the broker; adopting it", extra={"bracket_id": bracket.id, "order_id": order_id}
        )
    else:
        try:
            order_id = broker.place_order(req)
        except BrokerRejected as exc:
            return _entry_refused(bracket.id, exc.message)
    return _record_entry_placed(bracket.id, order_id)


def _entry_listed_late(bracket_id: str, broker: BrokerPort, tag: str) -> list[OrderReport] | Bracket:
    """A retry after an attempt that may have placed the entry: a broker may list a new order seconds late, so its
    book is searched for BROKER_LOOKUP_WINDOW_S before this attempt places one (two entries: twice the position).
    Returns the orders found, or the bracket once it is no longer CREATED (the watcher recorded the entry by its
    tag meanwhile); [] when the window passed with nothing to show (the earlier attempt died before sending)."""
    settings = get_settings()
    deadline = time.monotonic() + settings.broker_lookup_window_s
    while time.monotonic() < deadline:
        time.sleep(settings.broker_lookup_pause_s)
        current = load(bracket_id)
        if current.status is not BracketStatus.CREATED:
            return current
        found = broker.find_orders_by_tag(tag)
        if found:
            return found
    return []


def record_entry_seen(bracket_id: str, order_id: str) -> Bracket:
    """The watcher matched an update of our entry by its tag before PlaceEntry recorded the order id: record it
    exactly as PlaceEntry does (CREATED -> ENTRY_PENDING, EntryPlaced, the BROKERORDER map). Whichever of the two
    comes second finds the bracket no longer CREATED and writes nothing, so both orders end in the same state."""
    return _record_entry_placed(bracket_id, order_id)


def _record_entry_placed(bracket_id: str, order_id: str) -> Bracket:
    repo = BracketRepository()

    def step(b: Bracket) -> Bracket | None:
        if b.status is not BracketStatus.CREATED:
            return None
        leg = b.entry.transition(OrderStatus.SENT_TO_BROKER, broker_order_id=BrokerOrderId(order_id))
        nxt = b.transition(BracketStatus.ENTRY_PENDING, entry=leg)
        ev = event(EntryPlaced, nxt, broker_order_id=order_id, tag=order_tag(b.id, LegRole.ENTRY.value))
        repo.save(
            b,
            nxt,
            [ev],
            legs=[store.leg_put(nxt, leg), store.broker_order_map_item(order_id, nxt, LegRole.ENTRY.value)],
        )
        metrics.add_metric(name="EntriesPlaced", unit="Count", value=1)
        return nxt

    return retrying(bracket_id, step)


def record_entry_found_under_review(bracket_id: str, order_id: str) -> Bracket:
    """A bracket flagged for review while its entry's outcome was unknown (PlaceEntry failed for good after the
    broker may have acted: a lost answer, a crash) whose entry reconciliation found at the broker by its tag: record
    the order as PlaceEntry would (EntryPlaced, the BROKERORDER map), keeping NEEDS_REVIEW. The entry is then
    undecided (entry_undecided) and its fill, whenever the broker shows it, is recorded and protected, never left
    behind the review."""
    repo = BracketRepository()

    def step(b: Bracket) -> Bracket | None:
        if b.status is not BracketStatus.NEEDS_REVIEW or b.entry.status is not OrderStatus.CREATED:
            return None
        leg = b.entry.transition(OrderStatus.SENT_TO_BROKER, broker_order_id=BrokerOrderId(order_id))
        nxt = b.update(entry=leg)
        ev = event(EntryPlaced, nxt, broker_order_id=order_id, tag=order_tag(b.id, LegRole.ENTRY.value))
        repo.save(
            b,
            nxt,
            [ev],
            legs=[store.leg_put(nxt, leg), store.broker_order_map_item(order_id, nxt, LegRole.ENTRY.value)],
        )
        return nxt

    return retrying(bracket_id, step)


WAIT_FOR_FLAT = "WAIT_FOR_FLAT"


def reverse_still_open(bracket: Bracket) -> list[str]:
    """The brackets this reverse waits for that are not closed yet (their exit has not filled at the broker)."""
    repo = BracketRepository()
    still: list[str] = []
    for other_id in bracket.reverse_of:
        other = repo.get(other_id)
        if other is not None and not is_terminal(other.status):
            still.append(other_id)
    return still


def _abandon_reverse(bracket_id: str, waiting: list[str]) -> Bracket:
    """The old position was not flat within REVERSE_WAIT_S: the new entry is never sent (CREATED -> CANCELLED)."""
    repo = BracketRepository()
    message = f"reverse abandoned: {', '.join(waiting)} still open after {get_settings().reverse_wait_s} s"

    def step(b: Bracket) -> Bracket | None:
        if b.status is not BracketStatus.CREATED:
            return None
        leg = b.entry.transition(OrderStatus.CANCELLED, message=message)
        nxt = b.transition(BracketStatus.CANCELLED, entry=leg)
        repo.save(b, nxt, [event(EntryCancelled, nxt, by="reverse", message=message)], legs=[store.leg_put(nxt, leg)])
        return nxt

    logger.warning("reverse abandoned", extra={"bracket_id": bracket_id, "waiting_for": waiting})
    return retrying(bracket_id, step)


def _cancel_unsent_entry(bracket_id: str) -> Bracket:
    """The trader cancelled before the entry was sent: CREATED -> CANCELLED, nothing goes to the broker."""
    repo = BracketRepository()
    message = "cancelled by the trader before the entry was sent"

    def step(b: Bracket) -> Bracket | None:
        if b.status is not BracketStatus.CREATED:
            return None
        leg = b.entry.transition(OrderStatus.CANCELLED, message=message)
        nxt = b.transition(BracketStatus.CANCELLED, entry=leg)
        repo.save(b, nxt, [event(EntryCancelled, nxt, by="user", message=message)], legs=[store.leg_put(nxt, leg)])
        return nxt

    return retrying(bracket_id, step)


def _entry_refused(bracket_id: str, message: str) -> Bracket:
    """The broker refused the place call itself (no order exists): CREATED -> FAILED with its reason."""
    repo = BracketRepository()

    def step(b: Bracket) -> Bracket | None:
        if b.status is not BracketStatus.CREATED:
            return None
        leg = b.entry.transition(OrderStatus.FAILED, message=message)
        nxt = b.transition(BracketStatus.FAILED, entry=leg)
        repo.save(b, nxt, [event(EntryRejected, nxt, message=message)], legs=[store.leg_put(nxt, leg)])
        metrics.add_metric(name="EntriesRejected", unit="Count", value=1)
        return nxt

    return retrying(bracket_id, step)


# ---------- entry facts (watcher, the waiting task, CancelEntry) ----------


def apply_entry_fact(bracket_id: str, fact: OrderFact, *, cancelled_by: str = "broker") -> Bracket:
    """Record what the broker says about the entry order; moves the bracket when the entry is decided."""
    repo = BracketRepository()
    if fact.status == "CANCELLED" and cancelled_by == "broker" and cancel_requested(bracket_id):
        # The broker's CANCELLED update can reach the watcher before CancelEntry records the trader's cancel: it is
        # still the trader's cancel, whichever writer gets there first.
        cancelled_by = "user"

    rest_changed = False

    def step(b: Bracket) -> Bracket | None:
        nonlocal rest_changed
        if b.entry_working and b.entry.broker_order_id == fact.order_id:
            nxt = _apply_rest_fact(repo, b, fact, cancelled_by)
            rest_changed = nxt is not None
            return nxt
        if not entry_undecided(b) or b.entry.broker_order_id != fact.order_id:
            return None
        # Flagged for review while the entry still worked: the broker's answer settles it (a fill -> ENTRY_FILLED,
        # protected or flattened as any fill; a cancel or rejection -> CANCELLED, nothing at the broker).
        reviewed = {"previous_status": b.status.value} if b.status is BracketStatus.NEEDS_REVIEW else {}
        leg = b.entry
        filled = max(fact.filled_quantity, leg.filled_quantity)
        avg = fact.average_price if fact.average_price else leg.average_price
        if fact.status == "COMPLETE" or (fact.status == "CANCELLED" and filled > 0):
            partial = filled < leg.quantity
            new_leg = leg.transition(OrderStatus.EXECUTED, filled_quantity=filled, average_price=avg)
            nxt = b.transition(BracketStatus.ENTRY_FILLED, entry=new_leg)
            data: dict[str, Any] = {"filled_quantity": filled, "average_price": avg, "broker_order_id": fact.order_id}
            if partial:
                data.update(partial=True, cancelled_quantity=leg.quantity - filled, cancelled_by=cancelled_by)
            evs = [event(EntryFilled, nxt, **data, **reviewed)]
        elif fact.status == "REJECTED":
            message = fact.status_message or "rejected by the broker"
            new_leg = leg.transition(OrderStatus.FAILED, message=message)
            nxt = b.transition(BracketStatus.CANCELLED if reviewed else BracketStatus.FAILED, entry=new_leg)
            evs = [event(EntryRejected, nxt, message=message, broker_order_id=fact.order_id, **reviewed)]
            metrics.add_metric(name="EntriesRejected", unit="Count", value=1)
        elif fact.status == "CANCELLED":
            expired = cancelled_by == "broker" and "expir" in (fact.status_message or "").lower()
            message = fact.status_message or _CANCEL_MESSAGES.get(cancelled_by, "cancelled at the broker")
            new_leg = leg.transition(OrderStatus.CANCELLED, message=message)
            ended = BracketStatus.EXPIRED if expired and not reviewed else BracketStatus.CANCELLED
            nxt = b.transition(ended, entry=new_leg)
            cls = EntryExpired if expired else EntryCancelled
            evs = [event(cls, nxt, by=cancelled_by, message=message, broker_order_id=fact.order_id, **reviewed)]
        elif filled > leg.filled_quantity:
            # Part filled, the rest still works: what filled is protected now, not when the rest is decided. The leg
            # stays SENT_TO_BROKER (the order is live); later fills are recorded by _apply_rest_fact.
            new_leg = dataclasses.replace(leg, filled_quantity=filled, average_price=avg)
            nxt = b.transition(BracketStatus.ENTRY_FILLED, entry=new_leg)
            evs = [
                event(
                    EntryFilled,
                    nxt,
                    filled_quantity=filled,
                    average_price=avg,
                    broker_order_id=fact.order_id,
                    partial=True,
                    pending_quantity=leg.quantity - filled,
                )
            ]
        else:
            return None
        repo.save(b, nxt, evs, legs=[store.leg_put(nxt, nxt.entry)])
        return nxt

    bracket = retrying(bracket_id, step)
    complete_entry_wait(bracket)
    complete_entry_rest_wait(bracket, changed=rest_changed)
    return bracket


def _apply_rest_fact(repo: BracketRepository, b: Bracket, fact: OrderFact, cancelled_by: str) -> Bracket | None:
    """A fact about an entry that still works after the bracket moved on: more filled, or the rest ended. The
    bracket's status is not touched (the workflow follows the entry: services/working_entry.py)."""
    leg = b.entry
    filled = max(fact.filled_quantity, leg.filled_quantity)
    avg = fact.average_price if fact.average_price else leg.average_price
    data: dict[str, Any] = {"filled_quantity": filled, "average_price": avg, "broker_order_id": fact.order_id}
    if fact.status == "COMPLETE":
        new_leg = leg.transition(OrderStatus.EXECUTED, filled_quantity=filled, average_price=avg)
        nxt = b.update(entry=new_leg)
        evs: list[Any] = [event(EntryCompleted, nxt, **data)]
    elif fact.status in ("CANCELLED", "REJECTED"):
        message = fact.status_message or _CANCEL_MESSAGES.get(cancelled_by, f"{fact.status.lower()} at the broker")
        new_leg = leg.transition(OrderStatus.EXECUTED, filled_quantity=filled, average_price=avg, message=message)
        nxt = b.update(entry=new_leg)
        data.update(cancelled_quantity=leg.quantity - filled, by=cancelled_by, message=message)
        evs = [event(EntryRestCancelled, nxt, **data)]
    elif filled > leg.filled_quantity:
        new_leg = dataclasses.replace(leg, filled_quantity=filled, average_price=avg)
        nxt = b.update(entry=new_leg)
        evs = [event(EntryPartiallyFilled, nxt, **data, pending_quantity=leg.quantity - filled)]
    else:
        return None
    repo.save(b, nxt, evs, legs=[store.leg_put(nxt, nxt.entry)])
    return nxt


_CANCEL_MESSAGES = {
    "timeout": "entry not filled within its validity",
    "user": "cancelled by the trader",
    "exit": "the rest of the entry cancelled before the exit",
}


def complete_entry_wait(bracket: Bracket) -> bool:
    """Hand the entry's outcome to a waiting WaitForEntryFill, if the entry is decided and a task waits."""
    outcome = entry_outcome(bracket)
    if outcome is None:
        return False
    token = store.get_task_token(bracket.id, store.ENTRY_TOKEN)
    return token is not None and sfn.send_task_success(token, outcome)


def store_entry_token(bracket_id: str, token: str) -> dict[str, Any]:
    """WaitForEntryFill: keep the token, then look again (the bracket, then the broker) so no fill is missed."""
    # NEEDS_REVIEW too: flagged while the entry still works, its fill must still reach this wait
    waiting = (BracketStatus.ENTRY_PENDING.value, BracketStatus.NEEDS_REVIEW.value)
    store.store_task_token(bracket_id, store.ENTRY_TOKEN, token, waiting)
    bracket = load(bracket_id)
    if entry_outcome(bracket) is None and bracket.entry.broker_order_id:
        history = get_broker().order_history(bracket.entry.broker_order_id)
        if history:
            bracket = apply_entry_fact(bracket_id, OrderFact.from_report(history[-1]))
    outcome = entry_outcome(bracket)
    if outcome is None and bracket.status is BracketStatus.ENTRY_PENDING and cancel_requested(bracket_id):
        outcome = {"outcome": CANCEL_REQUESTED}  # asked before this token was stored: the API could not send it
    if outcome is not None:
        sfn.send_task_success(token, outcome)
    return {"waiting": outcome is None, "status": bracket.status.value}


# ---------- WaitForEntryRest (a protected bracket whose entry still works) ----------


def rest_outcome(bracket: Bracket) -> dict[str, Any] | None:
    """What ends WaitForEntryRest now, or None: it ends on every change of the entry (a fill, its end) and when the
    bracket is no longer PROTECTED (an exit: the rest must not fill any more)."""
    if bracket.entry_working and bracket.status is BracketStatus.PROTECTED:
        return None
    return {"outcome": "ENTRY_CHANGED", "status": bracket.status.value, "working": bracket.entry_working}


def complete_entry_rest_wait(bracket: Bracket, *, changed: bool) -> bool:
    """Hand a change of the working entry (or of the bracket's status) to a waiting WaitForEntryRest."""
    if bracket.status in (BracketStatus.CREATED, BracketStatus.ENTRY_PENDING, BracketStatus.ENTRY_FILLED):
        return False  # the workflow is not following the rest yet; PlaceProtection reads the latest fill
    outcome = rest_outcome(bracket) or ({"outcome": "ENTRY_CHANGED", "working": True} if changed else None)
    if outcome is None:
        return False
    token = store.get_task_token(bracket.id, store.ENTRY_REST_TOKEN)
    return token is not None and sfn.send_task_success(token, outcome)


def store_entry_rest_token(bracket_id: str, token: str) -> dict[str, Any]:
    """WaitForEntryRest: keep the token, then look again so nothing is missed: the entry at the broker (a missed
    update), and the GTT at the broker, which must protect exactly what filled (else the wait ends at once and the
    workflow resizes it)."""
    open_statuses = tuple(s.value for s in BracketStatus if not is_terminal(s))
    store.store_task_token(bracket_id, store.ENTRY_REST_TOKEN, token, open_statuses)
    bracket = load(bracket_id)
    broker = get_broker()
    if bracket.entry_working and bracket.entry.broker_order_id:
        history = broker.order_history(bracket.entry.broker_order_id)
        if history:
            bracket = apply_entry_fact(bracket_id, OrderFact.from_report(history[-1]))
    outcome = rest_outcome(bracket)
    if outcome is None and bracket.gtt_id:
        gtt = broker.gtt(int(bracket.gtt_id))
        if gtt.status == "active" and any(leg.quantity != bracket.entry.filled_quantity for leg in gtt.orders):
            outcome = {"outcome": "ENTRY_CHANGED", "working": True}
    if outcome is not None:
        sfn.send_task_success(token, outcome)
    return {"waiting": outcome is None, "status": bracket.status.value}


# ---------- CancelEntry (WaitForEntryFill timed out) ----------

CANCEL_CONFIRM_WAIT_S = 5.0


def cancel_entry(
    bracket_id: str, *, by: str = "timeout", sleep: Callable[[float], None] = time.sleep
) -> dict[str, Any]:
    """Cancel what is left of the entry; a partial fill becomes ENTRY_FILLED for the filled quantity.

    `by`: "timeout" (WaitForEntryFill ran out) or "user" (the trader's DELETE), recorded on EntryCancelled/EntryFilled.
    """
    bracket = load(bracket_id)
    if entry_undecided(bracket) and bracket.entry.broker_order_id:
        bracket = _cancel_at_broker(bracket_id, bracket.entry.broker_order_id, by, sleep)
    outcome = entry_outcome(bracket)
    if outcome is None:
        raise EntryCancelPending(f"bracket {bracket_id} is still {bracket.status.value}")
    return outcome


def cancel_working_entry(bracket_id: str, *, by: str, sleep: Callable[[float], None] = time.sleep) -> Bracket:
    """Cancel the rest of an entry that still works after the bracket moved on (its validity ran out, or the bracket
    exits: a later fill would open a position nothing protects); returns the bracket with the entry final.
    EntryCancelPending while the broker has not confirmed it (the caller retries)."""
    bracket = load(bracket_id)
    if not bracket.entry_working or bracket.entry.broker_order_id is None:
        return bracket
    logger.info("cancelling the rest of a working entry", extra={"bracket_id": bracket_id, "by": by})
    return _cancel_at_broker(bracket_id, bracket.entry.broker_order_id, by, sleep)


def _cancel_at_broker(bracket_id: str, order_id: str, by: str, sleep: Callable[[float], None]) -> Bracket:
    """Cancel the entry order, then wait (bounded) for the broker to show it final and record that."""
    broker = get_broker()
    try:
        broker.cancel_order(order_id)
    except BrokerRejected as exc:  # already complete/rejected: the history below says which
        logger.info("entry cancel refused", extra={"bracket_id": bracket_id, "reason": exc.message})
    deadline = time.monotonic() + CANCEL_CONFIRM_WAIT_S
    while True:
        history = broker.order_history(order_id)
        last = history[-1] if history else None
        if last is not None and last.is_terminal:
            return apply_entry_fact(bracket_id, OrderFact.from_report(last), cancelled_by=by)
        if time.monotonic() >= deadline:
            raise EntryCancelPending(f"the broker has not confirmed the cancel of entry {order_id} yet")
        sleep(0.25)


# ---------- exit facts and WaitForExit ----------


def apply_exit_fact(bracket_id: str, fact: OrderFact) -> Bracket:
    """Record what the broker says about our exit order; on a fill, hand the exit to WaitForExit."""
    repo = BracketRepository()
    failed = False

    def step(b: Bracket) -> Bracket | None:
        nonlocal failed
        leg = b.exit
        if leg is None or leg.broker_order_id != fact.order_id or leg.status is not OrderStatus.SENT_TO_BROKER:
            return None
        if fact.status == "COMPLETE":
            new_leg = leg.transition(
                OrderStatus.EXECUTED, filled_quantity=fact.filled_quantity, average_price=fact.average_price
            )
            nxt = b.update(exit=new_leg)
            evs = [
                event(
                    ExitFilled,
                    nxt,
                    filled_quantity=fact.filled_quantity,
                    average_price=fact.average_price,
                    broker_order_id=fact.order_id,
                )
            ]
        elif fact.status in ("REJECTED", "CANCELLED"):
            message = fact.status_message or f"exit order {fact.status.lower()}"
            status = OrderStatus.FAILED if fact.status == "REJECTED" else OrderStatus.CANCELLED
            # What filled before the cancel stays on the leg: the retry exits only the rest.
            filled = fact.filled_quantity if fact.filled_quantity > 0 else 0
            price = fact.average_price if filled else None
            new_leg = leg.transition(status, message=message, filled_quantity=filled, average_price=price)
            if b.status is BracketStatus.EXITING:
                nxt = b.transition(BracketStatus.EXIT_FAILED, exit=new_leg)
            else:
                nxt = b.update(exit=new_leg)
            evs = [
                event(
                    ExitFailed,
                    nxt,
                    message=message,
                    broker_order_id=fact.order_id,
                    filled_quantity=filled,
                    unfilled_quantity=max(leg.quantity - filled, 0),
                )
            ]
            failed = True
            metrics.add_metric(name="ExitFailures", unit="Count", value=1)
        else:
            return None
        repo.save(b, nxt, evs, legs=[store.leg_put(nxt, new_leg)])
        return nxt

    bracket = retrying(bracket_id, step)
    if failed or (bracket.status is BracketStatus.EXIT_FAILED and _exit_is(bracket, fact.order_id)):
        # The position is (partly) open and its GTT already gone: exit again, for the rest, until flat. A redelivered
        # update queues the retry again (the send may have failed); the exit Lambda's claim keeps it to one exit.
        queue_exit_retry(bracket)
    else:
        complete_exit_wait(bracket)
    return bracket


def _exit_is(bracket: Bracket, order_id: str) -> bool:
    return bracket.exit is not None and bracket.exit.broker_order_id == order_id


def queue_exit_retry(bracket: Bracket) -> None:
    """Put an exit intent for a bracket whose exit order failed (EXIT_FAILED) on the ExitQueue: the exit Lambda claims
    it (EXIT_FAILED -> EXITING) and exits what is still open. The exit keeps its reason."""
    url = get_settings().exit_queue_url
    if not url:
        raise RuntimeError(f"bracket {bracket.id}: its exit failed and no EXIT_QUEUE_URL is set to retry it")
    from bracketflow.adapters.sqs import send_json

    intent = ExitRequest(
        bracket_id=bracket.id,
        reason=bracket.exit_reason if bracket.exit_reason is not None else ExitReason.MANUAL,
        ltp=None,
        stop_price=bracket.stop_price,
        detected_at=utc_now().isoformat().replace("+00:00", "Z"),
        retry_of=None if bracket.exit is None else bracket.exit.broker_order_id,
    )
    send_json(url, intent.to_dict())
    metrics.add_metric(name=metrics_names.EXIT_RETRIES, unit="Count", value=1)
    logger.warning("exit failed at the broker; retry queued", extra={"bracket_id": bracket.id})


def complete_exit_wait(bracket: Bracket) -> bool:
    outcome = exit_outcome(bracket)
    if outcome is None:
        return False
    token = store.get_task_token(bracket.id, store.EXIT_TOKEN)
    return token is not None and sfn.send_task_success(token, outcome)


def store_exit_token(bracket_id: str, token: str) -> dict[str, Any]:
    """WaitForExit: keep the token, then look again (an exit that already filled completes it at once)."""
    open_statuses = (
        BracketStatus.ENTRY_FILLED.value,
        BracketStatus.PROTECTED.value,
        BracketStatus.EXITING.value,
        BracketStatus.EXIT_FAILED.value,
    )
    store.store_task_token(bracket_id, store.EXIT_TOKEN, token, open_statuses)
    bracket = load(bracket_id)
    leg = bracket.exit
    if exit_outcome(bracket) is None and leg is not None and leg.broker_order_id:
        if leg.status is OrderStatus.SENT_TO_BROKER:
            history = get_broker().order_history(leg.broker_order_id)
            if history and history[-1].is_terminal:
                bracket = apply_exit_fact(bracket_id, OrderFact.from_report(history[-1]))
        elif leg.status in (OrderStatus.FAILED, OrderStatus.CANCELLED) and bracket.status is BracketStatus.EXIT_FAILED:
            queue_exit_retry(bracket)  # the wait goes on: the retry's fill completes it
    outcome = exit_outcome(bracket)
    if outcome is not None:
        sfn.send_task_success(token, outcome)
    return {"waiting": outcome is None, "status": bracket.status.value}


# ---------- a step that failed for good ----------

# Failures before any order exists: the bracket can simply fail (nothing at the broker to look after). A refusal for
# rate, the broker's (429) or our own limiter's, comes before the order is sent.
_NOTHING_PLACED = frozenset(
    {"SessionExpired", "BrokerRejected", "BrokerRateLimited", "RateLimited", "ValidationFailed", "NotFound"}
)


def record_failure(bracket_id: str, error: str, cause: str, step: str) -> dict[str, Any]:
    """A workflow step failed after its retries: FAILED if nothing reached the broker, else NEEDS_REVIEW."""
    repo = BracketRepository()
    message = f"{step}: {error}: {_short(cause)}"

    def on(b: Bracket) -> Bracket | None:
        if b.status is BracketStatus.NEEDS_REVIEW or is_terminal(b.status):
            return None
        if b.status is BracketStatus.CREATED and error in _NOTHING_PLACED:
            leg = b.entry.transition(OrderStatus.FAILED, message=message)
            nxt = b.transition(BracketStatus.FAILED, entry=leg)
            evs: list[Any] = [{"type": "WorkflowFailed", "step": step, "error": error, "message": message}]
            repo.save(b, nxt, evs, legs=[store.leg_put(nxt, leg)])
            return nxt
        if b.status is BracketStatus.ENTRY_FILLED:
            # A filled position neither protected nor flattened: under review nothing would act on it, so it stays
            # ENTRY_FILLED, where reconciliation protects it (or flattens it) once its workflow has ended.
            nxt = b.update()
            repo.save(b, nxt, [{"type": "WorkflowFailed", "step": step, "error": error, "message": message}])
            return nxt
        nxt = b.transition(BracketStatus.NEEDS_REVIEW)
        evs = [
            {"type": "WorkflowFailed", "step": step, "error": error, "message": message},
            event(FlaggedForReview, nxt, reason=message, previous_status=b.status.value),
        ]
        repo.save(b, nxt, evs)
        return nxt

    bracket = retrying(bracket_id, on)
    metrics.add_metric(name="BracketWorkflowErrors", unit="Count", value=1)
    logger.error("bracket workflow step failed", extra={"bracket_id": bracket_id, "step": step, "error": error})
    return {"status": bracket.status.value, "error": error, "message": message}


def _short(cause: str) -> str:
    """Lambda error causes arrive as JSON {"errorMessage": ...}; keep the message, bounded."""
    try:
        parsed = json.loads(cause)
        if isinstance(parsed, dict) and parsed.get("errorMessage"):
            cause = str(parsed["errorMessage"])
    except (TypeError, ValueError):
        pass
    return (cause or "")[:500]
