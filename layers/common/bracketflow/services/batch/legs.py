"""A batch's legs: each checked like a single order (validate_leg), and the broker tags its orders carry."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bracketflow.adapters.instrument_store import current_master
from bracketflow.domain.enums import Action, Exchange, PriceType, Product
from bracketflow.domain.ids import bracket_ref
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
from bracketflow.errors import ValidationFailed

MAX_LEGS = 10
MAX_QUANTITY = 10_000_000
MAX_PRICE = Decimal("100000000")
_EQUITY_EXCHANGES = frozenset({Exchange.NSE, Exchange.BSE})
_OPEN_SEGMENT_PRODUCTS = {True: (Product.MIS, Product.CNC), False: (Product.MIS, Product.NRML)}


@dataclass(frozen=True)
class BatchLeg:
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


def validate_leg(index: int, raw: Mapping[str, Any]) -> BatchLeg:  # noqa: C901, PLR0912, PLR0915 - a leg's rules in the order their refusals are read
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
    return BatchLeg(
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


def validate_legs(orders: Sequence[Mapping[str, Any]]) -> list[BatchLeg]:
    if not isinstance(orders, Sequence) or not 1 <= len(orders) <= MAX_LEGS:
        count = len(orders) if isinstance(orders, Sequence) else 0
        raise ValidationFailed(f"orders: a batch holds 1 to {MAX_LEGS} orders, got {count}")
    return [validate_leg(i, leg) for i, leg in enumerate(orders)]


_LEG_CHARS = "123456789A"  # legs 1..10 in one character


def leg_tag(batch_id: str, leg: int) -> str:
    """The broker tag of a leg's order: 18-char batch ref + leg character + "L" (20 chars, Kite's maximum)."""
    return f"{bracket_ref(batch_id)}{_LEG_CHARS[leg - 1]}L"


def square_off_tag(batch_id: str, leg: int) -> str:
    """The broker tag of the order squaring off a leg: batch ref + leg character + "R" (for rollback)."""
    return f"{bracket_ref(batch_id)}{_LEG_CHARS[leg - 1]}R"
