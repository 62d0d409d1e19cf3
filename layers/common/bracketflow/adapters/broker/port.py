"""The broker port: what services may ask of a broker, in typed requests and reports.

Services depend on `BrokerPort`, never on Kite: the Kite adapter (kite.py) and anything else that speaks the same
calls (the paper exchange speaks Kite v3, so the same adapter drives it) fit behind it. Prices are Decimal here;
adapters convert at the wire. Reports are the broker's view, kept separate from our domain so reconciliation can
diff the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from bracketflow.domain.ids import BROKER_TAG_MAX, BrokerOrderId

# Kite's order statuses that end an order's life; anything else may still change.
TERMINAL_ORDER_STATUSES = frozenset({"COMPLETE", "CANCELLED", "REJECTED"})
# Order types Kite fills at whatever price the book offers: they must carry market_protection.
MARKET_LIKE_ORDER_TYPES = frozenset({"MARKET", "SL-M"})


@dataclass(frozen=True)
class OrderRequest:
    """One order to place (variety `regular` unless said otherwise)."""

    exchange: str
    tradingsymbol: str
    transaction_type: str  # BUY | SELL
    quantity: int
    product: str  # MIS | CNC | NRML
    order_type: str  # MARKET | LIMIT | SL | SL-M
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    validity: str = "DAY"
    disclosed_quantity: int | None = None
    variety: str = "regular"
    # Our label (bracketflow.domain.ids.order_tag): how a placement whose answer was lost is found again.
    tag: str | None = None
    # None: the adapter's configured default applies to MARKET and SL-M orders.
    market_protection: Decimal | None = None

    def __post_init__(self) -> None:
        if self.quantity <= 0:
            raise ValueError(f"quantity must be positive, got {self.quantity}")
        if self.tag is not None and (not self.tag.isalnum() or len(self.tag) > BROKER_TAG_MAX):
            raise ValueError(f"tag must be 1..{BROKER_TAG_MAX} letters or digits, got {self.tag!r}")
        if self.order_type in ("LIMIT", "SL") and self.price is None:
            raise ValueError(f"a {self.order_type} order needs a price")
        if self.order_type in ("SL", "SL-M") and self.trigger_price is None:
            raise ValueError(f"a {self.order_type} order needs a trigger_price")


@dataclass(frozen=True)
class OrderChange:
    """A modification of an open order; only the fields given change."""

    quantity: int | None = None
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    order_type: str | None = None
    validity: str | None = None
    disclosed_quantity: int | None = None
    variety: str = "regular"
    market_protection: Decimal | None = None


@dataclass(frozen=True)
class OrderReport:
    """One state of an order as the broker reports it (GET /orders, or one row of its history)."""

    order_id: BrokerOrderId
    status: str
    exchange: str
    tradingsymbol: str
    transaction_type: str
    order_type: str
    product: str
    variety: str
    quantity: int
    filled_quantity: int = 0
    pending_quantity: int = 0
    cancelled_quantity: int = 0
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    average_price: Decimal | None = None
    tag: str | None = None
    status_message: str | None = None
    exchange_order_id: str | None = None
    parent_order_id: str | None = None
    validity: str | None = None
    order_timestamp: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_ORDER_STATUSES


@dataclass(frozen=True)
class TradeReport:
    """One fill."""

    trade_id: str
    order_id: BrokerOrderId
    exchange: str
    tradingsymbol: str
    transaction_type: str
    product: str
    quantity: int
    average_price: Decimal
    exchange_order_id: str | None = None
    fill_timestamp: datetime | None = None


@dataclass(frozen=True)
class PositionReport:
    """A net position for one instrument and product (signed quantity: negative is short)."""

    exchange: str
    tradingsymbol: str
    product: str
    quantity: int
    average_price: Decimal
    last_price: Decimal | None = None
    pnl: Decimal | None = None
    buy_quantity: int = 0
    sell_quantity: int = 0
    instrument_token: int | None = None


@dataclass(frozen=True)
class GttLeg:
    """One child order of a GTT; Kite requires LIMIT children."""

    transaction_type: str
    quantity: int
    price: Decimal
    product: str
    order_type: str = "LIMIT"


@dataclass(frozen=True)
class GttRequest:
    """A GTT: `single` (one trigger, one leg) or `two-leg` OCO (triggers [lower, upper], legs in the same order)."""

    exchange: str
    tradingsymbol: str
    trigger_values: tuple[Decimal, ...]
    last_price: Decimal
    orders: tuple[GttLeg, ...]

    def __post_init__(self) -> None:
        if len(self.trigger_values) not in (1, 2) or len(self.orders) != len(self.trigger_values):
            raise ValueError("a GTT has one trigger and one leg (single) or two of each (two-leg)")
        if len(self.trigger_values) == 2 and not self.trigger_values[0] < self.trigger_values[1]:
            raise ValueError("a two-leg GTT's trigger_values are [lower, upper]")
        if any(leg.order_type != "LIMIT" for leg in self.orders):
            raise ValueError("GTT legs must be LIMIT orders")

    @property
    def type(self) -> str:
        return "single" if len(self.trigger_values) == 1 else "two-leg"


# GTT statuses in which it can no longer fire (Kite's: a GTT lives a year, then `expired`): nothing left to cancel, and
# nothing protects the position any more.
GTT_INERT = frozenset({"cancelled", "deleted", "disabled", "expired", "rejected"})


@dataclass(frozen=True)
class GttReport:
    """A GTT as the broker reports it; `triggered_order_ids` are the orders it placed when it fired."""

    gtt_id: int
    status: str  # active | triggered | disabled | expired | cancelled | rejected | deleted
    type: str
    exchange: str
    tradingsymbol: str
    trigger_values: tuple[Decimal, ...]
    last_price: Decimal | None
    orders: tuple[GttLeg, ...]
    triggered_order_ids: tuple[str, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def same_trigger_as(self, req: GttRequest) -> bool:
        """True when this GTT has the request's instrument, triggers and legs (how an orphan create is found)."""
        return (
            self.exchange == req.exchange
            and self.tradingsymbol == req.tradingsymbol
            and self.type == req.type
            and tuple(Decimal(v) for v in self.trigger_values) == tuple(req.trigger_values)
            and self.orders == req.orders
        )


@dataclass(frozen=True)
class Quote:
    """Market snapshot for one instrument ("EXCHANGE:SYMBOL")."""

    instrument: str
    last_price: Decimal
    instrument_token: int | None = None
    best_bid: Decimal | None = None
    best_ask: Decimal | None = None
    volume: int | None = None
    timestamp: datetime | None = None
    extra: dict[str, object] = field(default_factory=dict, compare=False, repr=False)


class BrokerPort(Protocol):
    """Everything services may ask of a broker. Every method may raise a bracketflow.errors.BrokerError."""

    def place_order(self, req: OrderRequest) -> BrokerOrderId: ...

    def modify_order(self, order_id: str, change: OrderChange) -> BrokerOrderId: ...

    def cancel_order(self, order_id: str, variety: str = "regular") -> BrokerOrderId: ...

    def order_history(self, order_id: str) -> list[OrderReport]: ...

    def orders(self) -> list[OrderReport]: ...

    def find_orders_by_tag(self, tag: str) -> list[OrderReport]: ...

    def trades(self) -> list[TradeReport]: ...

    def order_trades(self, order_id: str) -> list[TradeReport]: ...

    def positions(self) -> list[PositionReport]: ...

    def create_gtt(self, req: GttRequest, *, lookup_window_s: float | None = None) -> int: ...

    def modify_gtt(self, gtt_id: int, req: GttRequest) -> int: ...

    def delete_gtt(self, gtt_id: int) -> int: ...

    def gtts(self) -> list[GttReport]: ...

    def gtt(self, gtt_id: int) -> GttReport: ...

    def quote(self, instruments: Sequence[str]) -> dict[str, Quote]: ...

    def ltp(self, instruments: Sequence[str]) -> dict[str, Decimal]: ...
