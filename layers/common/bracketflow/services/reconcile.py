"""Reconciliation with the broker (statemachine/reconcile.asl.json): one snapshot, then each open bracket repaired.

TakeSnapshot: the broker's orders, positions and GTTs, stored for the run (adapters/dynamo/reconcile.py); returns the
run id and the open brackets (the sparse OPEN index). ReconcileBracket compares one bracket with that view:

  CREATED, older than RECONCILE_RESUME_AFTER_S       its workflow never started -> start it (WORKFLOW_RESUMED)
  ENTRY_PENDING, entry final at the broker           a missed order update -> recorded as the watcher would
                                                     (fill/reject/cancel; the waiting task is completed)
  ENTRY_PENDING / EXITING, order still open or       SENT_TO_BROKER for over RECONCILE_FROZEN_AFTER_S ("frozen",
  missing from the book for that long                the order lifecycle) -> NEEDS_REVIEW
  ENTRY_FILLED for RECONCILE_RESUME_AFTER_S, its    a filled position without a stop -> protected here as
  workflow ended (Step Functions: not RUNNING)       PlaceProtection would (PROTECTION_RESUMED; the streamer told to
                                                     watch it), flattened at market when no GTT is possible
                                                     (FLATTENED), NEEDS_REVIEW when the broker shows no position
  PROTECTED, GTT triggered and its order COMPLETE    closed by the broker -> exit recorded (reason TARGET, STOP or
                                                     TRAIL_STOP by the fill price), then WaitForExit completed (or,
                                                     with no workflow waiting, Finalize run here) -> CLOSED
  PROTECTED, position flat at the broker             closed by hand -> the GTT (if still active) cancelled first, exit
                                                     recorded from the broker's closing order, reason MANUAL -> CLOSED
  PROTECTED, GTT gone but position open              re-protected with a new GTT (RECONCILE_REPROTECT, default) or
                                                     NEEDS_REVIEW; with the market already through the stop, a STOP
                                                     exit intent on the ExitQueue (STOP_EXIT_QUEUED)
  EXITING, no exit order, ExitSkipped recorded      the exit Lambda found the GTT triggered and placed nothing;
                                                     the GTT's child order (its orders/result ids, else the one
                                                     untagged fill in the order book) COMPLETE -> exit recorded
                                                     (TARGET, STOP or TRAIL_STOP by the fill price) -> CLOSED; the
                                                     child REJECTED/CANCELLED, or none for RECONCILE_FROZEN_AFTER_S
                                                     -> NEEDS_REVIEW (the position may be open, unprotected)
  EXITING, exit order final at the broker            a missed order update -> recorded (fill completes WaitForExit)
  EXITING, exit filled but never finalised           WaitForExit completed again, or Finalize run here

Every repair is a conditional write with its audit events (the helpers' own events plus a Reconciled event naming the
repair); a bracket that changed since it was read is left for the next run. Summarize reports GTTs that no open
bracket owns (cancelled only with RECONCILE_CANCEL_ORPHAN_GTTS, and only when still unowned on a fresh look and
older than ORPHAN_MIN_AGE_S) and emits the drift metrics (ReconcileDrift, ReconcileFlagged, OrphanGtts).

Known limit: positions are netted per instrument and product at the broker; with two open brackets on one
instrument, "flat" means both were closed, and a partial manual close is not told apart (the bracket stays open).
"""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bracketflow import metrics_names
from bracketflow.adapters.broker import get_broker
from bracketflow.adapters.broker.port import GTT_INERT, GttLeg, GttReport, OrderReport, PositionReport
from bracketflow.adapters.dynamo import lifecycle as store
from bracketflow.adapters.dynamo import reconcile as snapshots
from bracketflow.adapters.dynamo import records as r
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.adapters.dynamo.gtt_claims import (
    GttClaimedElsewhere,
    claim_alone,
    claimant,
    claimed_at,
    save_claiming,
)
from bracketflow.adapters.instrument_store import current_master
from bracketflow.adapters.sfn import bracket_workflow_status
from bracketflow.adapters.sqs import send_control, send_json
from bracketflow.contracts import ExitRequest
from bracketflow.domain import calendar
from bracketflow.domain.bracket import Bracket, LegOrder
from bracketflow.domain.enums import BracketStatus, ExitReason, LegRole, OrderStatus, PositionSide
from bracketflow.domain.events import EntryFilled, ExitFilled, ExitSkipped, FlaggedForReview, Reconciled
from bracketflow.domain.ids import BrokerOrderId, order_tag
from bracketflow.domain.states import is_terminal
from bracketflow.domain.validation import check_levels
from bracketflow.errors import (
    BracketflowError,
    ConcurrentModification,
    InvalidStateTransition,
    ProtectionNotPossible,
    ValidationFailed,
)
from bracketflow.observability import logger, metrics
from bracketflow.services import lifecycle
from bracketflow.services.emergency_exit import emergency_exit
from bracketflow.services.finalize import finalize
from bracketflow.services.lifecycle import OrderFact, event, retrying
from bracketflow.services.order_updates import gtt_exit_reason, is_bracket_order_tag
from bracketflow.services.protect import CLAIM_ATTEMPTS, own_twin_or_new_gtt, place_protection, protection_request
from bracketflow.services.register_bracket import start_workflow
from bracketflow.settings import get_settings

FINAL = frozenset({"COMPLETE", "CANCELLED", "REJECTED"})
ORPHAN_MIN_AGE_S = 300
# A GTT that fired this long ago with its stop order still unfilled is exited by reconciliation (the exit Lambda
# usually does it within GTT_CHILD_GRACE_S when the streamer saw the stop; this covers when it did not).
GTT_STALL_S = 10.0
TARGET = ExitReason.TARGET
SETTLE_S = 60  # an exit filled this long ago and still not closed has lost its WaitForExit


# ---------- the broker view ----------


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _when(value: Any) -> datetime | None:
    return None if not value else datetime.fromisoformat(str(value))


@dataclass(frozen=True)
class BrokerView:
    """The broker's orders, positions and GTTs as read at `taken_at` (the moment before the first read, so nothing
    in it is older than that). live: read just now for one repair, not the run's stored snapshot."""

    taken_at: datetime
    orders: dict[str, OrderReport]
    positions: list[PositionReport]
    gtts: dict[str, GttReport]
    live: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "taken_at": self.taken_at.isoformat(),
            "orders": [_jsonable(asdict(o)) for o in self.orders.values()],
            "positions": [_jsonable(asdict(p)) for p in self.positions],
            "gtts": [_jsonable(asdict(g)) for g in self.gtts.values()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BrokerView:
        orders = []
        for o in data["orders"]:
            money = {k: _dec(o.get(k)) for k in ("price", "trigger_price", "average_price")}
            orders.append(OrderReport(**{**o, **money, "order_timestamp": _when(o.get("order_timestamp"))}))
        positions = [
            PositionReport(
                **{
                    **p,
                    **{k: _dec(p.get(k)) for k in ("last_price", "pnl")},
                    "average_price": Decimal(p["average_price"]),
                }
            )
            for p in data["positions"]
        ]
        gtts = []
        for g in data["gtts"]:
            gtts.append(
                GttReport(
                    **{
                        **g,
                        "trigger_values": tuple(Decimal(v) for v in g["trigger_values"]),
                        "last_price": _dec(g.get("last_price")),
                        "orders": tuple(GttLeg(**{**leg, "price": Decimal(leg["price"])}) for leg in g["orders"]),
                        "triggered_order_ids": tuple(str(i) for i in g.get("triggered_order_ids") or ()),
                        "created_at": _when(g.get("created_at")),
                        "updated_at": _when(g.get("updated_at")),
                    }
                )
            )
        return cls(
            taken_at=datetime.fromisoformat(data["taken_at"]),
            orders={str(o.order_id): o for o in orders},
            positions=positions,
            gtts={str(g.gtt_id): g for g in gtts},
        )

    def net_quantity(self, exchange: str, symbol: str, product: str) -> int:
        return sum(
            p.quantity
            for p in self.positions
            if p.exchange == exchange and p.tradingsymbol == symbol and p.product == product
        )

    def last_price(self, exchange: str, symbol: str, product: str) -> Decimal | None:
        """The instrument's last price as the broker's position row shows it (None without one)."""
        for p in self.positions:
            if p.exchange == exchange and p.tradingsymbol == symbol and p.product == product and p.last_price:
                return p.last_price
        return None

    def _exit_side_fills_since(self, bracket: Bracket, filled_at: datetime) -> list[OrderReport]:
        """COMPLETE orders on the exit side of the bracket's instrument and product, placed at or after `filled_at`
        (the broker's stamps are whole seconds), oldest first."""
        spec = bracket.spec
        since = _aware(filled_at).replace(microsecond=0)
        found = [
            o
            for o in self.orders.values()
            if o.status == "COMPLETE"
            and o.exchange == spec.exchange.value
            and o.tradingsymbol == spec.symbol
            and o.product == spec.product.value
            and o.transaction_type == spec.exit_action.value
            and o.order_timestamp is not None
            and _aware(o.order_timestamp) >= since
        ]
        return sorted(found, key=lambda o: (_aware(o.order_timestamp or since), str(o.order_id)))

    def closing_order(self, bracket: Bracket, filled_at: datetime | None) -> OrderReport | None:
        """The order that closed this bracket's position at the broker: COMPLETE, the exit side of the same
        instrument and product, for the bracket's whole filled quantity, placed at or after the entry's last fill
        (`filled_at`; the broker's stamps are whole seconds) and recorded for no other bracket. The first such order
        after the fill closed it; None when there is none (an earlier order of the trader's, a close in several
        pieces, or no fill time to compare with: a human looks)."""
        if filled_at is None:
            return None
        for order in self._exit_side_fills_since(bracket, filled_at):
            whole = order.filled_quantity == bracket.entry.filled_quantity
            if not whole or order.order_id == bracket.entry.broker_order_id:
                continue
            mapped = store.get_broker_order_map(str(order.order_id))
            if mapped is None or mapped.get("bracket_id") == bracket.id:
                return order
        return None

    def bulk_closing_order(self, bracket: Bracket, filled_at: datetime | None) -> OrderReport | None:
        """An order not of ours that closed this bracket's position together with others on the same instrument
        and product (the Kite app's Positions -> Exit sells the whole net position in one order): COMPLETE, the
        exit side, for more than the bracket's filled quantity, placed at or after its fill, carrying no tag of
        ours. The latest such order; None when there is none (a close in several pieces: a human looks)."""
        if filled_at is None:
            return None
        bulk = [
            o
            for o in self._exit_side_fills_since(bracket, filled_at)
            if o.filled_quantity > bracket.entry.filled_quantity and not is_bracket_order_tag(o.tag)
        ]
        return bulk[-1] if bulk else None


def utc_now() -> datetime:
    return datetime.now(UTC)


def trading_day(at: datetime) -> bool:
    """A day some segment trades (MCX's evening session on an equity holiday counts); paper always trades."""
    if get_settings().broker == "paper":
        return True
    return calendar.market_calendar().trades_on(at.astimezone(calendar.IST).date())


def take_snapshot(now: datetime | None = None) -> dict[str, Any]:
    """TakeSnapshot: the broker's view stored for this run; returns {"run_id", "taken_at", "brackets": [...]}.

    The run is scheduled through every session of every segment (into the commodity evening), most of it with no
    bracket open: then only the GTTs are read (for the orphan report), not the orders and positions."""
    at = now or utc_now()
    if not trading_day(at):
        # An exchange holiday or a weekend (the schedule is a weekday cron): nothing moves at the broker, so the run
        # records an empty view and checks no bracket, rather than spend the broker's rate limit on a closed market.
        run_id = f"{at.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        snapshots.put_snapshot(run_id, r.iso(at), BrokerView(taken_at=at, orders={}, positions=[], gtts={}).to_json())
        logger.info("no session today: reconciliation skipped", extra={"run_id": run_id})
        return {"run_id": run_id, "taken_at": r.iso(at), "brackets": [], "market": "closed"}
    brackets = [{"bracket_id": b.id, "account_id": b.account_id} for b in BracketRepository().list_open()]
    view = read_broker(at, everything=bool(brackets))
    run_id = f"{at.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    snapshots.put_snapshot(run_id, r.iso(at), view.to_json())
    logger.info(
        "broker snapshot taken",
        extra={"run_id": run_id, "orders": len(view.orders), "gtts": len(view.gtts), "open_brackets": len(brackets)},
    )
    return {"run_id": run_id, "taken_at": r.iso(at), "brackets": brackets}


def read_broker(at: datetime, *, everything: bool = True, live: bool = False) -> BrokerView:
    """The broker's orders, positions and GTTs (only its GTTs unless `everything`), stamped `at`: a moment taken
    before the first read, so every fact in the view is at least that recent."""
    broker = get_broker()
    return BrokerView(
        taken_at=at,
        orders={str(o.order_id): o for o in broker.orders()} if everything else {},
        positions=list(broker.positions()) if everything else [],
        gtts={str(g.gtt_id): g for g in broker.gtts()},
        live=live,
    )


def live_view() -> BrokerView:
    """The broker as it is now: what every repair that places, cancels, closes or flags decides on."""
    return read_broker(utc_now(), live=True)


@functools.lru_cache(maxsize=4)
def load_view(run_id: str) -> BrokerView:
    """The run's snapshot, read and parsed once per warm container: a run's snapshot is written once and never
    changed, and every bracket of the run (the Map's iterations) and its summary read it; it holds every order of
    the day, so reading it per bracket cost more the longer the session ran. Not cached when missing (raises)."""
    data = snapshots.get_snapshot(run_id)
    if data is None:
        raise ValidationFailed(f"reconcile run {run_id}: no broker snapshot (expired or never taken)")
    return BrokerView.from_json(data)


# ---------- one bracket ----------


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


class _LookLive(Exception):
    """The snapshot suggests a repair: decide again on the broker's live state before acting."""


def _confirm(view: BrokerView) -> None:
    """Called before every repair that acts on what the broker showed: a stored snapshot is never acted on."""
    if not view.live:
        raise _LookLive


def _changed_since(bracket: Bracket, view: BrokerView) -> bool:
    """The bracket changed after the view was taken: the view may lack what that change did at the broker."""
    return _aware(bracket.updated_at) > _aware(view.taken_at)


def _listed_late(gtt_id: str, now: datetime) -> bool:
    """A GTT recorded for its bracket less than GTT_VISIBILITY_GRACE_S ago that the broker does not list yet."""
    recorded = claimed_at(gtt_id)
    return (
        recorded is not None
        and (_aware(now) - _aware(recorded)).total_seconds() < get_settings().gtt_visibility_grace_s
    )


Outcome = tuple[str, str] | None


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
    _note(bracket.id, "WORKFLOW_RESUMED", "the bracket's workflow had not started; started it")
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
        _note(bracket.id, "MISSED_ENTRY_UPDATE", f"entry {order_id} is {order.status} at the broker", order=order)
        return "MISSED_ENTRY_UPDATE", f"entry {order.status}"
    if order is not None:
        # Working at the broker (OPEN, TRIGGER PENDING ...): a DAY limit or a stop-entry breakout may rest all
        # session. Never "frozen": its fill must find the bracket waiting for it, not under review.
        return None
    limit = get_settings().reconcile_frozen_after_s
    if bracket.status is BracketStatus.ENTRY_PENDING and _age_s(bracket, None, now) > limit:
        _confirm(view)
        why = f"FROZEN_ORDER: entry {order_id} sent over {limit} s ago is not in the broker's order book"
        return _flag(bracket, why)
    return None


def _check_entry_filled(bracket: Bracket, view: BrokerView, now: datetime) -> Outcome:
    """A filled entry is protected by its workflow within seconds; one still unprotected after
    RECONCILE_RESUME_AFTER_S whose workflow has ended (stopped by hand, or failed where even its failure could not
    be recorded) is protected here as PlaceProtection would, or flattened where no GTT is possible."""
    if (now - _aware(bracket.updated_at)).total_seconds() < get_settings().reconcile_resume_after_s:
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
        return _flag(bracket, f"UNPROTECTED_FILL: entry filled, {ended}, and the broker shows no position")
    try:
        placed = place_protection(bracket.id)
    except ProtectionNotPossible as exc:
        emergency_exit(bracket.id, f"{ended}; no GTT possible: {exc}")
        _note(bracket.id, "FLATTENED", f"entry filled, {ended}; no GTT possible, exited at market")
        return "FLATTENED", str(exc)
    except InvalidStateTransition:
        return None  # it moved on since it was read: look again next run
    send_control(placed["watch"])  # the streamer trails it (its periodic resync would find it too)
    _note(bracket.id, "PROTECTION_RESUMED", f"entry filled, {ended}; GTT {placed['gtt_id']} placed")
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
            return _close_from_broker(bracket, fill, reason, "GTT_TRIGGERED", f"GTT {gtt.gtt_id} triggered")
        stop_side = bool(fills) and gtt_exit_reason(bracket, fills[0].price or bracket.stop_price) is not TARGET
        if net != 0 and stop_side and _stalled_for(gtt, now) > max(get_settings().gtt_child_grace_s, GTT_STALL_S):
            # Its stop order never filled (a gap past its limit price) or was refused: the streamer dropped the
            # bracket when the GTT fired, so without this nothing exits it. The exit Lambda cancels the order first,
            # then exits what is still open at market.
            _confirm(view)
            last = view.last_price(spec.exchange.value, spec.symbol, spec.product.value) or bracket.stop_price
            why = f"GTT {gtt.gtt_id} triggered but its stop order is {fills[0].status}"
            return _queue_stop_exit(bracket, last, why)
        if fills and all(o.status in ("REJECTED", "CANCELLED") for o in fills) and net != 0:
            # Its order was refused or cancelled: nothing protects the position any more. Exited at market through
            # the ExitQueue (the exit Lambda finds the GTT's order dead and exits what is open), not left for review.
            _confirm(view)
            last = view.last_price(spec.exchange.value, spec.symbol, spec.product.value) or bracket.stop_price
            why = f"GTT {gtt.gtt_id} triggered but its order was {fills[0].status}"
            reason = gtt_exit_reason(bracket, fills[0].price or bracket.stop_price)
            return _queue_stop_exit(bracket, last, why, reason=reason)
        return None  # the GTT's order is still working
    if net == 0:
        return _position_flat(bracket, view, gtt)
    if gtt is None or gtt.status in GTT_INERT:
        _confirm(view)
        if gtt is None and bracket.gtt_id and _listed_late(bracket.gtt_id, now):
            return None  # answered with its id moments ago, not listed yet: looked at again by the next run
        what = "missing" if gtt is None else gtt.status
        if get_settings().reconcile_reprotect:
            return _reprotect(bracket, f"GTT {bracket.gtt_id} {what} at the broker")
        return _flag(bracket, f"GTT_GONE: GTT {bracket.gtt_id} {what} at the broker while the position is open")
    return None


def _position_flat(bracket: Bracket, view: BrokerView, gtt: GttReport | None) -> Outcome:
    """The broker shows no position where this bracket holds one: closed elsewhere (by hand, the broker's square-off).
    Its live GTT is cancelled first (with no position it could only open one); the bracket is closed MANUAL at the
    order that closed it, alone or with others' positions, or flagged when no order explains it."""
    spec = bracket.spec
    _confirm(view)
    if gtt is not None and gtt.status == "active":
        _cancel_gtt(gtt.gtt_id)  # with no position at the broker, it could only open one
    filled_at = _entry_filled_at(bracket)
    closing = view.closing_order(bracket, filled_at)
    if closing is not None:
        return _close_from_broker(
            bracket, closing, ExitReason.MANUAL, "POSITION_CLOSED_AT_BROKER", "position closed at the broker"
        )
    bulk = view.bulk_closing_order(bracket, filled_at)
    if bulk is not None:
        # The position is flat and one order closed it with others': this bracket is closed too, at that
        # order's price (its own share of the order, not the whole order, in the P&L).
        return _close_from_broker(
            bracket,
            bulk,
            ExitReason.MANUAL,
            "POSITION_CLOSED_AT_BROKER_IN_BULK",
            f"position closed at the broker by order {bulk.order_id} with others on {spec.symbol}",
            shared=True,
        )
    why = "no single order of its quantity closed it after its fill; its GTT cancelled"
    return _flag(bracket, f"POSITION_FLAT: the broker shows no position and {why}")


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
            _note(bracket.id, "MISSED_EXIT_UPDATE", f"exit {leg.broker_order_id} is {order.status}", order=order)
            return "MISSED_EXIT_UPDATE", f"exit {order.status}"
        if _age_s(bracket, order, now) > get_settings().reconcile_frozen_after_s:
            _confirm(view)
            return _flag(bracket, f"FROZEN_ORDER: exit {leg.broker_order_id} sent over an hour ago is not final")
        return None
    if leg.status is OrderStatus.EXECUTED and (now - bracket.updated_at).total_seconds() > SETTLE_S:
        return _settle_exit(bracket)
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
        return _close_from_broker(bracket, fill, reason, "GTT_FIRED_DURING_EXIT", detail)
    net = view.net_quantity(bracket.spec.exchange.value, bracket.spec.symbol, bracket.spec.product.value)
    if len(done) > 1:
        _confirm(view)
        return _flag(bracket, f"GTT {gtt_id} fired and several orders could be its fill; no exit placed")
    if children and all(o.status in ("REJECTED", "CANCELLED") for o in children):
        _confirm(view)
        return _flag(
            bracket, f"GTT {gtt_id} fired but its order was {children[0].status} and no exit was placed (net {net})"
        )
    if _age_s(bracket, None, now) > get_settings().reconcile_frozen_after_s:
        _confirm(view)
        return _flag(bracket, f"FROZEN_ORDER: GTT {gtt_id} fired but its order has not filled (net {net})")
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
        and (o.order_timestamp is None or _aware(o.order_timestamp) >= since)
        and store.get_broker_order_map(str(o.order_id)) is None
    ]


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _entry_filled_at(bracket: Bracket) -> datetime | None:
    """When the entry's last fill happened: the broker's own trade stamps, else when the fill was recorded (never
    earlier than the fill itself, so an order of the trader's from before it is still never taken as its close)."""
    order_id = bracket.entry.broker_order_id
    if order_id:
        stamps = [t.fill_timestamp for t in get_broker().order_trades(str(order_id)) if t.fill_timestamp is not None]
        if stamps:
            return max(_aware(t) for t in stamps)
    recorded = [e.get("at") for e in BracketRepository().events(bracket.id) if e.get("type") == EntryFilled.type]
    return _when(recorded[-1]) if recorded and recorded[-1] else None


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
    _note(bracket.id, "ENTRY_FOUND_BY_TAG", f"entry {order.order_id} is {order.status} at the broker", order=order)
    # Its outcome, in the same run: a fill goes on to ENTRY_FILLED (protected as any fill), a cancel to CANCELLED.
    _check_entry_pending(recorded, view, utc_now())
    return "ENTRY_FOUND_BY_TAG", f"entry {order.order_id} {order.status}"


# ---------- repairs ----------


def _note(bracket_id: str, repair: str, detail: str, order: OrderReport | None = None, **data: Any) -> None:
    """Append a Reconciled event to whatever state the bracket is in now (a repair done by a lifecycle helper)."""
    repo = BracketRepository()
    broker = {} if order is None else {"order_id": str(order.order_id), "broker_status": order.status}

    def step(b: Bracket) -> Bracket:
        nxt = b.update()
        repo.save(b, nxt, [event(Reconciled, nxt, repair=repair, detail=detail, **broker, **data)])
        return nxt

    retrying(bracket_id, step)


def _flag(bracket: Bracket, reason: str, order: OrderReport | None = None) -> Outcome:
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


def _close_from_broker(
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


def _settle_exit(bracket: Bracket) -> Outcome:
    _note(bracket.id, "EXIT_SETTLED", "the exit filled but the bracket was never closed")
    current = BracketRepository().get(bracket.id)
    if current is not None and current.status is BracketStatus.EXITING:
        _complete_or_finalize(current)
    return "EXIT_SETTLED", "exit filled earlier; closed now"


def _cancel_gtt(gtt_id: int) -> None:
    """Cancel a GTT that would otherwise fire into a position that no longer exists (refusal: already gone)."""
    try:
        get_broker().delete_gtt(int(gtt_id))
    except BracketflowError as exc:
        logger.warning("GTT cancel refused", extra={"gtt_id": gtt_id, "error": str(exc)})


def _reprotect(bracket: Bracket, why: str) -> Outcome:
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
            return _queue_stop_exit(bracket, last, why)
        if last is not None and _past_the_target(bracket, last) and settings.exit_queue_url:
            # A new GTT would fire its target leg at once: the exit it would make, taken through the exit Lambda,
            # rather than a position left with no stop at all while it waits for a human.
            return _queue_stop_exit(bracket, last, why, reason=ExitReason.TARGET)
        return _flag(bracket, f"{why}; cannot re-protect: the market ({last}) is beyond the stop or target")
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
            _cancel_gtt(int(new_id))
        return None
    return "REPROTECTED", f"{why}; new GTT {new_id}"


def _stalled_for(gtt: GttReport, now: datetime) -> float:
    """Seconds since the GTT fired (its last change at the broker); 0 when the broker gives no time."""
    fired = gtt.updated_at or gtt.created_at
    return 0.0 if fired is None else (_aware(now) - _aware(fired)).total_seconds()


def _through_the_stop(bracket: Bracket, last: Decimal) -> bool:
    if bracket.position_side is PositionSide.LONG:
        return last <= bracket.stop_price
    return last >= bracket.stop_price


def _past_the_target(bracket: Bracket, last: Decimal) -> bool:
    if bracket.position_side is PositionSide.LONG:
        return last >= bracket.spec.target_price
    return last <= bracket.spec.target_price


def _queue_stop_exit(bracket: Bracket, last: Decimal, why: str, *, reason: ExitReason | None = None) -> Outcome:
    """The market went through the stop (or past the target) while no GTT stood: exit as the streamer would have
    (STOP, or TRAIL_STOP for a trailed stop) or as the GTT's target leg would have (TARGET) through the ExitQueue, so
    the exit Lambda claims it exactly once with the queue's retries (flagging it for review instead would make the
    exit Lambda refuse it, and leave the position open)."""
    reason = reason or (ExitReason.TRAIL_STOP if bracket.stop_has_trailed else ExitReason.STOP)
    detail = f"{why}; the market is at {last} (stop {bracket.stop_price}): {reason.value} exit queued"
    _note(bracket.id, "STOP_EXIT_QUEUED", detail)
    intent = ExitRequest(
        bracket_id=bracket.id,
        reason=reason,
        ltp=last,
        stop_price=bracket.stop_price,
        detected_at=utc_now().isoformat().replace("+00:00", "Z"),
    )
    send_json(get_settings().exit_queue_url, intent.to_dict())
    return "STOP_EXIT_QUEUED", detail


# ---------- the run's summary ----------


def summarize(run_id: str, results: list[dict[str, Any]], now: datetime | None = None) -> dict[str, Any]:
    """Summary: repairs counted, GTTs no open bracket owns reported (and cancelled when configured)."""
    view = load_view(run_id)
    at = now or utc_now()
    owned = {str(b.gtt_id) for b in BracketRepository().list_open() if b.gtt_id}
    unowned = [g for g in view.gtts.values() if g.status == "active" and str(g.gtt_id) not in owned]
    # Ours but finished with: cancelled (by default) on a fresh look. The rest are orphans: reported and alarmed,
    # cancelled only when configured (they may be the trader's own GTTs).
    finished = [g for g in unowned if _no_longer_protecting(str(g.gtt_id))]
    orphans = [g for g in unowned if g not in finished]
    finished_cancelled: list[str] = []
    if finished and get_settings().reconcile_cancel_finished_gtts:
        finished_cancelled = _cancel_finished(finished)
    cancelled: list[str] = []
    if orphans and get_settings().reconcile_cancel_orphan_gtts:
        cancelled = _cancel_orphans(orphans, at)
    repairs: dict[str, int] = {}
    for result in results:
        repair = (result or {}).get("repair")
        if repair:
            repairs[repair] = repairs.get(repair, 0) + 1
    if orphans:
        metrics.add_metric(name="OrphanGtts", unit="Count", value=len(orphans))
        logger.warning("GTTs at the broker that no open bracket owns", extra={"gtt_ids": [g.gtt_id for g in orphans]})
    errors = [x for x in results if (x or {}).get("error")]
    summary = {
        "run_id": run_id,
        "brackets": len(results),
        "repairs": repairs,
        "errors": len(errors),
        "orphan_gtts": [str(g.gtt_id) for g in orphans],
        "orphan_gtts_cancelled": cancelled,
        "finished_gtts": [str(g.gtt_id) for g in finished],
        "finished_gtts_cancelled": finished_cancelled,
    }
    _record_last_run(summary, results, at)
    return summary


LAST_RUN_REPAIRED_KEPT = 50  # the brackets a run repaired that its record lists (the counts cover them all)


def _record_last_run(summary: dict[str, Any], results: list[dict[str, Any]], at: datetime) -> None:
    """Keep the run's summary for the console's status panel: when it ran, and which brackets it repaired (with
    their account, so each trader sees only their own). Never fails the run: the repairs are done already."""
    repaired: list[dict[str, Any]] = []
    for result in results:
        if (result or {}).get("repair") and len(repaired) < LAST_RUN_REPAIRED_KEPT:
            bracket = BracketRepository().get(str(result["bracket_id"]))
            account = str(bracket.account_id) if bracket else ""
            repaired.append(
                {"bracket_id": str(result["bracket_id"]), "repair": result["repair"], "account_id": account}
            )
    run = {
        "run_id": summary["run_id"],
        "at": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "brackets": summary["brackets"],
        "repairs": summary["repairs"],
        "errors": summary["errors"],
        "orphan_gtts": len(summary["orphan_gtts"]),
        "repaired": repaired,
    }
    try:
        snapshots.put_last_run(run)
    except Exception:  # a convenience for the status panel: the repairs are recorded per bracket already
        logger.exception("the reconcile run's summary could not be kept for the status panel")


def _no_longer_protecting(gtt_id: str) -> bool:
    """A GTT one of our brackets claimed, whose bracket (read now) is finished or records a different GTT."""
    owner = claimant(gtt_id)
    if owner is None:
        return False
    bracket = BracketRepository().get(owner)
    return bracket is None or is_terminal(bracket.status) or (bool(bracket.gtt_id) and str(bracket.gtt_id) != gtt_id)


def _cancel_finished(gtts: list[GttReport]) -> list[str]:
    """Cancel the finished brackets' GTTs that are still live on a fresh look at the broker and still unneeded."""
    live = {str(g.gtt_id): g for g in get_broker().gtts()}
    cancelled = []
    for gtt in gtts:
        fresh = live.get(str(gtt.gtt_id))
        if fresh is None or fresh.status != "active" or not _no_longer_protecting(str(gtt.gtt_id)):
            continue
        _cancel_gtt(gtt.gtt_id)
        cancelled.append(str(gtt.gtt_id))
    if cancelled:
        metrics.add_metric(name=metrics_names.FINISHED_GTTS_CANCELLED, unit="Count", value=len(cancelled))
        logger.warning("live GTTs of finished brackets cancelled", extra={"gtt_ids": cancelled})
    return cancelled


def _cancel_orphans(orphans: list[GttReport], now: datetime) -> list[str]:
    """Cancel orphans still unowned on a fresh look and old enough (a GTT placed moments ago may not be recorded)."""
    owned = {str(b.gtt_id) for b in BracketRepository().list_open() if b.gtt_id}
    broker = get_broker()
    live = {str(g.gtt_id): g for g in broker.gtts()}
    cancelled = []
    for gtt in orphans:
        fresh = live.get(str(gtt.gtt_id))
        if fresh is None or fresh.status != "active" or str(gtt.gtt_id) in owned:
            continue
        created = fresh.created_at or now
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        if now - created < timedelta(seconds=ORPHAN_MIN_AGE_S):
            continue
        _cancel_gtt(gtt.gtt_id)
        cancelled.append(str(gtt.gtt_id))
    return cancelled
