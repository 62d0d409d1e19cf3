"""GTTs on the paper exchange: single and two-leg (OCO) triggers that place a LIMIT order when LTP crosses them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from bracketflow.domain.instruments import Instrument
from paper.book import Book, Order
from paper.kite import (
    PRODUCTS,
    REJECTED,
    TRANSACTION_TYPES,
    USER_ID,
    KiteError,
    decimal_param,
    input_error,
    integer_param,
    kite_timestamp,
)


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


class GttSpec(NamedTuple):
    """A GTT request that passed Kite's checks."""

    type: str
    instrument: Instrument
    trigger_values: list[Decimal]
    last_price: Decimal
    legs: list[GttLeg]


class GttDesk(Book):
    """Placing, modifying, deleting, expiring and firing GTTs."""

    if TYPE_CHECKING:  # a fired GTT places its order through the OrderDesk the Engine also is

        def place_order(
            self, variety: str, params: Mapping[str, Any], *, reject_reason: str | None = None
        ) -> Order: ...

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

    def _parse_gtt(self, params: Mapping[str, Any]) -> GttSpec:  # noqa: C901, PLR0912 - Kite's checks in Kite's order: the first refusal wins
        gtt_type = str(params.get("type") or "")
        if gtt_type not in {"single", "two-leg"}:
            raise input_error("Invalid `type`: use single or two-leg.")
        try:
            condition = params["condition"]
            condition = json.loads(condition) if isinstance(condition, str) else condition
            orders = params["orders"]
            orders = json.loads(orders) if isinstance(orders, str) else orders
        except (KeyError, ValueError):
            raise input_error("Invalid `condition` or `orders`: both must be JSON.") from None
        if not isinstance(condition, dict) or not isinstance(orders, list):
            raise input_error("Invalid `condition` or `orders`.")
        instrument = self.instrument(str(condition.get("exchange", "")), str(condition.get("tradingsymbol", "")))
        if not instrument.tradable:
            raise input_error(f"{instrument.tradingsymbol} is an index and cannot be traded.")
        raw_triggers = condition.get("trigger_values")
        if not isinstance(raw_triggers, list):
            raise input_error("Invalid `trigger_values`: a list is required.")
        triggers = [decimal_param({"trigger_values": v}, "trigger_values") or Decimal(0) for v in raw_triggers]
        last_price = decimal_param(condition, "last_price")
        if last_price is None or last_price <= 0:
            raise input_error("Invalid `last_price` in `condition`.")
        expected = 1 if gtt_type == "single" else 2
        if len(triggers) != expected or len(orders) != expected:
            raise input_error(f"A {gtt_type} GTT needs {expected} trigger value(s) and {expected} order(s).")
        if any(t <= 0 for t in triggers):
            raise input_error("Invalid `trigger_values`: they must be greater than 0.")
        if gtt_type == "single" and triggers[0] == last_price:
            raise input_error("Trigger value cannot be the same as the last price.")
        if gtt_type == "two-leg" and not (triggers[0] < last_price < triggers[1]):
            raise input_error(
                "Invalid `trigger_values`: the lower trigger must be below and the upper above last_price."
            )
        legs = []
        for raw in orders:
            if not isinstance(raw, dict):
                raise input_error("Invalid `orders`.")
            if str(raw.get("order_type", "")).upper() != "LIMIT":
                raise input_error("Invalid `order_type` in GTT orders: only LIMIT orders are allowed.")
            for key in ("exchange", "tradingsymbol"):
                if raw.get(key) and str(raw[key]).upper() != getattr(instrument, key).upper():
                    raise input_error(f"GTT orders must be for the condition's instrument ({instrument.key}).")
            side = str(raw.get("transaction_type", "")).upper()
            if side not in TRANSACTION_TYPES:
                raise input_error("Invalid `transaction_type` in GTT orders.")
            product = str(raw.get("product", "")).upper()
            if product not in PRODUCTS:
                raise input_error("Invalid `product` in GTT orders.")
            quantity = self._check_quantity(instrument, integer_param(raw, "quantity"))
            price = decimal_param(raw, "price", Decimal(0)) or Decimal(0)
            self._check_price(instrument, price, "price")
            legs.append(GttLeg(side, quantity, price, product))
        return GttSpec(gtt_type, instrument, triggers, last_price, legs)

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
            raise input_error(f"Trigger cannot be modified as it is {gtt.status}.")
        gtt_type, instrument, triggers, last_price, legs = self._parse_gtt(params)
        if instrument.instrument_token != gtt.instrument.instrument_token:
            raise input_error("A GTT's instrument cannot be changed.")
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
            raise input_error(f"Trigger cannot be deleted as it is {gtt.status}.")
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
