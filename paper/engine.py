"""The paper exchange's matching engine: books, orders, GTTs, positions and order-update events. No I/O.

Kite semantics it mirrors (and where it has to pick, what it picks):
- LIMIT orders fill when the touch crosses them: at the touch when marketable on arrival, at their own
  price when they rest and the market later moves through them.
- MARKET and SL-M orders need `market_protection` (-1 = automatic, or 0 < x <= 100 percent). As Kite does,
  the order becomes a limit at the protection price (LTP +/- x%): it fills at the touch when the touch is
  inside that band, otherwise it rests OPEN at the band edge (it is not rejected).
- SL / SL-M rest as TRIGGER PENDING until LTP reaches the trigger (BUY: LTP >= trigger, SELL: LTP <= trigger),
  then work as a limit at `price` (SL) or as a protected market order (SL-M). A stop already crossed on
  arrival is REJECTED with Kite's status message.
- GTT single and two-leg (OCO): when LTP crosses a trigger the GTT becomes `triggered` and places its
  LIMIT child as a regular order; in a two-leg GTT only the crossed leg fires.
- At most 25 modifications per order; tag at most 20 characters; prices on the tick, quantities in lots.
- The market is open around the clock unless market hours are set; when closed, regular orders are REJECTED
  with Kite's message, AMO orders rest, and nothing fills until the open.
Money is Decimal throughout; the HTTP and ticker layers convert at their edge.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from datetime import time as clock_time
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from bracketflow.domain.instruments import Instrument, InstrumentMaster

IST = timezone(timedelta(hours=5, minutes=30))
MAX_MODIFICATIONS = 25
MAX_TAG_LENGTH = 20
DEFAULT_TICK = Decimal("0.05")
VARIETIES = {"regular", "amo"}
EXCHANGES = {"NSE", "BSE", "NFO", "BFO", "CDS", "MCX"}
TRANSACTION_TYPES = {"BUY", "SELL"}
ORDER_TYPES = {"MARKET", "LIMIT", "SL", "SL-M"}
PRODUCTS = {"CNC", "NRML", "MIS", "MTF"}
VALIDITIES = {"DAY", "IOC", "TTL"}
OPEN = "OPEN"
COMPLETE = "COMPLETE"
CANCELLED = "CANCELLED"
REJECTED = "REJECTED"
TRIGGER_PENDING = "TRIGGER PENDING"
LIVE_STATUSES = {OPEN, TRIGGER_PENDING}
USER_ID = "PAPER1"


MARKET_CLOSED = "Markets are closed right now. Use GTT for placing long standing orders instead."


def parse_market_hours(text: str | None) -> tuple[clock_time, clock_time] | None:
    """`09:15-15:30` (IST) -> (open, close); empty means open around the clock."""
    if not text:
        return None
    try:
        start, end = (datetime.strptime(part.strip(), "%H:%M").time() for part in text.split("-"))
    except ValueError:
        raise ValueError(f"market hours must look like 09:15-15:30 (IST); got {text!r}") from None
    if start >= end:
        raise ValueError(f"market hours must open before they close; got {text!r}")
    return start, end


class KiteError(Exception):
    """An error Kite would answer with: the HTTP layer turns it into Kite's error envelope."""

    def __init__(self, message: str, error_type: str = "InputException", http_status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.http_status = http_status


def _input(message: str) -> KiteError:
    return KiteError(message, "InputException", 400)


def kite_timestamp(moment: datetime) -> str:
    return moment.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S")


def auto_protection_percent(ltp: Decimal) -> Decimal:
    """Kite's automatic market protection narrows as prices rise; an approximation of its published bands."""
    if ltp < 100:
        return Decimal(2)
    if ltp < 500:
        return Decimal(1)
    return Decimal("0.5")


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

    def depth(self, tick: Decimal) -> tuple[list[tuple[Decimal, int, int]], list[tuple[Decimal, int, int]]]:
        """Five levels a side, stepping one tick away from the touch; an empty side is all zeros."""
        step = tick if tick > 0 else DEFAULT_TICK
        bids: list[tuple[Decimal, int, int]] = []
        asks: list[tuple[Decimal, int, int]] = []
        for level in range(5):
            if self.bid > 0 and self.bid - level * step > 0:
                qty = self.bid_qty * (level + 1) if self.bid_qty else 0
                bids.append((self.bid - level * step, qty, level + 1 if qty else 0))
            else:
                bids.append((Decimal(0), 0, 0))
            if self.ask > 0:
                qty = self.ask_qty * (level + 1) if self.ask_qty else 0
                asks.append((self.ask + level * step, qty, level + 1 if qty else 0))
            else:
                asks.append((Decimal(0), 0, 0))
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


@dataclass
class GttLeg:
    transaction_type: str
    quantity: int
    price: Decimal
    product: str
    order_type: str = "LIMIT"
    result: dict[str, Any] | None = None


@dataclass
class Gtt:
    id: int
    type: str
    instrument: Instrument
    trigger_values: list[Decimal]
    last_price: Decimal
    legs: list[GttLeg]
    created_at: str
    updated_at: str
    expires_at: str
    status: str = "active"

    def as_kite(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": USER_ID,
            "parent_trigger": None,
            "type": self.type,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "expires_at": self.expires_at,
            "status": self.status,
            "condition": {
                "exchange": self.instrument.exchange,
                "last_price": self.last_price,
                "tradingsymbol": self.instrument.tradingsymbol,
                "trigger_values": list(self.trigger_values),
                "instrument_token": self.instrument.instrument_token,
            },
            "orders": [
                {
                    "exchange": self.instrument.exchange,
                    "tradingsymbol": self.instrument.tradingsymbol,
                    "product": leg.product,
                    "order_type": leg.order_type,
                    "transaction_type": leg.transaction_type,
                    "quantity": leg.quantity,
                    "price": leg.price,
                    "result": leg.result,
                }
                for leg in self.legs
            ],
            "meta": None,
        }


OrderListener = Callable[[dict[str, Any]], None]
# (path, instrument) -> a rejection message, or None to let the order through. Lets fault rules reject orders.
RejectGate = Callable[[str, Instrument], str | None]
# (order) -> seconds to hold its fill, or None. Lets fault rules delay fills.
FillGate = Callable[[Order], float | None]
# (order) -> (share of the order to fill, cancel message) for a MARKET order, or None. Lets fault rules play Kite's
# market protection cancelling the unfilled rest of a market order in a fast market.
PartialCancelGate = Callable[[Order], tuple[float, str] | None]

# Our wording (Kite's own text is not published): the exchange cancelled what market protection would not fill.
MARKET_PROTECTION_CANCELLED = (
    "Order cancelled by the exchange: the rest could not be filled within the market protection price."
)


def _decimal(params: Mapping[str, Any], name: str, default: Decimal | None = None) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise _input(f"Invalid `{name}`: {raw!r} is not a number.") from None
    if not value.is_finite():
        raise _input(f"Invalid `{name}`: {raw!r} is not a number.")
    return value


def _integer(params: Mapping[str, Any], name: str, default: int | None = None) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise _input(f"Invalid `{name}`: {raw!r} is not a whole number.") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise _input(f"Invalid `{name}`: {raw!r} is not a whole number.")
    return int(value)


class Engine:
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
            raise _input(f"Instrument {exchange}:{tradingsymbol} not found.")
        return found

    def order(self, order_id: str) -> Order:
        found = self.orders.get(order_id)
        if found is None:
            raise KiteError("Couldn't find that `order_id`.", "InputException", 404)
        return found

    def gtt(self, trigger_id: int | str) -> Gtt:
        try:
            found = self.gtts.get(int(trigger_id))
        except ValueError:
            found = None
        if found is None:
            raise KiteError("Couldn't find that trigger.", "InputException", 404)
        return self._expired_if_due(found, self._now())

    def all_gtts(self) -> list[Gtt]:
        now = self._now()
        return [self._expired_if_due(g, now) for g in self.gtts.values()]

    def _expired_if_due(self, gtt: Gtt, now: str) -> Gtt:
        """Kite GTTs live a year: an active one past its expires_at is `expired` and can no longer fire."""
        if gtt.status == "active" and gtt.expires_at <= now:  # both Kite timestamps in IST: they sort as text
            gtt.status = "expired"
            gtt.updated_at = gtt.expires_at
            self._record_gtt(gtt, "expired")
        return gtt

    def _record_gtt(self, gtt: Gtt, change: str) -> None:
        self.timeline.append(
            {
                "t": self._wallclock(),
                "event": "gtt",
                "change": change,
                "id": gtt.id,
                "status": gtt.status,
                "exchange": gtt.instrument.exchange,
                "tradingsymbol": gtt.instrument.tradingsymbol,
                "legs": [
                    {"transaction_type": leg.transaction_type, "quantity": leg.quantity, "product": leg.product}
                    for leg in gtt.legs
                ],
                "order_id": None,  # triggered: the child order it placed
            }
        )

    def quote(self, instrument: Instrument) -> Quote | None:
        return self.quotes.get(instrument.instrument_token)

    def ltp(self, instrument: Instrument) -> Decimal | None:
        quote = self.quotes.get(instrument.instrument_token)
        return quote.ltp if quote else None

    # ---- orders ------------------------------------------------------------------------------------------

    def _check_price(self, instrument: Instrument, value: Decimal, name: str) -> None:
        if value <= 0:
            raise _input(f"Invalid `{name}`: it must be greater than 0.")
        tick = instrument.tick_size if instrument.tick_size > 0 else DEFAULT_TICK
        if value % tick != 0:
            raise _input(
                f"Tick size for this script is {tick}. Kindly enter the {name.replace('_', ' ')} "
                "in the multiple of tick size for this script."
            )

    def _check_quantity(self, instrument: Instrument, quantity: int | None) -> int:
        if quantity is None or quantity <= 0:
            raise _input("Invalid `quantity`: it must be a whole number greater than 0.")
        if not instrument.is_lot_multiple(quantity):
            raise _input(f"Quantity should be a multiple of lot size ({instrument.lot_size}).")
        return quantity

    def _check_protection(self, order_type: str, protection: Decimal | None) -> Decimal:
        if order_type in {"MARKET", "SL-M"}:
            if protection is None or protection == 0:
                raise _input(
                    "Market orders without market protection are not allowed via API. "
                    "Please set market protection or use a Limit order."
                )
            if protection != -1 and not (0 < protection <= 100):
                raise _input("Invalid `market_protection`: use -1 (automatic) or a percentage above 0 up to 100.")
            return protection
        return protection if protection is not None else Decimal(0)

    def _check_stop(self, transaction_type: str, order_type: str, price: Decimal, trigger: Decimal) -> None:
        if order_type != "SL":
            return
        if transaction_type == "BUY" and trigger > price:
            raise _input("Trigger price for stoploss buy orders should be lower than or equal to the limit price.")
        if transaction_type == "SELL" and trigger < price:
            raise _input("Trigger price for stoploss sell orders should be higher than or equal to the limit price.")

    def _protection_price(self, order: Order, reference: Decimal) -> Decimal:
        percent = order.market_protection if order.market_protection > 0 else auto_protection_percent(reference)
        tick = order.instrument.tick_size if order.instrument.tick_size > 0 else DEFAULT_TICK
        band = reference * percent / 100
        # Rounded inwards so the protection never allows a worse price than promised.
        if order.is_buy:
            return ((reference + band) / tick).to_integral_value(rounding=ROUND_FLOOR) * tick
        edge = ((reference - band) / tick).to_integral_value(rounding=ROUND_CEILING) * tick
        return max(edge, tick)

    def place_order(self, variety: str, params: Mapping[str, Any], *, reject_reason: str | None = None) -> Order:  # noqa: C901, PLR0912, PLR0915 - Kite's checks in Kite's order: the first refusal wins
        """Validate like Kite (bad input raises KiteError 400) and place; the order may fill at once."""
        if variety not in VARIETIES:
            raise _input(f"Invalid `variety` {variety!r}: the paper exchange supports regular and amo.")
        for name in ("exchange", "tradingsymbol", "transaction_type", "quantity", "product", "order_type"):
            if not params.get(name):
                raise _input(f"Missing `{name}`.")
        exchange = str(params["exchange"]).upper()
        if exchange not in EXCHANGES:
            raise _input(f"Invalid `exchange` {exchange!r}.")
        instrument = self.instrument(exchange, str(params["tradingsymbol"]))
        if not instrument.tradable:
            raise _input(f"{instrument.tradingsymbol} is an index and cannot be traded.")
        transaction_type = str(params["transaction_type"]).upper()
        if transaction_type not in TRANSACTION_TYPES:
            raise _input("Invalid `transaction_type`: use BUY or SELL.")
        order_type = str(params["order_type"]).upper()
        if order_type not in ORDER_TYPES:
            raise _input("Invalid `order_type`: use MARKET, LIMIT, SL or SL-M.")
        product = str(params["product"]).upper()
        if product not in PRODUCTS:
            raise _input("Invalid `product`: use CNC, NRML, MIS or MTF.")
        if product in {"CNC", "MTF"} and exchange in {"NFO", "BFO"}:
            raise _input(f"{product} is not allowed for derivatives; use NRML or MIS.")
        quantity = self._check_quantity(instrument, _integer(params, "quantity"))
        validity = str(params.get("validity") or "DAY").upper()
        if validity not in VALIDITIES:
            raise _input("Invalid `validity`: use DAY, IOC or TTL.")
        tag = params.get("tag") or None
        if tag is not None and len(str(tag)) > MAX_TAG_LENGTH:
            raise _input(f"Invalid `tag`: at most {MAX_TAG_LENGTH} characters.")
        price = _decimal(params, "price", Decimal(0)) or Decimal(0)
        trigger = _decimal(params, "trigger_price", Decimal(0)) or Decimal(0)
        if order_type in {"LIMIT", "SL"}:
            self._check_price(instrument, price, "price")
        else:
            price = Decimal(0)
        if order_type in {"SL", "SL-M"}:
            self._check_price(instrument, trigger, "trigger_price")
        else:
            trigger = Decimal(0)
        self._check_stop(transaction_type, order_type, price, trigger)
        protection = self._check_protection(order_type, _decimal(params, "market_protection"))
        disclosed = _integer(params, "disclosed_quantity", 0) or 0

        self._order_seq += 1
        now = self._now()
        order = Order(
            order_id=f"{self._clock():%y%m%d}{self._order_seq:09d}",
            exchange_order_id=f"{1100000000000000 + self._order_seq}",
            variety=variety,
            instrument=instrument,
            transaction_type=transaction_type,
            order_type=order_type,
            product=product,
            quantity=quantity,
            price=price,
            trigger_price=trigger,
            validity=validity,
            tag=str(tag) if tag else None,
            market_protection=protection,
            disclosed_quantity=disclosed,
            order_timestamp=now,
            exchange_timestamp=now,
            guid=f"paper-{self._order_seq}",
        )
        self.orders[order.order_id] = order
        self._resting.setdefault(instrument.instrument_token, []).append(order)
        gate_reason = self.reject_gate("/orders", instrument) if self.reject_gate and not reject_reason else None
        reason = reject_reason or gate_reason
        if not reason and variety == "regular" and not self.market_is_open():
            reason = MARKET_CLOSED
        if reason:
            self._reject(order, reason)
            return order
        ltp = self.ltp(instrument)
        if order_type in {"SL", "SL-M"}:
            if ltp is not None and (ltp >= trigger if order.is_buy else ltp <= trigger):
                side = "higher" if order.is_buy else "lower"
                self._reject(
                    order,
                    f"Trigger price for stoploss {transaction_type.lower()} orders should be {side} "
                    "than the last traded price.",
                )
                return order
            order.status = TRIGGER_PENDING
            self._emit(order)
            return order
        if order_type == "LIMIT":
            order.working_price = price
        elif ltp is not None:
            order.working_price = self._protection_price(order, ltp)
        self._emit(order)
        partial = self.partial_cancel_gate(order) if self.partial_cancel_gate and order_type == "MARKET" else None
        if partial is not None:
            self._fill_part_then_cancel(order, *partial)
            return order
        self._try_fill(order, aggressive=True)
        self._expire_ioc(order)
        return order

    def _fill_part_then_cancel(self, order: Order, ratio: float, message: str) -> None:
        """Fill `ratio` of the order (whole lots, at the touch) and cancel the rest, as market protection does."""
        quote = self.quotes.get(order.instrument.instrument_token)
        lot = max(order.instrument.lot_size, 1)
        part = int(order.quantity * Decimal(str(ratio))) // lot * lot
        if quote is not None and part > 0 and self.market_is_open():
            touch = (quote.ask if quote.ask > 0 else quote.ltp) if order.is_buy else (quote.bid or quote.ltp)
            self._fill(order, part, touch)
        order.cancelled_quantity = order.quantity - order.filled_quantity
        order.status = CANCELLED
        order.status_message = message
        order.exchange_timestamp = self._now()
        self._emit(order)

    def _reject(self, order: Order, reason: str) -> None:
        order.status = REJECTED
        order.status_message = reason
        self._emit(order)

    def _expire_ioc(self, order: Order) -> None:
        if order.validity == "IOC" and order.status == OPEN and order.hold_until is None:
            order.cancelled_quantity = order.pending_quantity
            order.status = CANCELLED
            order.status_message = "IOC order cancelled: not filled on arrival."
            self._emit(order)

    def modify_order(self, variety: str, order_id: str, params: Mapping[str, Any]) -> Order:  # noqa: C901, PLR0912, PLR0915 - Kite's checks in Kite's order: the first refusal wins
        order = self.order(order_id)
        if order.variety != variety:
            raise _input(f"Order {order_id} is a {order.variety} order, not {variety}.")
        if order.status not in LIVE_STATUSES:
            raise _input(f"Order cannot be modified as it is {order.status.lower()}.")
        if order.modifications >= MAX_MODIFICATIONS:
            raise _input("Maximum allowed order modifications exceeded.")
        instrument = order.instrument
        order_type = str(params.get("order_type") or order.order_type).upper()
        if order_type not in ORDER_TYPES:
            raise _input("Invalid `order_type`: use MARKET, LIMIT, SL or SL-M.")
        if order.order_type in {"LIMIT", "MARKET"} and order_type in {"SL", "SL-M"}:
            raise _input(f"A {order.order_type} order cannot be changed to {order_type}.")
        quantity = self._check_quantity(instrument, _integer(params, "quantity", order.quantity))
        if quantity < order.filled_quantity:
            raise _input("Quantity cannot be less than the filled quantity.")
        price = _decimal(params, "price", order.price) or Decimal(0)
        trigger = _decimal(params, "trigger_price", order.trigger_price) or Decimal(0)
        if order_type in {"LIMIT", "SL"}:
            self._check_price(instrument, price, "price")
        else:
            price = Decimal(0)
        if order_type in {"SL", "SL-M"} and order.status == TRIGGER_PENDING:
            self._check_price(instrument, trigger, "trigger_price")
        self._check_stop(order.transaction_type, order_type, price, trigger)
        # An existing MARKET order keeps its protection; a change to MARKET must bring one (as Kite).
        protection_param = _decimal(params, "market_protection")
        if protection_param is None and order_type == order.order_type:
            protection_param = order.market_protection
        protection = self._check_protection(order_type, protection_param)
        validity = str(params.get("validity") or order.validity).upper()
        if validity not in VALIDITIES:
            raise _input("Invalid `validity`: use DAY, IOC or TTL.")

        order.order_type = order_type
        order.quantity = quantity
        order.price = price
        order.trigger_price = trigger if order_type in {"SL", "SL-M"} else Decimal(0)
        order.market_protection = protection
        order.validity = validity
        order.modifications += 1
        order.exchange_timestamp = self._now()
        if order.status == TRIGGER_PENDING:
            ltp = self.ltp(instrument)
            if order_type in {"LIMIT", "MARKET"}:
                order.status = OPEN
            elif ltp is not None and (ltp >= trigger if order.is_buy else ltp <= trigger):
                self._trigger(order, ltp)
                return order
        if order.status == OPEN:
            if order.order_type in {"LIMIT", "SL"}:
                order.working_price = price
            else:
                ltp = self.ltp(instrument)
                order.working_price = self._protection_price(order, ltp) if ltp is not None else None
        self._emit(order)
        if order.quantity - order.filled_quantity == 0:
            self._complete(order)
        elif order.status == OPEN:
            self._try_fill(order, aggressive=True)
        return order

    def cancel_order(self, variety: str, order_id: str) -> Order:
        order = self.order(order_id)
        if order.variety != variety:
            raise _input(f"Order {order_id} is a {order.variety} order, not {variety}.")
        if order.status not in LIVE_STATUSES:
            raise _input(f"Order cannot be cancelled as it is {order.status.lower()}.")
        order.cancelled_quantity = order.pending_quantity
        order.status = CANCELLED
        order.status_message = None
        order.exchange_timestamp = self._now()
        self._emit(order)
        return order

    def _trigger(self, order: Order, ltp: Decimal) -> None:
        order.status = OPEN
        if order.order_type == "SL":
            order.working_price = order.price
        else:
            order.working_price = self._protection_price(order, ltp)
        order.exchange_timestamp = self._now()
        self._emit(order)
        self._try_fill(order, aggressive=True)

    def _complete(self, order: Order) -> None:
        order.status = COMPLETE
        self._emit(order)

    def _try_fill(self, order: Order, *, aggressive: bool) -> None:
        if order.status != OPEN or order.working_price is None or not self.market_is_open():
            return
        quote = self.quotes.get(order.instrument.instrument_token)
        if quote is None:
            return
        if order.is_buy:
            touch = quote.ask if quote.ask > 0 else quote.ltp
            crosses = touch <= order.working_price
            available = quote.ask_qty
        else:
            touch = quote.bid if quote.bid > 0 else quote.ltp
            crosses = touch >= order.working_price
            available = quote.bid_qty
        if not crosses or touch <= 0:
            return
        if order.hold_until is not None:
            if self._monotonic() < order.hold_until:
                return
            order.hold_until = None
        elif self.fill_gate is not None and not order.held_once:
            hold = self.fill_gate(order)
            if hold:
                order.held_once = True
                order.hold_until = self._monotonic() + hold
                self._held.append(order)
                return
        fill_price = touch if aggressive else order.working_price
        pending = order.quantity - order.filled_quantity - order.cancelled_quantity
        quantity = pending
        if self.partial_fills and available > 0:
            lot = max(order.instrument.lot_size, 1)
            quantity = min(pending, max(available // lot * lot, lot))
        self._fill(order, quantity, fill_price)

    def _fill(self, order: Order, quantity: int, price: Decimal) -> None:
        now = self._now()
        self._trade_seq += 1
        self.trades.append(Trade(f"{10000000 + self._trade_seq}", order, quantity, price, now))
        order.average_price = (order.average_price * order.filled_quantity + price * quantity) / (
            order.filled_quantity + quantity
        )
        order.filled_quantity += quantity
        order.exchange_timestamp = now
        key = (order.instrument.instrument_token, order.product)
        position = self.positions.setdefault(key, Position(order.instrument, order.product))
        position.apply_fill(order.is_buy, quantity, price)
        if order.filled_quantity >= order.quantity:
            self._complete(order)
        else:
            self._emit(order)

    def release_held(self) -> None:
        """Fill orders whose delay has run out (the server calls this periodically)."""
        now = self._monotonic()
        due = [o for o in self._held if o.hold_until is not None and o.hold_until <= now]
        self._held = [o for o in self._held if o.hold_until is not None and o.hold_until > now]
        for order in due:
            self._try_fill(order, aggressive=True)

    # ---- market ------------------------------------------------------------------------------------------

    def set_quote(
        self,
        instrument: Instrument,
        ltp: Decimal,
        bid: Decimal | None = None,
        ask: Decimal | None = None,
        *,
        bid_qty: int | None = None,
        ask_qty: int | None = None,
        volume: int | None = None,
        last_qty: int | None = None,
    ) -> Quote:
        """Move the book and match everything resting on this instrument: stops, GTTs, then orders."""
        if ltp <= 0:
            raise _input("Invalid `ltp`: it must be greater than 0.")
        previous = self.quotes.get(instrument.instrument_token)
        quote = Quote(
            ltp=ltp,
            bid=bid if bid is not None else ltp,
            ask=ask if ask is not None else ltp,
            bid_qty=bid_qty if bid_qty is not None else 100 * max(instrument.lot_size, 1),
            ask_qty=ask_qty if ask_qty is not None else 100 * max(instrument.lot_size, 1),
            volume=volume if volume is not None else (previous.volume if previous else 0) + (last_qty or 1),
            last_qty=last_qty if last_qty is not None else max(instrument.lot_size, 1),
            open=previous.open if previous else ltp,
            high=max(previous.high, ltp) if previous else ltp,
            low=min(previous.low, ltp) if previous else ltp,
            close=previous.close if previous else (instrument.last_price or ltp),
            timestamp=self._clock(),
        )
        self.quotes[instrument.instrument_token] = quote
        if instrument.tradable:
            self._match(instrument)
        return quote

    def _match(self, instrument: Instrument) -> None:
        ltp = self.quotes[instrument.instrument_token].ltp
        token = instrument.instrument_token
        if token in self._resting:
            self._resting[token] = [o for o in self._resting[token] if o.status in LIVE_STATUSES]
        if token in self._watching:
            self._watching[token] = [g for g in self._watching[token] if g.status == "active"]
        for order in list(self._resting.get(token, ())):
            if order.status == TRIGGER_PENDING and (
                ltp >= order.trigger_price if order.is_buy else ltp <= order.trigger_price
            ):
                self._trigger(order, ltp)
        watched = self._watching.get(token, ())
        now = self._now() if watched else ""
        for gtt in list(watched):
            if self._expired_if_due(gtt, now).status == "active":
                self._check_gtt(gtt, ltp)
        for order in list(self._resting.get(token, ())):
            if order.status == OPEN:
                if order.working_price is None and order.order_type in {"MARKET", "SL-M"}:
                    # A protected market order that arrived before any quote takes its band from this one.
                    order.working_price = self._protection_price(order, ltp)
                    self._try_fill(order, aggressive=True)
                else:
                    self._try_fill(order, aggressive=False)

    # ---- GTT ---------------------------------------------------------------------------------------------

    def _parse_gtt(self, params: Mapping[str, Any]) -> tuple[str, Instrument, list[Decimal], Decimal, list[GttLeg]]:  # noqa: C901, PLR0912 - Kite's checks in Kite's order: the first refusal wins
        gtt_type = str(params.get("type") or "")
        if gtt_type not in {"single", "two-leg"}:
            raise _input("Invalid `type`: use single or two-leg.")
        try:
            condition = params["condition"]
            condition = json.loads(condition) if isinstance(condition, str) else condition
            orders = params["orders"]
            orders = json.loads(orders) if isinstance(orders, str) else orders
        except (KeyError, ValueError):
            raise _input("Invalid `condition` or `orders`: both must be JSON.") from None
        if not isinstance(condition, dict) or not isinstance(orders, list):
            raise _input("Invalid `condition` or `orders`.")
        instrument = self.instrument(str(condition.get("exchange", "")), str(condition.get("tradingsymbol", "")))
        if not instrument.tradable:
            raise _input(f"{instrument.tradingsymbol} is an index and cannot be traded.")
        raw_triggers = condition.get("trigger_values")
        if not isinstance(raw_triggers, list):
            raise _input("Invalid `trigger_values`: a list is required.")
        triggers = [_decimal({"trigger_values": v}, "trigger_values") or Decimal(0) for v in raw_triggers]
        last_price = _decimal(condition, "last_price")
        if last_price is None or last_price <= 0:
            raise _input("Invalid `last_price` in `condition`.")
        expected = 1 if gtt_type == "single" else 2
        if len(triggers) != expected or len(orders) != expected:
            raise _input(f"A {gtt_type} GTT needs {expected} trigger value(s) and {expected} order(s).")
        if any(t <= 0 for t in triggers):
            raise _input("Invalid `trigger_values`: they must be greater than 0.")
        if gtt_type == "single" and triggers[0] == last_price:
            raise _input("Trigger value cannot be the same as the last price.")
        if gtt_type == "two-leg" and not (triggers[0] < last_price < triggers[1]):
            raise _input("Invalid `trigger_values`: the lower trigger must be below and the upper above last_price.")
        legs = []
        for raw in orders:
            if not isinstance(raw, dict):
                raise _input("Invalid `orders`.")
            if str(raw.get("order_type", "")).upper() != "LIMIT":
                raise _input("Invalid `order_type` in GTT orders: only LIMIT orders are allowed.")
            for key in ("exchange", "tradingsymbol"):
                if raw.get(key) and str(raw[key]).upper() != getattr(instrument, key).upper():
                    raise _input(f"GTT orders must be for the condition's instrument ({instrument.key}).")
            side = str(raw.get("transaction_type", "")).upper()
            if side not in TRANSACTION_TYPES:
                raise _input("Invalid `transaction_type` in GTT orders.")
            product = str(raw.get("product", "")).upper()
            if product not in PRODUCTS:
                raise _input("Invalid `product` in GTT orders.")
            quantity = self._check_quantity(instrument, _integer(raw, "quantity"))
            price = _decimal(raw, "price", Decimal(0)) or Decimal(0)
            self._check_price(instrument, price, "price")
            legs.append(GttLeg(side, quantity, price, product))
        return gtt_type, instrument, triggers, last_price, legs

    def place_gtt(self, params: Mapping[str, Any]) -> Gtt:
        gtt_type, instrument, triggers, last_price, legs = self._parse_gtt(params)
        self._gtt_seq += 1
        now = self._clock()
        gtt = Gtt(
            id=self._gtt_seq,
            type=gtt_type,
            instrument=instrument,
            trigger_values=triggers,
            last_price=last_price,
            legs=legs,
            created_at=kite_timestamp(now),
            updated_at=kite_timestamp(now),
            expires_at=kite_timestamp(now + timedelta(days=365)),
        )
        self.gtts[gtt.id] = gtt
        self._record_gtt(gtt, "created")
        self._watching.setdefault(instrument.instrument_token, []).append(gtt)
        ltp = self.ltp(instrument)
        if ltp is not None:
            self._check_gtt(gtt, ltp)
        return gtt

    def modify_gtt(self, trigger_id: int | str, params: Mapping[str, Any]) -> Gtt:
        """GTT modify is a full replace of type, condition and orders (as Kite)."""
        gtt = self.gtt(trigger_id)
        if gtt.status != "active":
            raise _input(f"Trigger cannot be modified as it is {gtt.status}.")
        gtt_type, instrument, triggers, last_price, legs = self._parse_gtt(params)
        if instrument.instrument_token != gtt.instrument.instrument_token:
            raise _input("A GTT's instrument cannot be changed.")
        gtt.type, gtt.trigger_values, gtt.last_price, gtt.legs = gtt_type, triggers, last_price, legs
        gtt.updated_at = self._now()
        self._record_gtt(gtt, "modified")
        ltp = self.ltp(instrument)
        if ltp is not None:
            self._check_gtt(gtt, ltp)
        return gtt

    def delete_gtt(self, trigger_id: int | str) -> Gtt:
        gtt = self.gtt(trigger_id)
        if gtt.status != "active":
            raise _input(f"Trigger cannot be deleted as it is {gtt.status}.")
        gtt.status = "deleted"
        gtt.updated_at = self._now()
        self._record_gtt(gtt, "deleted")
        return gtt

    def _check_gtt(self, gtt: Gtt, ltp: Decimal) -> None:
        leg_index: int | None = None
        if gtt.type == "two-leg":
            if ltp <= gtt.trigger_values[0]:
                leg_index = 0
            elif ltp >= gtt.trigger_values[1]:
                leg_index = 1
        else:
            trigger = gtt.trigger_values[0]
            # A single GTT fires when LTP reaches the trigger from the side last_price was on.
            if (trigger > gtt.last_price and ltp >= trigger) or (trigger < gtt.last_price and ltp <= trigger):
                leg_index = 0
        if leg_index is not None:
            self._fire_gtt(gtt, leg_index)

    def _fire_gtt(self, gtt: Gtt, leg_index: int) -> None:
        leg = gtt.legs[leg_index]
        gtt.status = "triggered"
        now = self._now()
        gtt.updated_at = now
        params = {
            "exchange": gtt.instrument.exchange,
            "tradingsymbol": gtt.instrument.tradingsymbol,
            "transaction_type": leg.transaction_type,
            "quantity": leg.quantity,
            "product": leg.product,
            "order_type": "LIMIT",
            "price": leg.price,
        }
        reason = self.reject_gate("/gtt/triggers", gtt.instrument) if self.reject_gate else None
        # Recorded before its child order, so the child's fill never appears ahead of the trigger that placed it.
        self._record_gtt(gtt, "triggered")
        triggered = self.timeline[-1]
        order = self.place_order("regular", params, reject_reason=reason)
        triggered["order_id"] = order.order_id
        leg.result = {
            "account_id": USER_ID,
            "exchange": gtt.instrument.exchange,
            "tradingsymbol": gtt.instrument.tradingsymbol,
            "validity": "DAY",
            "product": leg.product,
            "order_type": "LIMIT",
            "transaction_type": leg.transaction_type,
            "quantity": leg.quantity,
            "price": leg.price,
            "meta": "",
            "timestamp": now,
            "triggered_at": gtt.trigger_values[leg_index] if gtt.type == "two-leg" else gtt.trigger_values[0],
            "order_result": {
                "status": "failed" if order.status == REJECTED else "success",
                "order_id": order.order_id,
                "rejection_reason": order.status_message if order.status == REJECTED else "",
            },
        }

    # ---- views -------------------------------------------------------------------------------------------

    def positions_view(self) -> dict[str, list[dict[str, Any]]]:
        rows = []
        for position in self.positions.values():
            ltp = self.ltp(position.instrument) or Decimal(0)
            rows.append(position.as_kite(ltp))
        return {"net": rows, "day": [dict(r) for r in rows]}

    def quote_view(self, instrument: Instrument) -> dict[str, Any]:
        quote = self.quote(instrument)
        if quote is None:
            quote = Quote(ltp=Decimal(0), bid=Decimal(0), ask=Decimal(0), bid_qty=0, ask_qty=0)
        bids, asks = quote.depth(instrument.tick_size)
        stamp = kite_timestamp(quote.timestamp) if quote.timestamp else None
        return {
            "instrument_token": instrument.instrument_token,
            "timestamp": stamp,
            "last_trade_time": stamp,
            "last_price": quote.ltp,
            "last_quantity": quote.last_qty,
            "buy_quantity": sum(q for _, q, _ in bids),
            "sell_quantity": sum(q for _, q, _ in asks),
            "volume": quote.volume,
            "average_price": quote.ltp,
            "oi": 0,
            "oi_day_high": 0,
            "oi_day_low": 0,
            "net_change": quote.ltp - quote.close if quote.close else Decimal(0),
            "lower_circuit_limit": Decimal(0),
            "upper_circuit_limit": Decimal(0),
            "ohlc": {"open": quote.open, "high": quote.high, "low": quote.low, "close": quote.close},
            "depth": {
                "buy": [{"price": p, "quantity": q, "orders": n} for p, q, n in bids],
                "sell": [{"price": p, "quantity": q, "orders": n} for p, q, n in asks],
            },
        }

    def state(self) -> dict[str, Any]:
        return {
            "orders": [{**o.as_kite(), "received_at": o.received_at} for o in self.orders.values()],
            "gtts": [g.as_kite() for g in self.all_gtts()],
            "positions": self.positions_view()["net"],
            "trades": [t.as_kite() for t in self.trades],
            "quotes": self.state_quotes(),
        }

    def state_quotes(self) -> dict[str, dict[str, Any]]:
        """Every quoted instrument's last price, bid and ask, by "EXCHANGE:SYMBOL"."""
        return {
            inst.key: {"ltp": q.ltp, "bid": q.bid, "ask": q.ask}
            for token, q in self.quotes.items()
            if (inst := self.instruments.by_token(token)) is not None
        }
