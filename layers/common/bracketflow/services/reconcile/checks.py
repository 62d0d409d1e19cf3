"""ReconcileBracket: one bracket compared with the broker's view, by the check for its status."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bracketflow.adapters.broker import get_broker
from bracketflow.adapters.broker.port import GTT_INERT, GttReport, OrderReport
from bracketflow.adapters.dynamo import lifecycle as store
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.adapters.dynamo.gtt_claims import claimed_at
from bracketflow.adapters.sfn import bracket_workflow_status
from bracketflow.adapters.sqs import send_control
from bracketflow.domain.bracket import Bracket
from bracketflow.domain.enums import BracketStatus, ExitReason, LegRole, OrderStatus
from bracketflow.domain.events import EntryFilled, ExitSkipped
from bracketflow.domain.ids import order_tag
from bracketflow.domain.states import is_terminal
from bracketflow.errors import InvalidStateTransition, ProtectionNotPossible
from bracketflow.observability import logger, metrics
from bracketflow.services import lifecycle
from bracketflow.services.emergency_exit import emergency_exit
from bracketflow.services.lifecycle import OrderFact
from bracketflow.services.order_updates import gtt_exit_reason
from bracketflow.services.protect import place_protection
from bracketflow.services.reconcile.repairs import (
    Outcome,
    cancel_gtt,
    close_from_broker,
    flag,
    note,
    queue_stop_exit,
    reprotect,
    settle_exit,
)
from bracketflow.services.reconcile.snapshot import BrokerView, aware, live_view, load_view, parse_time, utc_now
from bracketflow.services.register_bracket import start_workflow
from bracketflow.settings import get_settings

FINAL = frozenset({"COMPLETE", "CANCELLED", "REJECTED"})
# A GTT that fired this long ago with its stop order still unfilled is exited by reconciliation (the exit Lambda
# usually does it within GTT_CHILD_GRACE_S when the streamer saw the stop; this covers when it did not).
GTT_STALL_S = 10.0
TARGET = ExitReason.TARGET
SETTLE_S = 60  # an exit filled this long ago and still not closed has lost its WaitForExit


def reconcile_bracket(run_id: str, bracket_id: str, now: datetime | None = None) -> dict[str, Any]:
    """ReconcileBracket: repair what drifted; returns {"bracket_id", "status", "repair": str | None, "detail"}.

    The run's snapshot only says where to look. A bracket that changed after it was taken is left for the next run
    (its facts are older than the bracket's last change: a GTT placed or a fill recorded since is not in it), and
    a repair is decided again, before it acts, on the broker's live state (live_view) and a fresh read of the bracket.
    """
    view = load_view(run_id)
    repo = BracketRepository()
    bracket = repo.get(bracket_id)
    if bracket is None or is_terminal(bracket.status):
        return {"bracket_id": bracket_id, "status": None if bracket is None else bracket.status.value, "repair": None}
    at = now or utc_now()
    try:
        outcome = None if _changed_since(bracket, view) else _check(bracket, view, at)
    except _LookLive:
        live = live_view()
        current = repo.get(bracket_id)
        fresh = current is not None and not is_terminal(current.status) and not _changed_since(current, live)
        outcome = _check(current, live, at) if fresh and current is not None else None
    return _result(repo, bracket_id, outcome)


def reconcile_bracket_now(bracket_id: str, settle_s: float | None = None) -> dict[str, Any]:
    """Reconcile one bracket at once on the broker's live state: the watcher saw an order that no bracket of ours
    placed fill on this bracket's position (a close by hand in the Kite app, the broker's own square-off), and a
    position closed that way still has its GTT, which would fire into the flat account before the next scheduled
    run. Waits `settle_s` (HAND_FILL_SETTLE_S) first, so a trader's quick round trip is seen whole."""
    time.sleep(get_settings().hand_fill_settle_s if settle_s is None else settle_s)
    repo = BracketRepository()
    bracket = repo.get(bracket_id)
    if bracket is None or is_terminal(bracket.status):
        return {"bracket_id": bracket_id, "status": None if bracket is None else bracket.status.value, "repair": None}
    view = live_view()
    current = repo.get(bracket_id)
    fresh = current is not None and not is_terminal(current.status) and not _changed_since(current, view)
    outcome = _check(current, view, utc_now()) if fresh and current is not None else None
    return _result(repo, bracket_id, outcome)


def _result(repo: BracketRepository, bracket_id: str, outcome: Outcome) -> dict[str, Any]:
    after = repo.get(bracket_id)
    result = {
        "bracket_id": bracket_id,
        "status": None if after is None else after.status.value,
        "repair": outcome[0] if outcome else None,
        "detail": outcome[1] if outcome else None,
    }
    if outcome:
        metrics.add_metric(name="ReconcileDrift", unit="Count", value=1)
        if outcome[0].startswith("FLAGGED"):
            metrics.add_metric(name="ReconcileFlagged", unit="Count", value=1)
        logger.warning("reconciliation repaired a bracket", extra=result)
    return result


# An EXITING bracket with no exit order whose position the broker shows flat this long is closed from the order that
# flattened it: the exit Lambda refuses to place an exit into a flat position and retries in seconds meanwhile.
EXITING_FLAT_AFTER_S = 10.0
# A flat position is not taken for a close while an order that would reopen it, placed less than this ago, works.
REOPEN_GRACE_S = 30.0


class _LookLive(Exception):
    """The snapshot suggests a repair: decide again on the broker's live state before acting."""


def _confirm(view: BrokerView) -> None:
    """Called before every repair that acts on what the broker showed: a stored snapshot is never acted on."""
    if not view.live:
        raise _LookLive


def _changed_since(bracket: Bracket, view: BrokerView) -> bool:
    """The bracket changed after the view was taken: the view may lack what that change did at the broker."""
    return aware(bracket.updated_at) > aware(view.taken_at)


def _listed_late(gtt_id: str, now: datetime) -> bool:
    """A GTT recorded for its bracket less than GTT_VISIBILITY_GRACE_S ago that the broker does not list yet."""
    recorded = claimed_at(gtt_id)
    return (
        recorded is not None and (aware(now) - aware(recorded)).total_seconds() < get_settings().gtt_visibility_grace_s
    )


def _age_s(bracket: Bracket, order: OrderReport | None, now: datetime) -> float:
    since = (order.order_timestamp if order is not None else None) or bracket.updated_at
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return (now - since).total_seconds()


def _check_created(bracket: Bracket, view: BrokerView, now: datetime) -> Outcome:
    if (now - bracket.created_at).total_seconds() < get_settings().reconcile_resume_after_s:
        return None
    repo = BracketRepository()
    if not start_workflow(repo, bracket):
        return None
    note(bracket.id, "WORKFLOW_RESUMED", "the bracket's workflow had not started; started it")
    return "WORKFLOW_RESUMED", "workflow started"


def _check_entry_pending(bracket: Bracket, view: BrokerView, now: datetime) -> Outcome:
    order_id = bracket.entry.broker_order_id
    if not order_id:
        return None
    order = view.orders.get(str(order_id))
    if order is not None and order.status in FINAL:
        _confirm(view)
        after = lifecycle.apply_entry_fact(bracket.id, OrderFact.from_report(order), cancelled_by="broker")
        if after.status is bracket.status and after.entry == bracket.entry:
            return None  # the watcher got there first
        note(bracket.id, "MISSED_ENTRY_UPDATE", f"entry {order_id} is {order.status} at the broker", order=order)
        return "MISSED_ENTRY_UPDATE", f"entry {order.status}"
    if order is not None:
        # Working at the broker (OPEN, TRIGGER PENDING ...): a DAY limit or a stop-entry breakout may rest all
        # session. Never "frozen": its fill must find the bracket waiting for it, not under review.
        return None
    limit = get_settings().reconcile_frozen_after_s
    if bracket.status is BracketStatus.ENTRY_PENDING and _age_s(bracket, None, now) > limit:
        _confirm(view)
        why = f"FROZEN_ORDER: entry {order_id} sent over {limit} s ago is not in the broker's order book"
        return flag(bracket, why)
    return None


def _check_entry_filled(bracket: Bracket, view: BrokerView, now: datetime) -> Outcome:
    """A filled entry is protected by its workflow within seconds; one still unprotected after
    RECONCILE_RESUME_AFTER_S whose workflow has ended (stopped by hand, or failed where even its failure could not
    be recorded) is protected here as PlaceProtection would, or flattened where no GTT is possible."""
    if (now - aware(bracket.updated_at)).total_seconds() < get_settings().reconcile_resume_after_s:
        return None
    workflow = bracket_workflow_status(bracket.id)
    if workflow == "RUNNING":
        return None  # protecting it, or flattening it: the workflow's own retries are still going
    current = BracketRepository().get(bracket.id)
    if current is None or current.version != bracket.version:
        return None  # it moved on since it was read: look again next run
    ended = f"its workflow is {workflow or 'missing'}"
    spec = bracket.spec
    _confirm(view)
    if view.net_quantity(spec.exchange.value, spec.symbol, spec.product.value) == 0:
        return flag(bracket, f"UNPROTECTED_FILL: entry filled, {ended}, and the broker shows no position")
    try:
        placed = place_protection(bracket.id)
    except ProtectionNotPossible as exc:
        emergency_exit(bracket.id, f"{ended}; no GTT possible: {exc}")
        note(bracket.id, "FLATTENED", f"entry filled, {ended}; no GTT possible, exited at market")
        return "FLATTENED", str(exc)
    except InvalidStateTransition:
        return None  # it moved on since it was read: look again next run
    send_control(placed["watch"])  # the streamer trails it (its periodic resync would find it too)
    note(bracket.id, "PROTECTION_RESUMED", f"entry filled, {ended}; GTT {placed['gtt_id']} placed")
    return "PROTECTION_RESUMED", f"{ended}; GTT {placed['gtt_id']}"


def _check_protected(bracket: Bracket, view: BrokerView, now: datetime) -> Outcome:
    spec = bracket.spec
    gtt = view.gtts.get(str(bracket.gtt_id)) if bracket.gtt_id else None
    net = view.net_quantity(spec.exchange.value, spec.symbol, spec.product.value)
    if gtt is not None and gtt.status == "triggered":
        fills = [view.orders[i] for i in gtt.triggered_order_ids if i in view.orders]
        done = [o for o in fills if o.status == "COMPLETE"]
        if done:
            _confirm(view)
            fill = done[0]
            reason = gtt_exit_reason(bracket, fill.average_price or Decimal(0))
            return close_from_broker(bracket, fill, reason, "GTT_TRIGGERED", f"GTT {gtt.gtt_id} triggered")
        stop_side = bool(fills) and gtt_exit_reason(bracket, fills[0].price or bracket.stop_price) is not TARGET
        if net != 0 and stop_side and _stalled_for(gtt, now) > max(get_settings().gtt_child_grace_s, GTT_STALL_S):
            # Its stop order never filled (a gap past its limit price) or was refused: the streamer dropped the
            # bracket when the GTT fired, so without this nothing exits it. The exit Lambda cancels the order first,
            # then exits what is still open at market.
            _confirm(view)
            last = view.last_price(spec.exchange.value, spec.symbol, spec.product.value) or bracket.stop_price
            why = f"GTT {gtt.gtt_id} triggered but its stop order is {fills[0].status}"
            return queue_stop_exit(bracket, last, why)
        if fills and all(o.status in ("REJECTED", "CANCELLED") for o in fills) and net != 0:
            # Its order was refused or cancelled: nothing protects the position any more. Exited at market through
            # the ExitQueue (the exit Lambda finds the GTT's order dead and exits what is open), not left for review.
            _confirm(view)
            last = view.last_price(spec.exchange.value, spec.symbol, spec.product.value) or bracket.stop_price
            why = f"GTT {gtt.gtt_id} triggered but its order was {fills[0].status}"
            reason = gtt_exit_reason(bracket, fills[0].price or bracket.stop_price)
            return queue_stop_exit(bracket, last, why, reason=reason)
        return None  # the GTT's order is still working
    if net == 0:
        return _position_flat(bracket, view, gtt)
    if gtt is None or gtt.status in GTT_INERT:
        _confirm(view)
        if gtt is None and bracket.gtt_id and _listed_late(bracket.gtt_id, now):
            return None  # answered with its id moments ago, not listed yet: looked at again by the next run
        what = "missing" if gtt is None else gtt.status
        if get_settings().reconcile_reprotect:
            return reprotect(bracket, f"GTT {bracket.gtt_id} {what} at the broker")
        return flag(bracket, f"GTT_GONE: GTT {bracket.gtt_id} {what} at the broker while the position is open")
    return None


def _position_flat(bracket: Bracket, view: BrokerView, gtt: GttReport | None) -> Outcome:
    """The broker shows no position where this bracket holds one: closed elsewhere (by hand, the broker's square-off).
    Its live GTT is cancelled first (with no position it could only open one); the bracket is closed MANUAL at the
    order that closed it, alone or with others' positions, or flagged when no order explains it."""
    spec = bracket.spec
    _confirm(view)
    if view.reopening_orders(bracket, REOPEN_GRACE_S):
        # An order on the entry side placed moments ago still works (the second leg of the trader's quick round
        # trip): when it fills the position is back and this bracket's GTT protects it again. Looked at again by
        # the next run, when the book has settled; the grace is short, so a resting order cannot defer this for long.
        return None
    if gtt is not None and gtt.status == "active":
        cancel_gtt(gtt.gtt_id)  # with no position at the broker, it could only open one
    filled_at = _entry_filled_at(bracket)
    closing = view.closing_order(bracket, filled_at)
    if closing is not None:
        return close_from_broker(
            bracket, closing, ExitReason.MANUAL, "POSITION_CLOSED_AT_BROKER", "position closed at the broker"
        )
    bulk = view.bulk_closing_order(bracket, filled_at)
    if bulk is not None:
        # The position is flat and one order closed it with others': this bracket is closed too, at that
        # order's price (its own share of the order, not the whole order, in the P&L).
        return close_from_broker(
            bracket,
            bulk,
            ExitReason.MANUAL,
            "POSITION_CLOSED_AT_BROKER_IN_BULK",
            f"position closed at the broker by order {bulk.order_id} with others on {spec.symbol}",
            shared=True,
        )
    why = "no single order of its quantity closed it after its fill; its GTT cancelled"
    return flag(bracket, f"POSITION_FLAT: the broker shows no position and {why}")


def _check_exiting(bracket: Bracket, view: BrokerView, now: datetime) -> Outcome:
    leg = bracket.exit
    if leg is None:
        return _check_skipped_exit(bracket, view, now)
    if not leg.broker_order_id:
        return None  # the exit Lambda's message is redelivered until it places or gives up
    if leg.status is OrderStatus.SENT_TO_BROKER:
        order = view.orders.get(str(leg.broker_order_id))
        if order is not None and order.status in FINAL:
            _confirm(view)
            after = lifecycle.apply_exit_fact(bracket.id, OrderFact.from_report(order))
            if after.exit == bracket.exit:
                return None
            note(bracket.id, "MISSED_EXIT_UPDATE", f"exit {leg.broker_order_id} is {order.status}", order=order)
            return "MISSED_EXIT_UPDATE", f"exit {order.status}"
        if _age_s(bracket, order, now) > get_settings().reconcile_frozen_after_s:
            _confirm(view)
            return flag(bracket, f"FROZEN_ORDER: exit {leg.broker_order_id} sent over an hour ago is not final")
        return None
    if leg.status is OrderStatus.EXECUTED and (now - bracket.updated_at).total_seconds() > SETTLE_S:
        return settle_exit(bracket)
    return None


def _check_skipped_exit(bracket: Bracket, view: BrokerView, now: datetime) -> Outcome:
    """EXITING with no exit order. Without an ExitSkipped event the exit Lambda is still at it (its message is
    redelivered until it places or gives up): left alone. With one, the Lambda found the GTT triggered and rightly
    placed nothing, so the GTT's own order is the exit; if its update never reached the watcher, nothing else would
    record it and the bracket would stay EXITING forever."""
    skipped = [e for e in BracketRepository().events(bracket.id) if e.get("type") == ExitSkipped.type]
    if not skipped:
        spec = bracket.spec
        net = view.net_quantity(spec.exchange.value, spec.symbol, spec.product.value)
        if net == 0 and _age_s(bracket, None, now) > EXITING_FLAT_AFTER_S:
            # The exit Lambda found nothing to close (it never places an exit into a flat position): the position
            # was closed elsewhere while the exit was claimed.
            gtt = view.gtts.get(str(bracket.gtt_id)) if bracket.gtt_id else None
            return _position_flat(bracket, view, gtt)
        return None
    gtt_id = str(skipped[-1].get("gtt_id") or bracket.gtt_id)
    gtt = view.gtts.get(gtt_id)
    ids = [*(gtt.triggered_order_ids if gtt is not None else ()), *(skipped[-1].get("triggered_order_ids") or ())]
    children = [view.orders[i] for i in dict.fromkeys(str(i) for i in ids) if i in view.orders]
    if not children:
        children = _untagged_fills(bracket, view)  # a GTT report without its orders' ids: the order book's
    done = [o for o in children if o.status == "COMPLETE"]
    if len(done) == 1:
        _confirm(view)
        fill = done[0]
        reason = gtt_exit_reason(bracket, fill.average_price or Decimal(0))
        detail = f"GTT {gtt_id} fired as the exit was claimed (no exit placed)"
        return close_from_broker(bracket, fill, reason, "GTT_FIRED_DURING_EXIT", detail)
    net = view.net_quantity(bracket.spec.exchange.value, bracket.spec.symbol, bracket.spec.product.value)
    if len(done) > 1:
        _confirm(view)
        return flag(bracket, f"GTT {gtt_id} fired and several orders could be its fill; no exit placed")
    if children and all(o.status in ("REJECTED", "CANCELLED") for o in children):
        _confirm(view)
        return flag(
            bracket, f"GTT {gtt_id} fired but its order was {children[0].status} and no exit was placed (net {net})"
        )
    if _age_s(bracket, None, now) > get_settings().reconcile_frozen_after_s:
        _confirm(view)
        return flag(bracket, f"FROZEN_ORDER: GTT {gtt_id} fired but its order has not filled (net {net})")
    return None  # the GTT's order is still working


def _untagged_fills(bracket: Bracket, view: BrokerView) -> list[OrderReport]:
    """COMPLETE orders that could be this bracket's GTT child: untagged (GTT orders carry no tag), the exit side of
    the same instrument and product, the filled quantity, placed after the bracket and mapped to no bracket."""
    spec = bracket.spec
    since = bracket.created_at
    return [
        o
        for o in view.orders.values()
        if o.status == "COMPLETE"
        and not o.tag
        and o.exchange == spec.exchange.value
        and o.tradingsymbol == spec.symbol
        and o.product == spec.product.value
        and o.transaction_type == spec.exit_action.value
        and o.filled_quantity == bracket.entry.filled_quantity
        and (o.order_timestamp is None or aware(o.order_timestamp) >= since)
        and store.get_broker_order_map(str(o.order_id)) is None
    ]


def _entry_filled_at(bracket: Bracket) -> datetime | None:
    """When the entry's last fill happened: the broker's own trade stamps, else when the fill was recorded (never
    earlier than the fill itself, so an order of the trader's from before it is still never taken as its close)."""
    order_id = bracket.entry.broker_order_id
    if order_id:
        stamps = [t.fill_timestamp for t in get_broker().order_trades(str(order_id)) if t.fill_timestamp is not None]
        if stamps:
            return max(aware(t) for t in stamps)
    recorded = [e.get("at") for e in BracketRepository().events(bracket.id) if e.get("type") == EntryFilled.type]
    return parse_time(recorded[-1]) if recorded and recorded[-1] else None


def _check(bracket: Bracket, view: BrokerView, now: datetime) -> Outcome:
    """The check for the bracket's status (plain calls, so the least-privilege test can follow them)."""
    status = bracket.status
    if status is BracketStatus.CREATED:
        return _check_created(bracket, view, now)
    if status is BracketStatus.ENTRY_PENDING:
        return _check_entry_pending(bracket, view, now)
    if status is BracketStatus.ENTRY_FILLED:
        return _check_entry_filled(bracket, view, now)
    if status is BracketStatus.PROTECTED:
        return _check_protected(bracket, view, now)
    if status is BracketStatus.EXITING:
        return _check_exiting(bracket, view, now)
    if lifecycle.entry_undecided(bracket):
        # NEEDS_REVIEW while its entry still works: the broker's answer is recorded all the same (a fill goes on
        # to be protected), or the fill whose update was lost would sit unprotected behind the review
        return _check_entry_pending(bracket, view, now)
    if status is BracketStatus.NEEDS_REVIEW and bracket.entry.status is OrderStatus.CREATED:
        return _check_unrecorded_entry(bracket, view)
    return None  # EXIT_FAILED (exit retried), NEEDS_REVIEW (a human's)


def _check_unrecorded_entry(bracket: Bracket, view: BrokerView) -> Outcome:
    """Flagged while its entry's outcome was unknown (placing it failed for good after the broker may have acted):
    the entry is looked for by its tag, and when the broker has it, it is recorded, so its fill is protected."""
    tag = order_tag(bracket.id, LegRole.ENTRY.value)
    found = sorted((o for o in view.orders.values() if o.tag == tag), key=lambda o: str(o.order_id))
    if not found:
        return None
    _confirm(view)
    order = found[0]
    recorded = lifecycle.record_entry_found_under_review(bracket.id, str(order.order_id))
    note(bracket.id, "ENTRY_FOUND_BY_TAG", f"entry {order.order_id} is {order.status} at the broker", order=order)
    # Its outcome, in the same run: a fill goes on to ENTRY_FILLED (protected as any fill), a cancel to CANCELLED.
    _check_entry_pending(recorded, view, utc_now())
    return "ENTRY_FOUND_BY_TAG", f"entry {order.order_id} {order.status}"


def _stalled_for(gtt: GttReport, now: datetime) -> float:
    """Seconds since the GTT fired (its last change at the broker); 0 when the broker gives no time."""
    fired = gtt.updated_at or gtt.created_at
    return 0.0 if fired is None else (aware(now) - aware(fired)).total_seconds()
