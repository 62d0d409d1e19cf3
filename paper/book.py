"""The paper exchange's book: quotes, orders, trades and positions, and the state every desk of the engine shares."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from datetime import time as clock_time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from bracketflow.domain.instruments import Instrument, InstrumentMaster
from paper.kite import (
    DEFAULT_TICK,
    IST,
    LIVE_STATUSES,
    OPEN,
    REJECTED,
    USER_ID,
    KiteError,
    input_error,
    kite_timestamp,
)

if TYPE_CHECKING:
    from paper.gtt import Gtt


class DepthLevel(NamedTuple):
    """One price level of market depth."""

    price: Decimal
    quantity: int
    orders: int


@dataclass
class Quote:
    """The book for one instrument: touch and last trade; deeper levels are derived from the touch."""

    ltp: Decimal
    bid: Decimal
    ask: Decimal
    bid_qty: int = 0
    ask_qty: int = 0
    volume: int = 0
    last_qty: int = 0
    open: Decimal = Decimal(0)
    high: Decimal = Decimal(0)
    low: Decimal = Decimal(0)
    close: Decimal = Decimal(0)
    timestamp: datetime | None = None

    def depth(self, tick: Decimal) -> tuple[list[DepthLevel], list[DepthLevel]]:
        """Five levels a side, stepping one tick away from the touch; an empty side is all zeros."""
        step = tick if tick > 0 else DEFAULT_TICK
        bids: list[DepthLevel] = []
        asks: list[DepthLevel] = []
        for level in range(5):
            if self.bid > 0 and self.bid - level * step > 0:
                qty = self.bid_qty * (level + 1) if self.bid_qty else 0
                bids.append(DepthLevel(self.bid - level * step, qty, level + 1 if qty else 0))
            else:
                bids.append(DepthLevel(Decimal(0), 0, 0))
            if self.ask > 0:
                qty = self.ask_qty * (level + 1) if self.ask_qty else 0
                asks.append(DepthLevel(self.ask + level * step, qty, level + 1 if qty else 0))
            else:
                asks.append(DepthLevel(Decimal(0), 0, 0))
        return bids, asks


@dataclass
class Order:
    order_id: str
    exchange_order_id: str
    variety: str
    instrument: Instrument
    transaction_type: str
    order_type: str
    product: str
    quantity: int
    price: Decimal
    trigger_price: Decimal
    validity: str
    tag: str | None
    market_protection: Decimal
    disclosed_quantity: int
    order_timestamp: str
    status: str = OPEN
    # Wall-clock Unix seconds of arrival, to the microsecond (Kite's timestamps stop at the second): lets a benchmark
    # or test see the order rate the broker received in any one-second window. Shown in /_paper/state only.
    received_at: float = field(default_factory=time.time)
    status_message: str | None = None
    filled_quantity: int = 0
    cancelled_quantity: int = 0
    average_price: Decimal = Decimal(0)
    exchange_timestamp: str | None = None
    modifications: int = 0
    guid: str = ""
    # The price it actually works at: `price` for LIMIT/SL, the protection band edge for MARKET/SL-M.
    working_price: Decimal | None = None
    hold_until: float | None = None
    held_once: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pending_quantity(self) -> int:
        if self.status not in LIVE_STATUSES:
            return 0
        return self.quantity - self.filled_quantity - self.cancelled_quantity

    @property
    def is_buy(self) -> bool:
        return self.transaction_type == "BUY"

    def as_kite(self) -> dict[str, Any]:
        return {
            "placed_by": USER_ID,
            "order_id": self.order_id,
            "exchange_order_id": self.exchange_order_id if self.status != REJECTED else None,
            "parent_order_id": None,
            "status": self.status,
            "status_message": self.status_message,
            "status_message_raw": self.status_message,
            "order_timestamp": self.order_timestamp,
            "exchange_update_timestamp": self.exchange_timestamp,
            "exchange_timestamp": self.exchange_timestamp,
            "variety": self.variety,
            "modified": self.modifications > 0,
            "exchange": self.instrument.exchange,
            "tradingsymbol": self.instrument.tradingsymbol,
            "instrument_token": self.instrument.instrument_token,
            "order_type": self.order_type,
            "transaction_type": self.transaction_type,
            "validity": self.validity,
            "validity_ttl": 0,
            "product": self.product,
            "quantity": self.quantity,
            "disclosed_quantity": self.disclosed_quantity,
            "price": self.price,
            "trigger_price": self.trigger_price,
            "average_price": self.average_price,
            "filled_quantity": self.filled_quantity,
            "pending_quantity": self.pending_quantity,
            "cancelled_quantity": self.cancelled_quantity,
            "market_protection": self.market_protection,
            "meta": {},
            "tag": self.tag,
            "tags": [self.tag] if self.tag else [],
            "guid": self.guid,
        }


@dataclass
class Trade:
    trade_id: str
    order: Order
    quantity: int
    price: Decimal
    timestamp: str

    def as_kite(self) -> dict[str, Any]:
        return {
            "trade_id": self.trade_id,
            "order_id": self.order.order_id,
            "exchange_order_id": self.order.exchange_order_id,
            "tradingsymbol": self.order.instrument.tradingsymbol,
            "exchange": self.order.instrument.exchange,
            "instrument_token": self.order.instrument.instrument_token,
            "product": self.order.product,
            "average_price": self.price,
            "quantity": self.quantity,
            "transaction_type": self.order.transaction_type,
            "fill_timestamp": self.timestamp,
            "order_timestamp": self.order.order_timestamp,
            "exchange_timestamp": self.timestamp,
        }


@dataclass
class Position:
    instrument: Instrument
    product: str
    quantity: int = 0
    average_price: Decimal = Decimal(0)  # cost of the open quantity
    realised: Decimal = Decimal(0)
    buy_quantity: int = 0
    buy_value: Decimal = Decimal(0)
    sell_quantity: int = 0
    sell_value: Decimal = Decimal(0)
    last_fill_price: Decimal = Decimal(0)

    def apply_fill(self, is_buy: bool, quantity: int, price: Decimal) -> None:
        signed = quantity if is_buy else -quantity
        if is_buy:
            self.buy_quantity += quantity
            self.buy_value += price * quantity
        else:
            self.sell_quantity += quantity
            self.sell_value += price * quantity
        self.last_fill_price = price
        if self.quantity == 0 or (self.quantity > 0) == (signed > 0):
            total = abs(self.quantity) + quantity
            self.average_price = (self.average_price * abs(self.quantity) + price * quantity) / total
            self.quantity += signed
            return
        # Reducing (or flipping) the open quantity realises P&L against its average cost.
        closing = min(quantity, abs(self.quantity))
        direction = 1 if self.quantity > 0 else -1
        self.realised += (price - self.average_price) * closing * direction
        self.quantity += signed
        if self.quantity == 0:
            self.average_price = Decimal(0)
        elif (self.quantity > 0) != (direction > 0):
            self.average_price = price

    def as_kite(self, last_price: Decimal) -> dict[str, Any]:
        last = last_price if last_price > 0 else self.last_fill_price
        pnl = self.sell_value - self.buy_value + self.quantity * last
        unrealised = pnl - self.realised
        buy_price = self.buy_value / self.buy_quantity if self.buy_quantity else Decimal(0)
        sell_price = self.sell_value / self.sell_quantity if self.sell_quantity else Decimal(0)
        return {
            "tradingsymbol": self.instrument.tradingsymbol,
            "exchange": self.instrument.exchange,
            "instrument_token": self.instrument.instrument_token,
            "product": self.product,
            "quantity": self.quantity,
            "overnight_quantity": 0,
            "multiplier": 1,
            "average_price": self.average_price,
            "close_price": Decimal(0),
            "last_price": last,
            "value": self.sell_value - self.buy_value,
            "pnl": pnl,
            "m2m": pnl,
            "unrealised": unrealised,
            "realised": self.realised,
            "buy_quantity": self.buy_quantity,
            "buy_price": buy_price,
            "buy_value": self.buy_value,
            "buy_m2m": self.buy_value,
            "sell_quantity": self.sell_quantity,
            "sell_price": sell_price,
            "sell_value": self.sell_value,
            "sell_m2m": self.sell_value,
            "day_buy_quantity": self.buy_quantity,
            "day_buy_price": buy_price,
            "day_buy_value": self.buy_value,
            "day_sell_quantity": self.sell_quantity,
            "day_sell_price": sell_price,
            "day_sell_value": self.sell_value,
        }


OrderListener = Callable[[dict[str, Any]], None]
# (path, instrument) -> a rejection message, or None to let the order through. Lets fault rules reject orders.
RejectGate = Callable[[str, Instrument], str | None]
# (order) -> seconds to hold its fill, or None. Lets fault rules delay fills.
FillGate = Callable[[Order], float | None]
# (order) -> (share of the order to fill, cancel message) for a MARKET order, or None. Lets fault rules play Kite's
# market protection cancelling the unfilled rest of a market order in a fast market.
PartialCancelGate = Callable[[Order], tuple[float, str] | None]


class Book:
    """The engine's shared state (books, orders, trades, GTTs, positions, timeline) and its lookups."""

    def __init__(
        self,
        instruments: InstrumentMaster,
        *,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        partial_fills: bool = False,
        market_hours: tuple[clock_time, clock_time] | None = None,
    ) -> None:
        self.instruments = instruments
        self._clock = clock or (lambda: datetime.now(IST))
        self._monotonic = monotonic
        self._wallclock = wallclock
        self.partial_fills = partial_fills
        self.market_hours = market_hours
        self.listeners: list[OrderListener] = []
        self.reject_gate: RejectGate | None = None
        self.fill_gate: FillGate | None = None
        self.partial_cancel_gate: PartialCancelGate | None = None
        self.reset()

    # ---- state -------------------------------------------------------------------------------------------

    def reset(self) -> None:
        self.quotes: dict[int, Quote] = {}
        self.orders: dict[str, Order] = {}
        self.trades: list[Trade] = []
        self.gtts: dict[int, Gtt] = {}
        self.positions: dict[tuple[int, str], Position] = {}
        # Live orders and active GTTs per instrument token, so a tick only looks at its own instrument.
        self._resting: dict[int, list[Order]] = {}
        self._watching: dict[int, list[Gtt]] = {}
        self._held: list[Order] = []
        # Every order and GTT change with a sub-second wall-clock time (Kite's own timestamps are whole seconds): what
        # a soak needs to measure, from the broker's side, how long a filled position went without protection.
        self.timeline: list[dict[str, Any]] = []
        # Ids keep counting across a reset: a real broker never hands out an order or GTT id twice, and a test that
        # resets between cases must not see a new order arrive under an id the system already mapped to a bracket.
        self._order_seq = getattr(self, "_order_seq", 0)
        self._trade_seq = getattr(self, "_trade_seq", 0)
        self._gtt_seq = getattr(self, "_gtt_seq", 100000)

    def market_is_open(self) -> bool:
        if self.market_hours is None:
            return True
        now = self._clock().astimezone(IST).time()
        return self.market_hours[0] <= now < self.market_hours[1]

    def _now(self) -> str:
        return kite_timestamp(self._clock())

    def _emit(self, order: Order) -> None:
        snapshot = order.as_kite()
        order.history.append(snapshot)
        self.timeline.append(
            {
                "t": self._wallclock(),
                "event": "order",
                "order_id": order.order_id,
                "status": order.status,
                "tag": order.tag,
                "exchange": order.instrument.exchange,
                "tradingsymbol": order.instrument.tradingsymbol,
                "product": order.product,
                "transaction_type": order.transaction_type,
                "order_type": order.order_type,
                "quantity": order.quantity,
                "filled_quantity": order.filled_quantity,
                "pending_quantity": order.pending_quantity,
            }
        )
        for listener in list(self.listeners):
            listener(dict(snapshot))

    def instrument(self, exchange: str, tradingsymbol: str) -> Instrument:
        found = self.instruments.get(exchange, tradingsymbol)
        if found is None:
            raise input_error(f"Instrument {exchange}:{tradingsymbol} not found.")
        return found

    def order(self, order_id: str) -> Order:
        found = self.orders.get(order_id)
        if found is None:
            raise KiteError("Couldn't find that `order_id`.", "InputException", 404)
        return found

    def quote(self, instrument: Instrument) -> Quote | None:
        return self.quotes.get(instrument.instrument_token)

    def ltp(self, instrument: Instrument) -> Decimal | None:
        quote = self.quotes.get(instrument.instrument_token)
        return quote.ltp if quote else None

    # ---- checks shared by orders and GTTs ----------------------------------------------------------------

    def _check_price(self, instrument: Instrument, value: Decimal, name: str) -> None:
        if value <= 0:
            raise input_error(f"Invalid `{name}`: it must be greater than 0.")
        tick = instrument.tick_size if instrument.tick_size > 0 else DEFAULT_TICK
        if value % tick != 0:
            raise input_error(
                f"Tick size for this script is {tick}. Kindly enter the {name.replace('_', ' ')} "
                "in the multiple of tick size for this script."
            )

    def _check_quantity(self, instrument: Instrument, quantity: int | None) -> int:
        if quantity is None or quantity <= 0:
            raise input_error("Invalid `quantity`: it must be a whole number greater than 0.")
        if not instrument.is_lot_multiple(quantity):
            raise input_error(f"Quantity should be a multiple of lot size ({instrument.lot_size}).")
        return quantity
