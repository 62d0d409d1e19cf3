"""Orders on the paper exchange: Kite's checks, placing, modifying and cancelling, stop triggers, matching and fills."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any

from bracketflow.domain.instruments import Instrument
from paper.book import Book, Order, Position, Quote, Trade
from paper.kite import (
    CANCELLED,
    COMPLETE,
    DEFAULT_TICK,
    EXCHANGES,
    LIVE_STATUSES,
    MARKET_CLOSED,
    MAX_MODIFICATIONS,
    MAX_TAG_LENGTH,
    OPEN,
    ORDER_TYPES,
    PRODUCTS,
    REJECTED,
    TRANSACTION_TYPES,
    TRIGGER_PENDING,
    VALIDITIES,
    VARIETIES,
    auto_protection_percent,
    decimal_param,
    input_error,
    integer_param,
)

if TYPE_CHECKING:
    from paper.gtt import Gtt


class OrderDesk(Book):
    """Orders from arrival to their last fill, and the matching a quote sets off."""

    if TYPE_CHECKING:  # a quote also checks the GTTs on the GttDesk the Engine also is

        def _expired_if_due(self, gtt: Gtt, now: str) -> Gtt: ...

        def _check_gtt(self, gtt: Gtt, ltp: Decimal) -> None: ...

    def _check_protection(self, order_type: str, protection: Decimal | None) -> Decimal:
        if order_type in {"MARKET", "SL-M"}:
            if protection is None or protection == 0:
                raise input_error(
                    "Market orders without market protection are not allowed via API. "
                    "Please set market protection or use a Limit order."
                )
            if protection != -1 and not (0 < protection <= 100):
                raise input_error("Invalid `market_protection`: use -1 (automatic) or a percentage above 0 up to 100.")
            return protection
        return protection if protection is not None else Decimal(0)

    def _check_stop(self, transaction_type: str, order_type: str, price: Decimal, trigger: Decimal) -> None:
        if order_type != "SL":
            return
        if transaction_type == "BUY" and trigger > price:
            raise input_error("Trigger price for stoploss buy orders should be lower than or equal to the limit price.")
        if transaction_type == "SELL" and trigger < price:
            raise input_error(
                "Trigger price for stoploss sell orders should be higher than or equal to the limit price."
            )

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
            raise input_error(f"Invalid `variety` {variety!r}: the paper exchange supports regular and amo.")
        for name in ("exchange", "tradingsymbol", "transaction_type", "quantity", "product", "order_type"):
            if not params.get(name):
                raise input_error(f"Missing `{name}`.")
        exchange = str(params["exchange"]).upper()
        if exchange not in EXCHANGES:
            raise input_error(f"Invalid `exchange` {exchange!r}.")
        instrument = self.instrument(exchange, str(params["tradingsymbol"]))
        if not instrument.tradable:
            raise input_error(f"{instrument.tradingsymbol} is an index and cannot be traded.")
        transaction_type = str(params["transaction_type"]).upper()
        if transaction_type not in TRANSACTION_TYPES:
            raise input_error("Invalid `transaction_type`: use BUY or SELL.")
        order_type = str(params["order_type"]).upper()
        if order_type not in ORDER_TYPES:
            raise input_error("Invalid `order_type`: use MARKET, LIMIT, SL or SL-M.")
        product = str(params["product"]).upper()
        if product not in PRODUCTS:
            raise input_error("Invalid `product`: use CNC, NRML, MIS or MTF.")
        if product in {"CNC", "MTF"} and exchange in {"NFO", "BFO"}:
            raise input_error(f"{product} is not allowed for derivatives; use NRML or MIS.")
        quantity = self._check_quantity(instrument, integer_param(params, "quantity"))
        validity = str(params.get("validity") or "DAY").upper()
        if validity not in VALIDITIES:
            raise input_error("Invalid `validity`: use DAY, IOC or TTL.")
        tag = params.get("tag") or None
        if tag is not None and len(str(tag)) > MAX_TAG_LENGTH:
            raise input_error(f"Invalid `tag`: at most {MAX_TAG_LENGTH} characters.")
        price = decimal_param(params, "price", Decimal(0)) or Decimal(0)
        trigger = decimal_param(params, "trigger_price", Decimal(0)) or Decimal(0)
        if order_type in {"LIMIT", "SL"}:
            self._check_price(instrument, price, "price")
        else:
            price = Decimal(0)
        if order_type in {"SL", "SL-M"}:
            self._check_price(instrument, trigger, "trigger_price")
        else:
            trigger = Decimal(0)
        self._check_stop(transaction_type, order_type, price, trigger)
        protection = self._check_protection(order_type, decimal_param(params, "market_protection"))
        disclosed = integer_param(params, "disclosed_quantity", 0) or 0

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
            raise input_error(f"Order {order_id} is a {order.variety} order, not {variety}.")
        if order.status not in LIVE_STATUSES:
            raise input_error(f"Order cannot be modified as it is {order.status.lower()}.")
        if order.modifications >= MAX_MODIFICATIONS:
            raise input_error("Maximum allowed order modifications exceeded.")
        instrument = order.instrument
        order_type = str(params.get("order_type") or order.order_type).upper()
        if order_type not in ORDER_TYPES:
            raise input_error("Invalid `order_type`: use MARKET, LIMIT, SL or SL-M.")
        if order.order_type in {"LIMIT", "MARKET"} and order_type in {"SL", "SL-M"}:
            raise input_error(f"A {order.order_type} order cannot be changed to {order_type}.")
        quantity = self._check_quantity(instrument, integer_param(params, "quantity", order.quantity))
        if quantity < order.filled_quantity:
            raise input_error("Quantity cannot be less than the filled quantity.")
        price = decimal_param(params, "price", order.price) or Decimal(0)
        trigger = decimal_param(params, "trigger_price", order.trigger_price) or Decimal(0)
        if order_type in {"LIMIT", "SL"}:
            self._check_price(instrument, price, "price")
        else:
            price = Decimal(0)
        if order_type in {"SL", "SL-M"} and order.status == TRIGGER_PENDING:
            self._check_price(instrument, trigger, "trigger_price")
        self._check_stop(order.transaction_type, order_type, price, trigger)
        # An existing MARKET order keeps its protection; a change to MARKET must bring one (as Kite).
        protection_param = decimal_param(params, "market_protection")
        if protection_param is None and order_type == order.order_type:
            protection_param = order.market_protection
        protection = self._check_protection(order_type, protection_param)
        validity = str(params.get("validity") or order.validity).upper()
        if validity not in VALIDITIES:
            raise input_error("Invalid `validity`: use DAY, IOC or TTL.")

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
            raise input_error(f"Order {order_id} is a {order.variety} order, not {variety}.")
        if order.status not in LIVE_STATUSES:
            raise input_error(f"Order cannot be cancelled as it is {order.status.lower()}.")
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
            raise input_error("Invalid `ltp`: it must be greater than 0.")
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
