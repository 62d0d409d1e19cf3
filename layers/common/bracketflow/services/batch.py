"""Batch orders (docs/state-machines.md): 1..10 orders placed together, all-or-nothing when asked.

The use cases, in the order the saga (statemachine/batch.asl.json) runs them:
  register_batch   validate every leg like a single order, record the batch + legs + event, start the saga
  place_leg        place one leg (Map, bounded concurrency, under the account-wide order rate limiter)
  settle_placements  after the Map: record legs the Map gave up on, decide PLACED / PARTIAL / FAILED, or start a
                   rollback and hand back the legs to undo in REVERSE order
  rollback_leg     compensate one leg: cancel it while open, square off what filled (MARKET, market protection)
  finish_batch     after the rollback Map: ROLLED_BACK, or FAILED with an alarm metric when a compensation gave up
and the reads: get_batch (the API's response shape + each leg + the batch status) and wait_for_batch.

Quantity: `quantity` is in UNITS, as Kite takes it and as the API's example sends it (50 = one NIFTY lot then);
it must be a positive multiple of the instrument's lot size (NIFTY options: 75), or the leg is refused.

A resent POST (a client timeout, a retry) is made safe by an optional client_batch_id (or the Idempotency-Key
header, the same thing): its key DEDUPE#<account>#BATCH#<id> is written in the SAME transaction as the batch, so of
any number of concurrent sends exactly one records a batch and starts its saga. A resend with the same legs and
rollback_on_failure inside CLIENT_BATCH_ID_WINDOW_SECONDS (default 24 h) answers that batch as it is now, with
"duplicate": true; the same id with a different batch is refused 409 and nothing is written.

Idempotency, because Step Functions retries and a Lambda may run twice:
- every leg's order carries a deterministic tag (leg_tag), and place_leg looks the tag up at the broker before
  placing, so a rerun adopts the order instead of placing another;
- a square-off carries its own deterministic tag (square_off_tag) and is looked up the same way;
- every leg change is a conditional write with its audit event in one transaction: a second run writes nothing
  and returns what the first recorded, without calling the broker.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bracketflow.adapters.broker import get_broker
from bracketflow.adapters.broker.port import OrderReport, OrderRequest
from bracketflow.adapters.dynamo.batches import (
    BatchIdKey,
    BatchIdTaken,
    BatchRepository,
    event_item,
    leg_item,
    now_iso,
    state_item,
)
from bracketflow.adapters.instrument_store import current_master
from bracketflow.adapters.sfn import WorkflowStartFailed, start_batch_workflow
from bracketflow.domain.enums import Action, Exchange, PriceType, Product
from bracketflow.domain.ids import bracket_ref, new_batch_id
from bracketflow.domain.validation import (
    is_on_tick,
    parse_action,
    parse_exchange,
    parse_price,
    parse_price_type,
    parse_product,
    parse_quantity,
    parse_validity,
)
from bracketflow.errors import BrokerError, BrokerRejected, Conflict, NotFound, ValidationFailed
from bracketflow.observability import logger, metrics
from bracketflow.services.models import Caller
from bracketflow.services.register_bracket import check_placement_rate
from bracketflow.settings import get_settings

MAX_LEGS = 10
MAX_QUANTITY = 10_000_000
MAX_PRICE = Decimal("100000000")

# Batch statuses. IN_PROGRESS and ROLLING_BACK are on the way; the other four are final.
IN_PROGRESS = "IN_PROGRESS"
ROLLING_BACK = "ROLLING_BACK"
PLACED = "PLACED"  # every leg placed
PARTIAL = "PARTIAL"  # some legs placed, some not, and rollback was off
ROLLED_BACK = "ROLLED_BACK"  # a leg failed and every placed leg was cancelled or squared off
FAILED = "FAILED"  # nothing placed, or a compensation gave up (needs review: see the legs)
FINAL_STATUSES = frozenset({PLACED, PARTIAL, ROLLED_BACK, FAILED})

# Leg statuses.
LEG_CREATED = "CREATED"
LEG_PLACED = "PLACED"  # the broker accepted it (it may be open or filled: see broker_status, filled_quantity)
LEG_FAILED = "FAILED"  # rejected, or could not be placed
LEG_CANCELLED = "CANCELLED"  # rolled back: cancelled while open, nothing had filled
LEG_SQUARED_OFF = "SQUARED_OFF"  # rolled back: what had filled was closed with an opposite MARKET order

# A leg's compensation.
ROLLBACK_DONE = "DONE"
ROLLBACK_NOT_NEEDED = "NOT_NEEDED"  # the leg never reached the broker (or the broker rejected it)
ROLLBACK_GAVE_UP = "GAVE_UP"  # retried for the saga's whole budget and still failing: needs a human

_EQUITY_EXCHANGES = frozenset({Exchange.NSE, Exchange.BSE})
_OPEN_SEGMENT_PRODUCTS = {True: (Product.MIS, Product.CNC), False: (Product.MIS, Product.NRML)}


class LegStillOpen(BrokerError):
    """A cancel was sent but the order is not closed yet; the saga retries the compensation."""

    status_code = 503


class SquareOffRejected(BrokerError):
    """The square-off order was rejected or cancelled by the broker; the saga retries (a new order, same tag)."""

    status_code = 503


# ---------- validation ----------
@dataclass(frozen=True)
class LegOrder:
    """One validated leg: what goes to the broker."""

    tradingsymbol: str
    exchange: Exchange
    transaction_type: Action
    quantity: int
    order_type: PriceType
    product: Product
    price: Decimal | None
    trigger_price: Decimal | None
    validity: str
    lot_size: int
    tick_size: Decimal


def _leg_error(index: int, field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"orders.{index}.{field}: {message} (leg {index + 1})")


def validate_leg(index: int, raw: Mapping[str, Any]) -> LegOrder:  # noqa: C901, PLR0912, PLR0915 - a leg's rules in the order their refusals are read
    """One leg checked like a single order; ValidationFailed names the leg (0-based index, as in the body) and field.

    The instrument must be in the instrument master and tradable; quantity is units, a multiple of the lot size;
    LIMIT and SL need a price, SL and SL-M a trigger, MARKET and SL-M take no price; prices on the tick; an SL BUY
    triggers at or below its price, an SL SELL at or above; the product must suit the segment (CNC for cash
    equity, NRML for derivatives, MIS for either).
    """

    def check(field: str, parse: Callable[[], Any]) -> Any:
        try:
            return parse()
        except ValidationFailed as exc:
            raise _leg_error(index, field, exc.message) from None

    exchange: Exchange = check("exchange", lambda: parse_exchange(raw.get("exchange")))
    symbol_raw = raw.get("tradingsymbol")
    if not isinstance(symbol_raw, str) or not symbol_raw.strip():
        raise _leg_error(index, "tradingsymbol", "is required")
    symbol = symbol_raw.strip().upper()
    instrument = current_master().get(exchange.value, symbol)
    if instrument is None:
        raise _leg_error(index, "tradingsymbol", f"{exchange}:{symbol} is not in the instrument master")
    if not instrument.tradable:
        raise _leg_error(index, "tradingsymbol", f"{exchange}:{symbol} is an index and cannot be traded")
    action: Action = check("transaction_type", lambda: parse_action(raw.get("transaction_type")))
    if raw.get("order_type") in (None, ""):
        raise _leg_error(index, "order_type", "is required: one of LIMIT, MARKET, SL, SL-M")
    order_type: PriceType = check("order_type", lambda: parse_price_type(raw.get("order_type")))
    product: Product = check("product", lambda: parse_product(raw.get("product")))
    allowed = _OPEN_SEGMENT_PRODUCTS[exchange in _EQUITY_EXCHANGES]
    if product not in allowed:
        kind = "cash equity" if exchange in _EQUITY_EXCHANGES else "derivatives"
        raise _leg_error(index, "product", f"{product} is not valid on {exchange} ({kind}): use {' or '.join(allowed)}")
    validity = check("validity", lambda: parse_validity(raw.get("validity")))

    quantity: int = check("quantity", lambda: parse_quantity(raw.get("quantity")))
    lot = max(instrument.lot_size, 1)
    if quantity <= 0:
        raise _leg_error(index, "quantity", f"must be greater than 0, got {quantity}")
    if quantity > MAX_QUANTITY:
        raise _leg_error(index, "quantity", f"must be at most {MAX_QUANTITY}, got {quantity}")
    if quantity % lot:
        raise _leg_error(
            index,
            "quantity",
            f"{quantity} is not a multiple of the lot size {lot} for {symbol}: quantity is in units"
            f" (e.g. {max(lot, quantity // lot * lot)})",
        )

    price: Decimal | None = check("price", lambda: parse_price(raw.get("price"), "price", required=False))
    trigger: Decimal | None = check(
        "trigger_price", lambda: parse_price(raw.get("trigger_price"), "trigger_price", required=False)
    )
    if order_type.has_limit_price and price is None:
        raise _leg_error(index, "price", f"is required for {order_type} orders")
    if not order_type.has_limit_price and price is not None:
        raise _leg_error(index, "price", f"is only for LIMIT and SL orders, not {order_type}")
    if order_type.needs_trigger and trigger is None:
        raise _leg_error(index, "trigger_price", f"is required for {order_type} orders")
    if not order_type.needs_trigger and trigger is not None:
        raise _leg_error(index, "trigger_price", f"is only for SL and SL-M orders, not {order_type}")
    tick = instrument.tick_size if instrument.tick_size > 0 else Decimal("0.05")
    for value, field in ((price, "price"), (trigger, "trigger_price")):
        if value is None:
            continue
        if value <= 0 or value > MAX_PRICE:
            raise _leg_error(index, field, f"must be greater than 0 and at most {MAX_PRICE}, got {value}")
        if not is_on_tick(value, tick):
            raise _leg_error(index, field, f"{value} is not a multiple of the tick size {tick} for {symbol}")
    if order_type is PriceType.SL and price is not None and trigger is not None:
        if action is Action.BUY and trigger > price:
            raise _leg_error(index, "trigger_price", "for a BUY SL order it must not be greater than the price")
        if action is Action.SELL and trigger < price:
            raise _leg_error(index, "trigger_price", "for a SELL SL order it must not be less than the price")
    return LegOrder(
        tradingsymbol=instrument.tradingsymbol,
        exchange=exchange,
        transaction_type=action,
        quantity=quantity,
        order_type=order_type,
        product=product,
        price=price,
        trigger_price=trigger,
        validity=validity.value,
        lot_size=lot,
        tick_size=tick,
    )


def validate_legs(orders: Sequence[Mapping[str, Any]]) -> list[LegOrder]:
    if not isinstance(orders, Sequence) or not 1 <= len(orders) <= MAX_LEGS:
        count = len(orders) if isinstance(orders, Sequence) else 0
        raise ValidationFailed(f"orders: a batch holds 1 to {MAX_LEGS} orders, got {count}")
    return [validate_leg(i, leg) for i, leg in enumerate(orders)]


# ---------- tags ----------
_LEG_CHARS = "123456789A"  # legs 1..10 in one character


def leg_tag(batch_id: str, leg: int) -> str:
    """The broker tag of a leg's order: 18-char batch ref + leg character + "L" (20 chars, Kite's maximum)."""
    return f"{bracket_ref(batch_id)}{_LEG_CHARS[leg - 1]}L"


def square_off_tag(batch_id: str, leg: int) -> str:
    """The broker tag of the order squaring off a leg: batch ref + leg character + "R" (for rollback)."""
    return f"{bracket_ref(batch_id)}{_LEG_CHARS[leg - 1]}R"


# ---------- idempotency ----------
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


def batch_request_hash(legs: Sequence[LegOrder], rollback_on_failure: bool) -> str:
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


# ---------- registration ----------
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
    payload = {
        "batch_id": batch_id,
        "account_id": account_id,
        "rollback_on_failure": bool(rollback_on_failure),
        "legs": list(range(1, len(legs) + 1)),
    }
    try:
        start_batch_workflow(batch_id, payload)
    except WorkflowStartFailed as exc:
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


# ---------- the saga's steps ----------
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


# ---------- reads ----------
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
