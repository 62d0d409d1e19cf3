"""Bracket validation (the API's field rules) and the pure parsers the API layer uses on wire input.

Every rule raises bracketflow.errors.ValidationFailed with a message that says what is wrong and why, in the
wording traders know where there is one ("For BUY orders, SL price must be less than entry price"). The API maps
it to 400 {"status": "error", "message": ...}. The first broken rule wins, checked in the order a trader would
fix them: fields, quantity, prices, the tick, then the price relations.
"""

from __future__ import annotations

import dataclasses
import math
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from bracketflow.domain.bracket import BracketSpec, TrailSpec
from bracketflow.domain.enums import (
    DEFAULT_PRICE_TYPE,
    DEFAULT_VALIDITY,
    Action,
    Exchange,
    PriceType,
    Product,
    TrailType,
    Validity,
)
from bracketflow.domain.ids import AccountId, ClientOrderId
from bracketflow.errors import ValidationFailed

DEFAULT_TICK_SIZE = Decimal("0.05")
MAX_TAG_LENGTH = 20  # Kite's order tag limit
MAX_CLIENT_ORDER_ID_LENGTH = 128
MAX_TRAIL_PERCENT = Decimal(100)
# Any number read from the wire stays within 10^±15 with at most 30 significant digits: far beyond any price or
# quantity, and small enough that no arithmetic on it overflows the decimal context or builds a huge int.
_WIRE_EXPONENT = 15
_WIRE_DIGITS = 30


# ---- wire parsers: raw JSON/text values -> domain values, or ValidationFailed naming the field -----------------


def _parse_enum(enum_cls: Any, raw: object, field: str) -> Any:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise ValidationFailed(f"{field} is required: one of {', '.join(enum_cls.values())}")
    try:
        return enum_cls.parse(raw)
    except ValueError:
        raise ValidationFailed(f"Invalid {field} {raw!r}: must be one of {', '.join(enum_cls.values())}") from None


def parse_action(raw: object) -> Action:
    """BUY or SELL, any case ("buy" from TradingView's {{strategy.order.action}})."""
    return _parse_enum(Action, raw, "action")


def parse_exchange(raw: object) -> Exchange:
    return _parse_enum(Exchange, raw, "exchange")


def parse_product(raw: object) -> Product:
    return _parse_enum(Product, raw, "product")


def parse_price_type(raw: object) -> PriceType:
    """LIMIT when absent (the API's default); also accepts "SL_M"/"SLM" for SL-M, as traders type it."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return DEFAULT_PRICE_TYPE
    if isinstance(raw, str) and raw.strip().upper() in ("SL_M", "SLM"):
        return PriceType.SL_M
    return _parse_enum(PriceType, raw, "pricetype")


def parse_validity(raw: object) -> Validity:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return DEFAULT_VALIDITY
    return _parse_enum(Validity, raw, "validity")


def parse_trail_type(raw: object) -> TrailType:
    return _parse_enum(TrailType, raw, "trail type")


def parse_price(raw: object, field: str, *, required: bool = True) -> Decimal | None:
    """A price as Decimal. Accepts Decimal, int, numeric strings ("1500.5") and floats (through their shortest
    repr, so 1500.1 stays 1500.1 and never becomes 1500.09999...). Rejects booleans, NaN and infinities."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if required:
            raise ValidationFailed(f"{field} is required")
        return None
    if isinstance(raw, bool):
        raise ValidationFailed(f"{field} must be a number, got {raw!r}")
    try:
        if isinstance(raw, float):
            if not math.isfinite(raw):
                raise InvalidOperation
            value = Decimal(repr(raw))
        elif isinstance(raw, Decimal | int | str):
            value = Decimal(raw.strip() if isinstance(raw, str) else raw)
        else:
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        raise ValidationFailed(f"{field} must be a number, got {_shown(raw)}") from None
    if not value.is_finite():
        raise ValidationFailed(f"{field} must be a number, got {_shown(raw)}")
    if value and (abs(value.adjusted()) > _WIRE_EXPONENT or len(value.as_tuple().digits) > _WIRE_DIGITS):
        raise ValidationFailed(f"{field} is out of range: {_shown(raw)}")
    return value


def _shown(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_quantity(raw: object, field: str = "quantity") -> int:
    """A whole number of units. "10" and 10.0 are fine; 10.5, "ten" and True are not."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise ValidationFailed(f"{field} is required")
    if isinstance(raw, bool):
        raise ValidationFailed(f"{field} must be a whole number, got {raw!r}")
    if isinstance(raw, int):
        return raw
    value = parse_price(raw, field)
    assert value is not None
    if value != value.to_integral_value():
        raise ValidationFailed(f"{field} must be a whole number, got {raw!r}")
    return int(value)


def split_symbol(raw: object) -> tuple[Exchange | None, str]:
    """ "NSE:INFY" -> (NSE, "INFY"); "infy" -> (None, "INFY"). TradingView's {{ticker}} may carry the prefix."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValidationFailed("symbol is required")
    text = raw.strip().upper()
    prefix, sep, rest = text.partition(":")
    if not sep:
        return None, text
    if not rest:
        raise ValidationFailed(f"Invalid symbol {raw!r}: nothing after the exchange prefix")
    return parse_exchange(prefix), rest


# ---- ticks -------------------------------------------------------------------------------------------------


class RoundMode(StrEnum):
    NEAREST_TIES_UP = "nearest_ties_up"
    NEAREST_TIES_DOWN = "nearest_ties_down"
    DOWN = "down"
    UP = "up"


_ROUNDING = {
    RoundMode.NEAREST_TIES_UP: ROUND_HALF_UP,
    RoundMode.NEAREST_TIES_DOWN: ROUND_HALF_DOWN,
    RoundMode.DOWN: ROUND_FLOOR,
    RoundMode.UP: ROUND_CEILING,
}


def round_to_tick(price: Decimal, tick: Decimal, mode: RoundMode | str = RoundMode.NEAREST_TIES_UP) -> Decimal:
    """price rounded to a multiple of tick, shown with the tick's decimals (1480.03, 0.05, nearest -> 1480.05)."""
    if tick <= 0:
        raise ValueError(f"tick size must be > 0, got {tick}")
    steps = (price / tick).to_integral_value(rounding=_ROUNDING[RoundMode(mode)])
    return (steps * tick).quantize(tick)


# validate_bracket's `round_to_tick` flag shadows the function inside it.
_round_price = round_to_tick


def is_on_tick(price: Decimal, tick: Decimal) -> bool:
    return price % tick == 0


# ---- the bracket ---------------------------------------------------------------------------------------------


def _positive(value: Decimal, label: str) -> None:
    if value <= 0:
        raise ValidationFailed(f"{label} must be greater than 0, got {value}")


def validate_bracket(  # noqa: C901, PLR0912, PLR0915 - the rules in the order a trader reads their refusals
    spec: BracketSpec,
    *,
    tick_size: Decimal = DEFAULT_TICK_SIZE,
    lot_size: int = 1,
    round_to_tick: bool = False,
    reference_price: Decimal | None = None,
) -> BracketSpec:
    """Check a bracket against the API's field rules; return it normalised (enums parsed, symbol
    uppercased, empty optionals as None, prices rounded when round_to_tick).

    tick_size / lot_size come from the instrument master (0.05 and 1 when the caller does not know better).
    reference_price is the last traded price for entries without an entry price (MARKET, SL-M without one):
    the SL/target relation is then checked against it. When there is none either, only sl vs target can be
    checked here; the protection step must check the levels against the actual fill (see check_levels).

    round_to_tick=False: an off-tick price is an error (the broker would reject it later, after we had already
    told TradingView "OK"). round_to_tick=True: each price goes to the NEAREST tick, and an exact tie is broken
    toward the side that never adds risk for the trader — the entry toward the cheaper side (BUY down, SELL up),
    the stop, target, trigger and activation toward the entry (a smaller loss, a target more likely to fill,
    trailing starting no later than asked).
    """
    if tick_size <= 0:
        raise ValidationFailed(f"tick size must be greater than 0, got {tick_size}")
    if lot_size < 1:
        raise ValidationFailed(f"lot size must be at least 1, got {lot_size}")

    account_id = (spec.account_id or "").strip() if isinstance(spec.account_id, str) else ""
    if not account_id:
        raise ValidationFailed("account_id is required")

    exchange_in_symbol, symbol = split_symbol(spec.symbol)
    exchange = parse_exchange(spec.exchange)
    if exchange_in_symbol is not None and exchange_in_symbol is not exchange:
        raise ValidationFailed(f"symbol {spec.symbol!r} names exchange {exchange_in_symbol} but exchange is {exchange}")
    if any(ch.isspace() for ch in symbol):
        raise ValidationFailed(f"Invalid symbol {spec.symbol!r}: a tradingsymbol has no spaces")
    product = parse_product(spec.product)
    action = parse_action(spec.action)
    price_type = parse_price_type(spec.price_type)
    validity = parse_validity(spec.validity)

    quantity = parse_quantity(spec.quantity)
    if quantity <= 0:
        raise ValidationFailed(f"quantity must be greater than 0, got {quantity}")
    if quantity % lot_size:
        raise ValidationFailed(
            f"quantity {quantity} is not a multiple of the lot size {lot_size} for {symbol}:"
            f" use a multiple such as {max(lot_size, quantity // lot_size * lot_size)}"
        )
    disclosed = (
        0 if spec.disclosed_quantity in (None, "") else parse_quantity(spec.disclosed_quantity, "disclosed_quantity")
    )
    if disclosed < 0:
        raise ValidationFailed(f"disclosed_quantity must not be negative, got {disclosed}")
    if disclosed > quantity:
        raise ValidationFailed(f"disclosed_quantity {disclosed} must not exceed quantity {quantity}")

    entry = parse_price(spec.entry_price, "entry_price", required=price_type.has_limit_price)
    sl = parse_price(spec.sl_price, "sl_price")
    target = parse_price(spec.target_price, "target_price")
    trigger = parse_price(spec.trigger_price, "trigger_price", required=price_type.needs_trigger)
    activation = parse_price(spec.trail_activation_price, "trail_activation_price", required=False)
    assert sl is not None and target is not None
    if trigger is not None and not price_type.needs_trigger:
        raise ValidationFailed(f"trigger_price is only for SL and SL-M entries, not {price_type}")

    for value, label in (
        (entry, "entry price"),
        (sl, "SL price"),
        (target, "target price"),
        (trigger, "trigger price"),
        (activation, "trail activation price"),
    ):
        if value is not None:
            _positive(value, label)

    if round_to_tick:
        # Only exact ties need a rule: BUY levels below the entry (the stop) tie up toward it, levels above (target,
        # activation) tie down toward it, and the entry/trigger tie down (pay less). SELL is the mirror image.
        ties_up, ties_down = RoundMode.NEAREST_TIES_UP, RoundMode.NEAREST_TIES_DOWN
        loss_side, profit_side = (ties_up, ties_down) if action is Action.BUY else (ties_down, ties_up)
        cheaper = profit_side
        entry = None if entry is None else _round_price(entry, tick_size, cheaper)
        trigger = None if trigger is None else _round_price(trigger, tick_size, cheaper)
        sl = _round_price(sl, tick_size, loss_side)
        target = _round_price(target, tick_size, profit_side)
        activation = None if activation is None else _round_price(activation, tick_size, profit_side)
        for value, label in (
            (entry, "entry price"),
            (sl, "SL price"),
            (target, "target price"),
            (trigger, "trigger price"),
            (activation, "trail activation price"),
        ):
            if value is not None and value <= 0:
                raise ValidationFailed(f"{label} rounds to 0 on the tick size {tick_size}")
    else:
        for value, field in (
            (entry, "entry_price"),
            (sl, "sl_price"),
            (target, "target_price"),
            (trigger, "trigger_price"),
            (activation, "trail_activation_price"),
        ):
            if value is not None and not is_on_tick(value, tick_size):
                raise ValidationFailed(f"{field} {value} is not a multiple of the tick size {tick_size} for {symbol}")

    if price_type is PriceType.SL:
        assert entry is not None and trigger is not None
        # Kite: a stop-loss BUY triggers at or below its limit price, a stop-loss SELL at or above it.
        if action is Action.BUY and trigger > entry:
            raise ValidationFailed("For BUY SL orders, trigger price must not be greater than entry price")
        if action is Action.SELL and trigger < entry:
            raise ValidationFailed("For SELL SL orders, trigger price must not be less than entry price")

    # The price the levels are measured from: the limit, else the SL-M trigger, else the market's last price.
    if entry is not None:
        ref, ref_note = entry, ""
    elif trigger is not None:
        ref, ref_note = trigger, f" (the trigger price {trigger}, for an SL-M entry)"
    elif reference_price is not None:
        ref, ref_note = reference_price, f" (the last price {reference_price}, for a MARKET entry)"
    else:
        ref, ref_note = None, ""
    check_levels(action, ref, sl, target, note=ref_note)

    trail = _validate_trail(spec.trail)
    if activation is not None:
        if trail is None:
            raise ValidationFailed("trail_activation_price needs a trail")
        if ref is not None:
            if action is Action.BUY and activation <= ref:
                raise ValidationFailed(
                    f"For BUY orders, trail activation price must be greater than entry price{ref_note}"
                )
            if action is Action.SELL and activation >= ref:
                raise ValidationFailed(
                    f"For SELL orders, trail activation price must be less than entry price{ref_note}"
                )

    if spec.breakeven_at is not None and spec.share_index is None:
        farthest = [t.price for t in spec.targets] or [target]
        check_breakeven_at(
            action,
            ref,
            spec.breakeven_at,
            spec.breakeven_buffer,
            max(farthest) if action is Action.BUY else min(farthest),
            note=ref_note,
        )

    tag = _optional_text(spec.tag, "tag", MAX_TAG_LENGTH)
    strategy = _optional_text(spec.strategy, "strategy", None)
    client_order_id = _optional_text(spec.client_order_id, "client_order_id", MAX_CLIENT_ORDER_ID_LENGTH)

    return dataclasses.replace(
        spec,
        account_id=AccountId(account_id),
        symbol=symbol,
        exchange=exchange,
        product=product,
        action=action,
        quantity=quantity,
        price_type=price_type,
        validity=validity,
        disclosed_quantity=disclosed,
        entry_price=entry,
        sl_price=sl,
        target_price=target,
        trigger_price=trigger,
        trail=trail,
        trail_activation_price=activation,
        tag=tag,
        strategy=strategy,
        client_order_id=None if client_order_id is None else ClientOrderId(client_order_id),
    )


def check_levels(action: Action, reference: Decimal | None, sl: Decimal, target: Decimal, *, note: str = "") -> None:
    """BUY needs sl < reference < target; SELL needs sl > reference > target (the bracket API's rule).

    Without a reference, only sl vs target is checked. Services call this again with the entry's average fill
    price before placing protection, since a MARKET entry's fill is known only then.
    """
    if action is Action.BUY:
        if reference is not None:
            if not sl < reference:
                raise ValidationFailed(f"For BUY orders, SL price must be less than entry price{note}")
            if not target > reference:
                raise ValidationFailed(f"For BUY orders, target price must be greater than entry price{note}")
        elif not sl < target:
            raise ValidationFailed("For BUY orders, SL price must be less than target price")
    else:
        if reference is not None:
            if not sl > reference:
                raise ValidationFailed(f"For SELL orders, SL price must be greater than entry price{note}")
            if not target < reference:
                raise ValidationFailed(f"For SELL orders, target price must be less than entry price{note}")
        elif not sl > target:
            raise ValidationFailed("For SELL orders, SL price must be greater than target price")


def check_breakeven_at(
    action: Action, reference: Decimal | None, at: Decimal, buffer: Decimal | None, target: Decimal, *, note: str = ""
) -> None:
    """A price breakeven trigger lies beyond the breakeven stop (the entry plus the buffer, on the winning side) and
    short of the target (of the farthest one, scaling out): reached, it moves the stop to a level the market is past."""
    _positive(at, "breakeven_at")
    buffer = buffer or Decimal(0)
    if action is Action.BUY:
        if reference is not None and not at > reference + buffer:
            plus = f" plus breakeven_buffer {buffer}" if buffer else ""
            raise ValidationFailed(f"For BUY orders, breakeven_at {at} must be greater than entry price{note}{plus}")
        if not at < target:
            raise ValidationFailed(f"For BUY orders, breakeven_at {at} must be less than the target {target}")
    else:
        if reference is not None and not at < reference - buffer:
            minus = f" minus breakeven_buffer {buffer}" if buffer else ""
            raise ValidationFailed(f"For SELL orders, breakeven_at {at} must be less than entry price{note}{minus}")
        if not at > target:
            raise ValidationFailed(f"For SELL orders, breakeven_at {at} must be greater than the target {target}")


def _validate_trail(trail: TrailSpec | dict[str, Any] | None) -> TrailSpec | None:
    if trail is None:
        return None
    if isinstance(trail, dict):
        trail_type, raw_value = trail.get("type"), trail.get("value")
    else:
        trail_type, raw_value = trail.type, trail.value
    kind = parse_trail_type(trail_type)
    value = parse_price(raw_value, "trail value")
    assert value is not None
    if value <= 0:
        raise ValidationFailed(f"trail value must be greater than 0, got {value}")
    if kind is TrailType.PERCENT and value >= MAX_TRAIL_PERCENT:
        raise ValidationFailed(f"trail percent must be less than 100, got {value}")
    return TrailSpec(type=kind, value=value)


def _optional_text(raw: object, field: str, max_length: int | None) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValidationFailed(f"{field} must be text, got {raw!r}")
    text = raw.strip()
    if not text:
        return None
    if max_length is not None and len(text) > max_length:
        raise ValidationFailed(f"{field} must be at most {max_length} characters, got {len(text)}")
    return text
