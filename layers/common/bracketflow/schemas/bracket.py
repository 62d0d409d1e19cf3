"""Wire models of bracket intake (REST and TradingView) and their explicit mapping to the domain's BracketSpec.

REST (`POST /api/v1/placebracketorder`) is typed by PlaceBracketOrderRequest: Powertools validates it and
publishes it in the OpenAPI document. TradingView alerts are looser (text/plain bodies, "NSE:INFY", numbers as
strings, lowercase actions, levels as percent/points), so alert_to_spec() reads the parsed JSON by hand.
Either way the domain's validate_bracket() applies the bracket API's rules afterwards.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bracketflow.domain.bracket import BracketSpec, ScaleTarget, TrailSpec
from bracketflow.domain.enums import Action, TrailType
from bracketflow.domain.ids import AccountId, ClientOrderId
from bracketflow.domain.validation import (
    parse_action,
    parse_exchange,
    parse_price,
    parse_quantity,
    parse_trail_type,
    split_symbol,
)
from bracketflow.errors import ValidationFailed
from bracketflow.schemas import wire_json

# Bounds keep every number storable (DynamoDB numbers have 38 digits) and sane for Indian markets.
MAX_PRICE = Decimal("100000000")
MAX_QUANTITY = 10_000_000
MAX_BODY_CHARS = 16_384
MAX_EXIT_AFTER_MINUTES = 7 * 24 * 60
MAX_TARGETS = 3

Price = Annotated[Decimal, Field(gt=0, le=MAX_PRICE, max_digits=14, decimal_places=4)]
Text = Annotated[str, Field(min_length=1, max_length=64)]


class TrailIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["percent", "points", "PERCENT", "POINTS"] = Field(description="percent of the price, or points")
    value: Annotated[Decimal, Field(gt=0, le=MAX_PRICE, max_digits=14, decimal_places=4)]


class TargetIn(BaseModel):
    """One scale-out target: its level (exactly one of price, percent, points) and its share of the quantity."""

    model_config = ConfigDict(extra="forbid")
    price: Price | None = Field(None, description="The target's price")
    percent: Annotated[Decimal | None, Field(gt=0, lt=100, max_digits=8, decimal_places=4)] = Field(
        None, description="The target as a percent away from entry_price"
    )
    points: Price | None = Field(None, description="The target as points away from entry_price")
    share: Annotated[Decimal | None, Field(gt=0, le=100, max_digits=8, decimal_places=4)] = Field(
        None, description="This target's share of the quantity, in percent (rounded down to the lot)"
    )
    quantity: Annotated[int | None, Field(gt=0, le=MAX_QUANTITY)] = Field(
        None, description="This target's share of the quantity, in units (instead of share)"
    )


class PlaceBracketOrderRequest(BaseModel):
    """The bracket API's request, plus bracketflow's optional fields (the README's API section)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "example": {
                "apikey": "bfk_...",
                "symbol": "INFY",
                "exchange": "NSE",
                "product": "MIS",
                "action": "BUY",
                "quantity": 10,
                "entry_price": 1500,
                "sl_price": 1480,
                "target_price": 1550,
                "trail": {"type": "percent", "value": 1},
                "strategy": "breakout",
                "client_order_id": "breakout-2026-01-05-1",
            }
        },
    )

    apikey: str | None = Field(None, max_length=1024, description="The account's API key (or the X-API-KEY header)")
    symbol: Text = Field(description="Tradingsymbol, e.g. INFY (or NSE:INFY)")
    exchange: Text = Field(description="NSE, BSE, NFO, MCX, NCDEX or CDS")
    product: Text = Field(description="MIS, CNC or NRML")
    action: Text = Field(description="BUY or SELL (any case)")
    quantity: Annotated[int | None, Field(gt=0, le=MAX_QUANTITY)] = Field(
        None, description="Required unless risk_amount or risk_percent sizes it"
    )
    entry_price: Price
    sl_price: Price
    target_price: Price | None = Field(None, description="Required unless targets are given")
    ordertype: str = Field("REGULAR", max_length=16, description="Accepted for compatibility: REGULAR")
    pricetype: str = Field("LIMIT", max_length=8, description="LIMIT (default), MARKET, SL or SL-M")
    trigger_price: Price | None = Field(None, description="For SL and SL-M entries")
    disclosed_quantity: Annotated[int, Field(ge=0, le=MAX_QUANTITY)] = 0
    validity: str = Field("DAY", max_length=8, description="DAY (default), IOC or TTL")
    tag: str | None = Field(None, max_length=20, description="Your label (Kite allows 20 characters)")
    trail: TrailIn | None = Field(None, description='{"type": "percent"|"points", "value": x}')
    trail_activation_price: Price | None = None
    strategy: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    client_order_id: str | None = Field(None, max_length=128, description="Idempotency key: a resend is a no-op")
    risk_amount: Price | None = Field(
        None, description="Rupees to risk instead of a quantity: quantity = floor(risk / stop distance), to the lot"
    )
    risk_percent: Annotated[Decimal | None, Field(gt=0, le=100, max_digits=8, decimal_places=4)] = Field(
        None, description="Percent of the account's configured capital to risk, instead of a quantity"
    )
    exit_after: Annotated[int | None, Field(ge=1, le=MAX_EXIT_AFTER_MINUTES)] = Field(
        None, description="Time exit: minutes after registration; the bracket is exited with reason TIME"
    )
    exit_at: str | None = Field(
        None, pattern=r"^\d{2}:\d{2}$", description="Time exit: HH:MM on the IST clock, today; reason TIME"
    )
    reverse: bool = Field(
        False,
        description="If the strategy holds this symbol the other way: exit that first, then enter (never both at once)",
    )
    targets: list[TargetIn] | None = Field(
        None,
        min_length=1,
        max_length=3,
        description="Scale-out instead of target_price: one bracket per target under the same stop, each for its share",
    )
    breakeven_after: Annotated[int | None, Field(ge=1, le=3)] = Field(
        None, description="When this target's share exits at its target, the other shares' stops move to their entry"
    )
    breakeven_buffer: Annotated[Decimal | None, Field(ge=0, le=MAX_PRICE, max_digits=14, decimal_places=4)] = Field(
        None, description="Points beyond the entry for the breakeven stop (costs); default 0"
    )
    breakeven_at: Price | None = Field(
        None,
        description="A price instead of a target: once the market reaches it, the stop moves to the entry (plus"
        " breakeven_buffer) if that tightens it, once; between the entry and the (last) target",
    )


def request_to_spec(req: PlaceBracketOrderRequest, account_id: str) -> BracketSpec:
    """REST request -> BracketSpec (raw enum values; validate_bracket parses and checks them)."""
    if req.ordertype.strip().upper() != "REGULAR":
        raise ValidationFailed(f"Invalid ordertype {req.ordertype!r}: only REGULAR orders make brackets")
    trail = None if req.trail is None else TrailSpec(type=TrailType.parse(req.trail.type), value=req.trail.value)
    quantity = _quantity_or_risk(req.quantity, req.risk_amount, req.risk_percent)
    action = parse_action(req.action)
    targets_raw = None if req.targets is None else [t.model_dump(exclude_none=True) for t in req.targets]
    target_price, targets = _target_or_targets(
        req.target_price,
        targets_raw,
        action,
        req.entry_price,
        _breakeven_trigger(req.breakeven_after, req.breakeven_at),
    )
    return BracketSpec(
        account_id=AccountId(account_id),
        symbol=req.symbol,
        exchange=req.exchange,  # type: ignore[arg-type]  # parsed by validate_bracket
        product=req.product,  # type: ignore[arg-type]
        action=req.action,  # type: ignore[arg-type]
        quantity=quantity,
        entry_price=req.entry_price,
        sl_price=req.sl_price,
        target_price=target_price,
        price_type=req.pricetype,  # type: ignore[arg-type]
        trigger_price=req.trigger_price,
        trail=trail,
        trail_activation_price=req.trail_activation_price,
        validity=req.validity,  # type: ignore[arg-type]
        disclosed_quantity=req.disclosed_quantity,
        tag=req.tag,
        strategy=req.strategy,
        client_order_id=None if req.client_order_id is None else ClientOrderId(req.client_order_id),
        exit_after=req.exit_after,
        exit_at=None if req.exit_at is None else parse_exit_at(req.exit_at),
        reverse=req.reverse,
        risk_amount=req.risk_amount,
        risk_percent=req.risk_percent,
        targets=targets,
        breakeven_after=req.breakeven_after,
        breakeven_buffer=_breakeven_buffer(req.breakeven_buffer, req.breakeven_after, req.breakeven_at),
        breakeven_at=req.breakeven_at,
    )


def _breakeven_trigger(after: int | None, at: Decimal | None) -> int | None:
    """breakeven_after (a target) or breakeven_at (a price) triggers the breakeven, not both; the target, if any."""
    if after is not None and at is not None:
        raise ValidationFailed("give breakeven_after (a target) or breakeven_at (a price), not both")
    return after


def _breakeven_buffer(buffer: Decimal | None, after: int | None, at: Decimal | None) -> Decimal | None:
    if buffer is not None and after is None and at is None:
        raise ValidationFailed("breakeven_buffer needs breakeven_after (a target) or breakeven_at (a price)")
    return buffer


def _target_or_targets(
    target_price: Decimal | None,
    targets_raw: Any,
    action: Action,
    entry: Decimal | None,
    breakeven_after: int | None,
) -> tuple[Decimal, tuple[ScaleTarget, ...]]:
    """(the target price, the scale-out targets): one target_price, or 1-3 targets (the first one's price is the
    request's target_price until intake splits it into shares)."""
    if targets_raw is None:
        if target_price is None:
            raise ValidationFailed("target_price is required (or targets, to scale out)")
        if breakeven_after is not None:
            raise ValidationFailed(
                "breakeven_after needs targets: a single target leaves no share (use breakeven_at for a price)"
            )
        return target_price, ()
    if target_price is not None:
        raise ValidationFailed("give target_price or targets, not both")
    if not isinstance(targets_raw, list) or not 1 <= len(targets_raw) <= MAX_TARGETS:
        raise ValidationFailed(f"targets must be a list of 1 to {MAX_TARGETS} targets")
    targets = tuple(_scale_target(raw, index, action, entry) for index, raw in enumerate(targets_raw, start=1))
    return targets[0].price, targets


def _scale_target(raw: Any, index: int, action: Action, entry: Decimal | None) -> ScaleTarget:
    if not isinstance(raw, dict):
        raise ValidationFailed(f'target {index} must be an object like {{"price": 1550, "share": 50}}')
    unknown = set(raw) - {"price", "percent", "points", "share", "quantity"}
    if unknown:
        raise ValidationFailed(f"target {index} has unknown fields: {', '.join(sorted(unknown))}")
    levels = {f"target_{k}": raw.get(k) for k in ("price", "percent", "points")}
    try:
        price = _level(levels, "target", action, entry, is_stop=False)
    except ValidationFailed as exc:
        raise ValidationFailed(f"target {index}: {exc.message}") from None
    if entry is not None and ((price <= entry) if action is Action.BUY else (price >= entry)):
        side = "greater" if action is Action.BUY else "less"
        raise ValidationFailed(f"target {index}: for {action} orders, a target must be {side} than entry price")
    share = _bounded(parse_price(raw.get("share"), f"target {index} share", required=False), "share")
    quantity = raw.get("quantity")
    if (share is None) == (quantity in (None, "")):
        raise ValidationFailed(f"target {index}: give its share (percent of the quantity) or its quantity")
    if share is not None and share > 100:
        raise ValidationFailed(f"target {index}: share is a percent of the quantity, at most 100, got {share}")
    units = None if quantity in (None, "") else parse_quantity(quantity, f"target {index} quantity")
    return ScaleTarget(price=price, share_percent=share, quantity=units)


def _breakeven_after(raw: Any) -> int | None:
    if raw in (None, ""):
        return None
    text = str(raw).strip().upper().removeprefix("TARGET").removeprefix("T") if not isinstance(raw, bool) else ""
    if not text.isdigit() or not 1 <= int(text) <= MAX_TARGETS:
        raise ValidationFailed(
            f"breakeven_after must name a target, 1 to {MAX_TARGETS}, got {raw!r} (for a price, use breakeven_at)"
        )
    return int(text)


def _quantity_or_risk(quantity: Any, risk_amount: Decimal | None, risk_percent: Decimal | None) -> Any:
    """The quantity as sent, or 0 for services/sizing to work out from the risk; exactly one way must be given."""
    given = [name for name, v in (("risk_amount", risk_amount), ("risk_percent", risk_percent)) if v is not None]
    if len(given) > 1:
        raise ValidationFailed("give risk_amount or risk_percent, not both")
    if given and quantity not in (None, ""):
        raise ValidationFailed(f"give quantity or {given[0]}, not both")
    if not given and quantity in (None, ""):
        raise ValidationFailed("quantity is required (or risk_amount / risk_percent to size it from the stop)")
    return 0 if given else quantity


def parse_exit_at(raw: Any) -> str:
    """ "15:10" -> "15:10" (IST); a clear 400 for anything that is not a time of day."""
    text = str(raw).strip() if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    hours, sep, minutes = text.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and len(minutes) == 2 and len(hours) <= 2):
        raise ValidationFailed(f"exit_at must be a time of day as HH:MM on the IST clock, got {raw!r}")
    if int(hours) > 23 or int(minutes) > 59:
        raise ValidationFailed(f"exit_at {text} is not a time of day")
    return f"{int(hours):02d}:{minutes}"


def _exit_after(raw: Any) -> int | None:
    if raw in (None, ""):
        return None
    try:
        minutes = Decimal(str(raw))
    except InvalidOperation:
        raise ValidationFailed(f"exit_after must be a number of minutes, got {raw!r}") from None
    if isinstance(raw, bool) or not minutes.is_finite() or minutes != minutes.to_integral_value():
        raise ValidationFailed(f"exit_after must be a whole number of minutes, got {raw!r}")
    if not 1 <= minutes <= MAX_EXIT_AFTER_MINUTES:
        raise ValidationFailed(f"exit_after must be between 1 and {MAX_EXIT_AFTER_MINUTES} minutes, got {raw}")
    return int(minutes)


def _flag(raw: Any, name: str) -> bool:
    if raw in (None, "", False, "false", "False", "0", 0):
        return False
    if raw in (True, "true", "True", "1", 1):
        return True
    raise ValidationFailed(f"{name} must be true or false, got {raw!r}")


# ---------- TradingView ----------
def parse_alert_body(body: str | None) -> dict[str, Any]:
    """The alert's JSON object, whether TradingView sent it as application/json or text/plain."""
    if body is None or not body.strip():
        raise ValidationFailed("body is empty: the alert message must be a JSON object")
    data = wire_json.loads(body, max_chars=MAX_BODY_CHARS, decimals=True)
    if not isinstance(data, dict):
        raise ValidationFailed("body must be a JSON object, not a list or a single value")
    return data


def _field(data: dict[str, Any], *names: str) -> Any:
    for name in names:
        if data.get(name) not in (None, ""):
            return data[name]
    return None


def _text(data: dict[str, Any], name: str, max_length: int) -> str | None:
    raw = data.get(name)
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ValidationFailed(f"{name} must be text, got {type(raw).__name__}")
    text = str(raw).strip()
    if len(text) > max_length:
        raise ValidationFailed(f"{name} must be at most {max_length} characters, got {len(text)}")
    return text or None


def _bounded(value: Decimal | None, field: str) -> Decimal | None:
    if value is not None and (abs(value) > MAX_PRICE or value.as_tuple().exponent < -8):  # type: ignore[operator]
        raise ValidationFailed(f"{field} is out of range: at most {MAX_PRICE} with up to 8 decimals")
    return value


def _level(data: dict[str, Any], name: str, action: Action, entry: Decimal | None, *, is_stop: bool) -> Decimal:
    """sl/target from `<name>_price`, `<name>_percent` or `<name>_points` (exactly one), relative to the entry."""
    absolute = _bounded(parse_price(_field(data, f"{name}_price"), f"{name}_price", required=False), f"{name}_price")
    percent = _bounded(
        parse_price(_field(data, f"{name}_percent"), f"{name}_percent", required=False), f"{name}_percent"
    )
    points = _bounded(parse_price(_field(data, f"{name}_points"), f"{name}_points", required=False), f"{name}_points")
    given = [v for v in (absolute, percent, points) if v is not None]
    if len(given) != 1:
        raise ValidationFailed(f"give exactly one of {name}_price, {name}_percent or {name}_points")
    if absolute is not None:
        return absolute
    if entry is None:
        raise ValidationFailed(f"{name}_percent/{name}_points need entry_price (send {{{{close}}}} for a MARKET entry)")
    # A stop sits on the losing side of the entry, a target on the winning side.
    below = (action is Action.BUY) == is_stop
    if percent is not None:
        if not Decimal(0) < percent < Decimal(100):
            raise ValidationFailed(f"{name}_percent must be between 0 and 100, got {percent}")
        offset = entry * percent / Decimal(100)
    else:
        assert points is not None
        if points <= 0:
            raise ValidationFailed(f"{name}_points must be greater than 0, got {points}")
        offset = points
    return entry - offset if below else entry + offset


def _level_given(data: dict[str, Any], name: str) -> bool:
    return any(_field(data, f"{name}_{kind}") is not None for kind in ("price", "percent", "points"))


def _trail(data: dict[str, Any]) -> TrailSpec | None:
    raw = data.get("trail")
    if isinstance(raw, dict):
        kind = parse_trail_type(raw.get("type"))
        value = parse_price(raw.get("value"), "trail value")
    elif isinstance(raw, str) and raw.strip():
        text = raw.strip().lower()  # "1%", "1 %", "5", "5pts", "5 points"
        if text.endswith("%"):
            kind, number = TrailType.PERCENT, text[:-1]
        else:
            kind, number = TrailType.POINTS, text.removesuffix("points").removesuffix("pts").removesuffix("pt")
        value = parse_price(number.strip(), "trail")
    elif raw not in (None, ""):
        raise ValidationFailed('trail must be {"type": "percent"|"points", "value": x} or text like "1%" or "5 points"')
    elif _field(data, "trail_percent") is not None:
        kind, value = TrailType.PERCENT, parse_price(_field(data, "trail_percent"), "trail_percent")
    elif _field(data, "trail_points") is not None:
        kind, value = TrailType.POINTS, parse_price(_field(data, "trail_points"), "trail_points")
    else:
        return None
    assert value is not None
    return TrailSpec(type=kind, value=_bounded(value, "trail") or value)


def alert_to_spec(data: dict[str, Any], account_id: str) -> BracketSpec:
    """A TradingView alert -> BracketSpec. Levels given as percent/points are turned into prices here;
    rounding them onto the tick is validate_bracket's job (round_to_tick=True for alerts)."""
    exchange_in_symbol, symbol = split_symbol(_field(data, "symbol", "ticker"))
    raw_exchange = _field(data, "exchange")
    exchange = parse_exchange(raw_exchange) if raw_exchange is not None else exchange_in_symbol
    if exchange is None:
        raise ValidationFailed("exchange is required: send exchange, or a symbol like NSE:INFY")
    if exchange_in_symbol is not None and exchange_in_symbol is not exchange:
        raise ValidationFailed(f"symbol names exchange {exchange_in_symbol} but exchange is {exchange}")
    action = parse_action(_field(data, "action"))
    entry = _bounded(parse_price(_field(data, "entry_price", "price"), "entry_price", required=False), "entry_price")
    quantity_raw = _field(data, "quantity", "qty")
    try:
        quantity_check = Decimal(str(quantity_raw)) if quantity_raw is not None else None
    except InvalidOperation:
        quantity_check = None
    # copy_abs, not abs(): abs() rounds into the decimal context, and 1e999999999 overflows it.
    if quantity_check is not None and quantity_check.is_finite() and quantity_check.copy_abs() > MAX_QUANTITY:
        raise ValidationFailed(f"quantity must be at most {MAX_QUANTITY}")
    cid = _text(data, "client_order_id", 128)
    disclosed = data.get("disclosed_quantity")
    risk_amount = _bounded(parse_price(_field(data, "risk_amount"), "risk_amount", required=False), "risk_amount")
    risk_percent = _bounded(parse_price(_field(data, "risk_percent"), "risk_percent", required=False), "risk_percent")
    if risk_percent is not None and risk_percent > 100:
        raise ValidationFailed(f"risk_percent must be at most 100, got {risk_percent}")
    raw_exit_at = _field(data, "exit_at")
    breakeven_after = _breakeven_after(data.get("breakeven_after"))
    breakeven_at = _bounded(parse_price(_field(data, "breakeven_at"), "breakeven_at", required=False), "breakeven_at")
    breakeven_buffer = _bounded(
        parse_price(_field(data, "breakeven_buffer"), "breakeven_buffer", required=False), "breakeven_buffer"
    )
    if breakeven_buffer is not None and breakeven_buffer < 0:
        raise ValidationFailed(f"breakeven_buffer must not be negative, got {breakeven_buffer}")
    _breakeven_trigger(breakeven_after, breakeven_at)
    raw_targets = data.get("targets")
    if raw_targets is not None:
        if _level_given(data, "target"):
            raise ValidationFailed("give target_price/percent/points or targets, not both")
        target_price, targets = _target_or_targets(None, raw_targets, action, entry, breakeven_after)
    else:
        target_price = _level(data, "target", action, entry, is_stop=False)
        _target_or_targets(target_price, None, action, entry, breakeven_after)
        targets = ()
    return BracketSpec(
        account_id=AccountId(account_id),
        symbol=symbol,
        exchange=exchange,
        product=_field(data, "product"),
        action=action,
        quantity=_quantity_or_risk(quantity_raw, risk_amount, risk_percent),
        entry_price=entry,
        sl_price=_level(data, "sl", action, entry, is_stop=True),
        target_price=target_price,
        price_type=_field(data, "pricetype", "price_type"),
        trigger_price=_bounded(
            parse_price(_field(data, "trigger_price"), "trigger_price", required=False), "trigger_price"
        ),
        trail=_trail(data),
        trail_activation_price=_bounded(
            parse_price(_field(data, "trail_activation_price"), "trail_activation_price", required=False),
            "trail_activation_price",
        ),
        validity=_field(data, "validity"),
        disclosed_quantity=0 if disclosed in (None, "") else disclosed,
        tag=_text(data, "tag", 20),
        strategy=_text(data, "strategy", 64),
        client_order_id=None if cid is None else ClientOrderId(cid),
        exit_after=_exit_after(data.get("exit_after")),
        exit_at=None if raw_exit_at is None else parse_exit_at(raw_exit_at),
        reverse=_flag(data.get("reverse"), "reverse"),
        risk_amount=risk_amount,
        risk_percent=risk_percent,
        targets=targets,
        breakeven_after=breakeven_after,
        breakeven_buffer=_breakeven_buffer(breakeven_buffer, breakeven_after, breakeven_at),
        breakeven_at=breakeven_at,
    )
