"""WatchRequest and UnwatchRequest: the StreamerControlQueue's messages, "trail this protected bracket" and "stop
trailing it". The watch's producers: PlaceProtection (services/protect.py) and FollowEntry (services/working_entry.py,
a grown quantity), whose answer the bracket workflow sends on, and reconciliation after it protects a bracket again.
The unwatch's producer: Finalize (services/finalize.py). Their consumer: the streamer's control poller
(streamer/control.py), which reads them with read_control_message and keeps its own paise types inside.

A watch's stop_price is the stop to start from: the bracket's current (possibly already trailed) stop. Prices travel
as decimal strings; a number in the JSON is read as the decimal written.

breakeven_at / breakeven_stop (a bracket's breakeven_at, both or neither): once the price reaches breakeven_at, the
streamer moves the stop to breakeven_stop (the average fill plus the cost buffer, on the tick, worked out by the
producer), once, if that tightens it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from bracketflow.contracts.wire import compact_json, json_object
from bracketflow.domain.bracket import TrailSpec
from bracketflow.domain.enums import PositionSide, Product
from bracketflow.errors import ValidationFailed

WATCH = "watch"
UNWATCH = "unwatch"
# The tick a watch without one trails by (every NSE equity's).
DEFAULT_TICK_SIZE = Decimal("0.05")
_UINT32_END = 1 << 32


@dataclass(frozen=True)
class WatchRequest:
    """Trail this protected bracket from stop_price (a second watch of a watched bracket updates its quantity and
    GTT, and tightens its stop). account_id, exchange, tradingsymbol, quantity, target_price and gtt_id describe the
    position; the streamer trails with the rest."""

    bracket_id: str
    instrument_token: int
    side: PositionSide
    product: Product
    stop_price: Decimal
    tick_size: Decimal = DEFAULT_TICK_SIZE
    entry_price: Decimal | None = None  # the average fill; a percent trail of a CNC/NRML bracket refers to it
    trail: TrailSpec | None = None
    activation_price: Decimal | None = None
    account_id: str | None = None
    exchange: str | None = None
    tradingsymbol: str | None = None
    quantity: int | None = None  # what filled: the GTT protects this many
    target_price: Decimal | None = None
    gtt_id: str | None = None
    breakeven_at: Decimal | None = None
    breakeven_stop: Decimal | None = None

    def __post_init__(self) -> None:
        if (self.breakeven_at is None) != (self.breakeven_stop is None):
            raise ValidationFailed(
                f"watch of bracket {self.bracket_id!r}: give breakeven_at and breakeven_stop together"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": WATCH,
            "bracket_id": self.bracket_id,
            "account_id": self.account_id,
            "instrument_token": self.instrument_token,
            "exchange": self.exchange,
            "tradingsymbol": self.tradingsymbol,
            "side": self.side.value,
            "product": self.product.value,
            "quantity": self.quantity,
            "entry_price": _text(self.entry_price),
            "stop_price": str(self.stop_price),
            "target_price": _text(self.target_price),
            "tick_size": str(self.tick_size),
            "trail": None if self.trail is None else self.trail.to_dict(),
            "activation_price": _text(self.activation_price),
            "gtt_id": self.gtt_id,
            "breakeven_at": _text(self.breakeven_at),
            "breakeven_stop": _text(self.breakeven_stop),
        }

    def to_json(self) -> str:
        return compact_json(self.to_dict())

    @classmethod
    def from_json(cls, body: str | bytes) -> WatchRequest:
        """Parse a watch message; ValidationFailed names what is wrong (an unwatch, too, is refused here)."""
        message = read_control_message(body)
        if not isinstance(message, WatchRequest):
            raise ValidationFailed("control message is an unwatch, not a watch")
        return message

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> WatchRequest:
        try:
            token = raw["instrument_token"]
            if isinstance(token, bool) or not isinstance(token, int) or not 0 < token < _UINT32_END:
                raise ValueError(f"instrument_token must be a uint32, got {token!r}")
            trail = raw.get("trail")
            quantity = raw.get("quantity")
            tick = raw.get("tick_size")
            return cls(
                bracket_id=str(raw["bracket_id"]),
                instrument_token=token,
                side=PositionSide.parse(raw["side"]),
                product=Product.parse(raw["product"]),
                stop_price=_decimal(raw["stop_price"]),
                tick_size=DEFAULT_TICK_SIZE if tick is None else _decimal(tick),
                entry_price=_optional_decimal(raw.get("entry_price")),
                trail=None if trail is None else TrailSpec.from_dict(trail),
                activation_price=_optional_decimal(raw.get("activation_price")),
                account_id=_optional_text(raw.get("account_id")),
                exchange=_optional_text(raw.get("exchange")),
                tradingsymbol=_optional_text(raw.get("tradingsymbol")),
                quantity=None if quantity is None else int(quantity),
                target_price=_optional_decimal(raw.get("target_price")),
                gtt_id=_optional_text(raw.get("gtt_id")),
                breakeven_at=_optional_decimal(raw.get("breakeven_at")),
                breakeven_stop=_optional_decimal(raw.get("breakeven_stop")),
            )
        except KeyError as missing:
            raise ValidationFailed(f"watch of bracket {raw.get('bracket_id')!r} lacks {missing}") from None
        except (ValueError, TypeError, InvalidOperation) as exc:
            raise ValidationFailed(f"watch of bracket {raw.get('bracket_id')!r} is invalid: {exc}") from None


@dataclass(frozen=True)
class UnwatchRequest:
    """Stop trailing this bracket (it closed, or failed for good)."""

    bracket_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": UNWATCH, "bracket_id": self.bracket_id}

    def to_json(self) -> str:
        return compact_json(self.to_dict())

    @classmethod
    def from_json(cls, body: str | bytes) -> UnwatchRequest:
        message = read_control_message(body)
        if not isinstance(message, UnwatchRequest):
            raise ValidationFailed("control message is a watch, not an unwatch")
        return message


def read_control_message(body: str | bytes) -> WatchRequest | UnwatchRequest:
    """One StreamerControlQueue message; ValidationFailed names what is wrong (such a message can never be applied)."""
    raw = json_object(body, "control message")
    kind = raw.get("type")
    if not raw.get("bracket_id"):
        raise ValidationFailed("control message lacks bracket_id")
    if kind == UNWATCH:
        return UnwatchRequest(str(raw["bracket_id"]))
    if kind != WATCH:
        raise ValidationFailed(f"control message type must be {WATCH} or {UNWATCH}, got {kind!r}")
    return WatchRequest.from_dict(raw)


def _decimal(raw: object) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
        raise ValueError(f"a price must be a decimal string or number, got {raw!r}")
    return raw if isinstance(raw, Decimal) else Decimal(str(raw))


def _optional_decimal(raw: object) -> Decimal | None:
    return None if raw is None else _decimal(raw)


def _optional_text(raw: object) -> str | None:
    return None if raw is None else str(raw)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)
