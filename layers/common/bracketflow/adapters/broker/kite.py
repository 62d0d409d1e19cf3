"""Kite Connect v3 over `requests`: the BrokerPort for Zerodha (and for the paper exchange, which speaks the same).

Rules this adapter keeps, because real money rides on them:
- every HTTP call has a (connect, read) timeout;
- only calls that are safe to repeat are retried (GETs; modify, which sets absolute values; cancel and GTT delete,
  where "already cancelled/deleted" counts as done), with capped exponential backoff and jitter;
- placing an order or creating a GTT is never repeated within a call once the broker may have acted: a 429 (refused
  before acting) or a connection that never opened may be retried; after a timeout or a 5xx the broker's book is
  searched (by our tag for orders, by instrument + triggers + legs for GTTs, ignoring what existed before the call)
  over `lookup_window_s`, several looks `lookup_pause_s` apart, because a broker may show a new order or GTT only
  seconds after acting. Found: it is the answer. Not found, or the book could not be read: BrokerTimeout, outcome
  unknown. The caller's retry (the workflow's, seconds later) looks again before it places anything, so a request
  is made twice only if the broker shows it later than the window;
- MARKET and SL-M orders always carry `market_protection`;
- order calls (place, modify, cancel) go in a slot of the account-wide rate limiter (`order_throttle`), and leave
  no later than that slot allows: a call that is still here past its `send_by` (a slow thread, a credentials read)
  takes a new slot instead, so late orders never bunch up on top of the next second's at the broker;
- broker errors become the named exceptions in bracketflow.errors; an expired session says "log in again".
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import requests

from bracketflow import metrics_names
from bracketflow.adapters.broker.kite_http import (
    KITE_VERSION,
    BrokerUnreachable,
    CredentialsProvider,
    KiteCredentials,
    path_of,
    send_kite_request,
)
from bracketflow.adapters.broker.kite_json import (
    IST,
    decimal_or_none,
    error_from_response,
    gtt_from_kite,
    order_from_kite,
    position_from_kite,
    quote_from_kite,
    trade_from_kite,
)
from bracketflow.adapters.broker.port import (
    GTT_INERT,
    MARKET_LIKE_ORDER_TYPES,
    GttReport,
    GttRequest,
    OrderChange,
    OrderReport,
    OrderRequest,
    PositionReport,
    Quote,
    TradeReport,
)
from bracketflow.domain.ids import BrokerOrderId
from bracketflow.errors import (
    BrokerError,
    BrokerRateLimited,
    BrokerRejected,
    BrokerTimeout,
    BrokerUnavailable,
    RateLimited,
    SessionExpired,
)
from bracketflow.observability import logger, metrics, subsegment

# An order call whose slot has passed before it could leave takes a new one; after this many it is refused.
MAX_SLOT_MISSES = 3

# What an order throttle returns: the Unix time by which the order must leave on its slot (None: any time).
OrderThrottle = Callable[[], float | None]


class _SlotMissed(Exception):
    """The order's rate-limit slot passed before the request left: nothing was sent, so a new slot is taken."""

    def __init__(self, late_s: float) -> None:
        super().__init__(f"{late_s:.3f}s past the slot's send-by time")
        self.late_s = late_s


def _num(value: Decimal) -> str:
    # Form fields carry the exact decimal text; never a float's binary approximation.
    return format(value.normalize(), "f") if value == value.to_integral() else format(value, "f")


class KiteBroker:
    """BrokerPort on Kite Connect v3. Thread-safe enough for one Lambda: one pooled requests.Session."""

    def __init__(
        self,
        base_url: str,
        credentials: CredentialsProvider,
        *,
        connect_timeout_s: float = 3.05,
        read_timeout_s: float = 5.0,
        max_attempts: int = 4,
        backoff_base_s: float = 0.25,
        backoff_cap_s: float = 4.0,
        market_protection: Decimal = Decimal("5"),
        lookup_pause_s: float = 0.5,
        lookup_window_s: float = 3.0,
        order_throttle: OrderThrottle | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._timeout = (connect_timeout_s, read_timeout_s)
        self._max_attempts = max(1, max_attempts)
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._market_protection = market_protection
        self._lookup_pause_s = max(0.01, lookup_pause_s)
        self._lookup_window_s = max(0.0, lookup_window_s)
        self._order_throttle = order_throttle
        self._session = session or requests.Session()
        self._sleep = sleep
        self._jitter = jitter
        self._clock = clock

    # ---- orders -------------------------------------------------------------------------------------------------

    def place_order(self, req: OrderRequest) -> BrokerOrderId:
        """Place one order; never places it twice (see the module docstring)."""
        form = self.order_form(req)
        path = f"/orders/{req.variety}"
        # What already carries this tag (an earlier, failed exit of the same bracket, say) is not our answer.
        before = {o.order_id for o in self.find_orders_by_tag(req.tag)} if req.tag else None
        attempt = 0
        while True:
            attempt += 1
            try:
                data = self._send("POST", path, form=form, throttled=True)
                return BrokerOrderId(str(data["order_id"]))
            except (BrokerRateLimited, BrokerUnreachable) as exc:
                # Refused before acting: repeating is safe.
                if attempt >= self._max_attempts:
                    raise
                self._backoff(attempt, exc, "place_order")
            except (BrokerTimeout, BrokerUnavailable) as exc:
                if before is None or req.tag is None:
                    raise BrokerTimeout(
                        f"order placement for {req.tradingsymbol} failed ambiguously ({exc.message}) and it has no "
                        "tag to look it up by: check the broker's order book before placing it again",
                        http_status=exc.http_status,
                        error_type=exc.error_type,
                    ) from exc
                found = self._find_placed_order(req, req.tag, before, exc)
                logger.warning(
                    "order placement answer was lost but the order exists",
                    extra={"order_id": found, "tag": req.tag, "error": exc.message},
                )
                return found

    def order_form(self, req: OrderRequest) -> dict[str, str]:
        """The form Kite expects for this order; MARKET and SL-M always carry market_protection."""
        form: dict[str, str] = {
            "exchange": req.exchange,
            "tradingsymbol": req.tradingsymbol,
            "transaction_type": req.transaction_type,
            "quantity": str(req.quantity),
            "product": req.product,
            "order_type": req.order_type,
            "validity": req.validity,
        }
        if req.price is not None and req.order_type not in MARKET_LIKE_ORDER_TYPES:
            form["price"] = _num(req.price)
        if req.trigger_price is not None:
            form["trigger_price"] = _num(req.trigger_price)
        if req.disclosed_quantity:
            form["disclosed_quantity"] = str(req.disclosed_quantity)
        if req.tag:
            form["tag"] = req.tag
        if req.order_type in MARKET_LIKE_ORDER_TYPES:
            protection = req.market_protection if req.market_protection is not None else self._market_protection
            form["market_protection"] = _num(protection)
        return form

    def modify_order(self, order_id: str, change: OrderChange) -> BrokerOrderId:
        """Modify an open order. Safe to repeat: it sets absolute values (each attempt is rate limited)."""
        form: dict[str, str] = {}
        for name in ("quantity", "order_type", "validity", "disclosed_quantity"):
            value = getattr(change, name)
            if value is not None:
                form[name] = str(value)
        if change.price is not None:
            form["price"] = _num(change.price)
        if change.trigger_price is not None:
            form["trigger_price"] = _num(change.trigger_price)
        if change.order_type in MARKET_LIKE_ORDER_TYPES:
            protection = change.market_protection if change.market_protection is not None else self._market_protection
            form["market_protection"] = _num(protection)
        data = self._retrying("PUT", f"/orders/{change.variety}/{order_id}", form=form, throttled=True)
        return BrokerOrderId(str(data["order_id"]))

    def cancel_order(self, order_id: str, variety: str = "regular") -> BrokerOrderId:
        """Cancel an open order. An order that is already CANCELLED counts as done; a filled one raises."""
        try:
            data = self._retrying("DELETE", f"/orders/{variety}/{order_id}", throttled=True)
            return BrokerOrderId(str(data["order_id"]))
        except BrokerRejected as exc:
            history = self.order_history(order_id)
            if history and history[-1].status == "CANCELLED":
                return BrokerOrderId(order_id)
            raise exc

    def order_history(self, order_id: str) -> list[OrderReport]:
        return [order_from_kite(row) for row in self._retrying("GET", f"/orders/{order_id}") or []]

    def orders(self) -> list[OrderReport]:
        return [order_from_kite(row) for row in self._retrying("GET", "/orders") or []]

    def find_orders_by_tag(self, tag: str) -> list[OrderReport]:
        found = []
        for row in self._retrying("GET", "/orders") or []:
            if row.get("tag") == tag or tag in (row.get("tags") or []):
                found.append(order_from_kite(row))
        return found

    def trades(self) -> list[TradeReport]:
        return [trade_from_kite(row) for row in self._retrying("GET", "/trades") or []]

    def order_trades(self, order_id: str) -> list[TradeReport]:
        return [trade_from_kite(row) for row in self._retrying("GET", f"/orders/{order_id}/trades") or []]

    def positions(self) -> list[PositionReport]:
        data = self._retrying("GET", "/portfolio/positions") or {}
        return [position_from_kite(row) for row in data.get("net") or []]

    # ---- GTT ----------------------------------------------------------------------------------------------------

    def create_gtt(self, req: GttRequest, *, lookup_window_s: float | None = None) -> int:
        """Create a GTT; never twice. GTTs take no tag, so a lost answer is resolved by instrument, triggers, legs
        (a GTT found that way after a lost answer may also be an identical one another caller made meanwhile: the
        services claim each GTT for one bracket, see adapters/dynamo/gtt_claims.py). lookup_window_s: how long to
        look for it after a lost answer (default: the adapter's)."""
        form = self.gtt_form(req)
        before = {g.gtt_id for g in self.gtts()}
        attempt = 0
        while True:
            attempt += 1
            try:
                data = self._send("POST", "/gtt/triggers", form=form)
                return int(data["trigger_id"])
            except (BrokerRateLimited, BrokerUnreachable) as exc:
                if attempt >= self._max_attempts:
                    raise
                self._backoff(attempt, exc, "create_gtt")
            except (BrokerTimeout, BrokerUnavailable) as exc:
                found = self._find_created_gtt(req, before, exc, lookup_window_s)
                logger.warning("GTT create answer was lost but the GTT exists", extra={"gtt_id": found})
                return found

    def gtt_form(self, req: GttRequest) -> dict[str, str]:
        # Kite takes condition and orders as JSON text; JSON numbers are where our Decimals meet the wire.
        condition = {
            "exchange": req.exchange,
            "tradingsymbol": req.tradingsymbol,
            "trigger_values": [float(v) for v in req.trigger_values],
            "last_price": float(req.last_price),
        }
        orders = [
            {
                "exchange": req.exchange,
                "tradingsymbol": req.tradingsymbol,
                "transaction_type": leg.transaction_type,
                "quantity": leg.quantity,
                "order_type": leg.order_type,
                "product": leg.product,
                "price": float(leg.price),
            }
            for leg in req.orders
        ]
        return {"type": req.type, "condition": json.dumps(condition), "orders": json.dumps(orders)}

    def modify_gtt(self, gtt_id: int, req: GttRequest) -> int:
        """Replace a GTT's triggers and legs (a full replace, so repeating it is safe)."""
        data = self._retrying("PUT", f"/gtt/triggers/{gtt_id}", form=self.gtt_form(req))
        return int(data["trigger_id"])

    def delete_gtt(self, gtt_id: int) -> int:
        """Delete a GTT. One that can no longer fire (deleted, expired, ...) counts as done; a triggered GTT raises
        BrokerRejected."""
        try:
            data = self._retrying("DELETE", f"/gtt/triggers/{gtt_id}")
            return int(data["trigger_id"])
        except BrokerRejected as exc:
            if self.gtt(gtt_id).status in GTT_INERT:
                return gtt_id
            raise exc

    def gtts(self) -> list[GttReport]:
        return [gtt_from_kite(row) for row in self._retrying("GET", "/gtt/triggers") or []]

    def gtt(self, gtt_id: int) -> GttReport:
        return gtt_from_kite(self._retrying("GET", f"/gtt/triggers/{gtt_id}"))

    # ---- market data --------------------------------------------------------------------------------------------

    def quote(self, instruments: Sequence[str]) -> dict[str, Quote]:
        data = self._retrying("GET", "/quote", query={"i": list(instruments)}) or {}
        return {name: quote_from_kite(name, row) for name, row in data.items()}

    def instruments_csv(self) -> str:
        """Kite's instrument master (GET /instruments): the day's CSV of every instrument, ~100k rows. Not JSON, so
        not through the envelope parser; a few MB, so a longer read timeout than an order call's."""
        creds = self._credentials(False)
        headers = {"X-Kite-Version": KITE_VERSION, "Authorization": f"token {creds.api_key}:{creds.access_token}"}
        try:
            with subsegment("kite", method="GET", path="/instruments"):
                response = self._session.get(
                    self._base_url + "/instruments", headers=headers, timeout=(self._timeout[0], 120)
                )
        except requests.RequestException as exc:
            raise BrokerUnavailable(f"could not download the instrument list: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            try:
                body: Any = json.loads(response.text)
            except ValueError:
                body = response.text[:200]
            raise error_from_response(response.status_code, body)
        return response.text

    def ltp(self, instruments: Sequence[str]) -> dict[str, Decimal]:
        data = self._retrying("GET", "/quote/ltp", query={"i": list(instruments)}) or {}
        return {name: decimal_or_none(row.get("last_price")) or Decimal(0) for name, row in data.items()}

    # ---- plumbing -----------------------------------------------------------------------------------------------

    def _find_placed_order(
        self, req: OrderRequest, tag: str, before: set[BrokerOrderId], cause: BrokerError
    ) -> BrokerOrderId:
        def look() -> list[OrderReport]:
            return [
                o
                for o in self.find_orders_by_tag(tag)
                if o.order_id not in before
                and o.tradingsymbol == req.tradingsymbol
                and o.transaction_type == req.transaction_type
                and o.quantity == req.quantity
            ]

        matches = self._look_over_window(look, cause, f"order {tag}")
        if len(matches) > 1:
            logger.error(
                "more than one order carries our tag", extra={"tag": tag, "ids": [o.order_id for o in matches]}
            )
        return min(matches, key=lambda o: (o.order_timestamp or datetime.max.replace(tzinfo=IST), o.order_id)).order_id

    def _find_created_gtt(
        self, req: GttRequest, before: set[int], cause: BrokerError, window_s: float | None = None
    ) -> int:
        def look() -> list[GttReport]:
            return [g for g in self.gtts() if g.gtt_id not in before and g.same_trigger_as(req)]

        matches = self._look_over_window(look, cause, f"GTT on {req.tradingsymbol}", window_s)
        return min(g.gtt_id for g in matches)

    def _look_over_window(
        self, look: Callable[[], list[Any]], cause: BrokerError, what: str, window_s: float | None = None
    ) -> list[Any]:
        """Search the broker's book now and every lookup_pause_s until lookup_window_s has passed: a broker may show
        a new order or GTT seconds after acting. What was found, else BrokerTimeout (outcome unknown: the request is
        not repeated here; the caller's retry looks again before it places anything)."""
        # The window is over when the pauses add up to it or the clock says so (a failing look takes time too).
        window = self._lookup_window_s if window_s is None else max(0.0, window_s)
        waited, started = 0.0, time.monotonic()
        unreadable: BrokerError | None = None
        while True:
            try:
                found = look()
                if found:
                    return found
                unreadable = None
            except BrokerError as lookup_failed:
                unreadable = lookup_failed
            waited = max(waited, time.monotonic() - started)
            if waited >= window:
                break
            pause = min(self._lookup_pause_s, window - waited)
            self._sleep(pause)
            waited += pause
        seen = (
            f"the broker's book could not be read ({unreadable.message})"
            if unreadable is not None
            else f"it is not in the broker's book after {window:g} s"
        )
        raise BrokerTimeout(
            f"{what}: the broker's answer was lost ({cause.message}) and {seen}; outcome unknown, not repeated",
            http_status=cause.http_status,
            error_type=cause.error_type,
        ) from unreadable

    def _throttle(self) -> float | None:
        return self._order_throttle() if self._order_throttle is not None else None

    def _retrying(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        query: dict[str, Any] | None = None,
        throttled: bool = False,
    ) -> Any:
        """A call that is safe to repeat: retried on 429, 5xx, timeouts and connection errors."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._send(method, path, form=form, query=query, throttled=throttled)
            except (BrokerRateLimited, BrokerUnavailable, BrokerTimeout) as exc:
                if attempt >= self._max_attempts:
                    raise
                self._backoff(attempt, exc, f"{method} {path}")

    def _backoff(self, attempt: int, exc: BrokerError, what: str) -> None:
        delay = min(self._backoff_cap_s, self._backoff_base_s * (2 ** (attempt - 1)))
        delay = delay / 2 + delay / 2 * self._jitter()  # "equal jitter": spread callers, keep a floor
        retry_after = getattr(exc, "retry_after_s", None)
        if retry_after:
            delay = max(delay, min(float(retry_after), self._backoff_cap_s))
        logger.warning(
            "broker call failed, retrying",
            extra={"call": what, "attempt": attempt, "delay_s": round(delay, 3), "error": exc.message},
        )
        self._sleep(delay)

    def _send(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        query: dict[str, Any] | None = None,
        throttled: bool = False,
    ) -> Any:
        """One call; an order call (`throttled`) first takes its rate-limit slot, and a new one each time it could
        not leave by its slot's send-by time (RateLimited after MAX_SLOT_MISSES: nothing was sent)."""
        if not throttled:
            return self._send_in_session(method, path, None, form=form, query=query)
        for _ in range(MAX_SLOT_MISSES):
            send_by = self._throttle()
            try:
                return self._send_in_session(method, path, send_by, form=form, query=query)
            except _SlotMissed as missed:
                metrics.add_metric(name=metrics_names.ORDER_RATE_SLOT_MISSED, unit="Count", value=1)
                logger.info(
                    "order call missed its rate-limit slot, taking another",
                    extra={"call": f"{method} {path_of(path)}", "late_s": round(missed.late_s, 3)},
                )
        raise RateLimited(
            f"{method} {path} could not leave within its order rate-limit slot {MAX_SLOT_MISSES} times; not sent"
        )

    def _send_in_session(
        self,
        method: str,
        path: str,
        send_by: float | None,
        *,
        form: dict[str, str] | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        """One call, plus one repeat after a TokenException if the stored session has changed since we cached it."""
        creds = self._credentials(False)
        try:
            return self._send_once(method, path, creds, send_by, form=form, query=query)
        except SessionExpired:
            fresh = self._credentials(True)
            if fresh == creds:
                raise
            # The broker refused the stale token before acting, so this repeat is safe even for a placement.
            return self._send_once(method, path, fresh, send_by, form=form, query=query)

    def _send_once(
        self,
        method: str,
        path: str,
        creds: KiteCredentials,
        send_by: float | None = None,
        *,
        form: dict[str, str] | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        headers = {"X-Kite-Version": KITE_VERSION, "Authorization": f"token {creds.api_key}:{creds.access_token}"}
        if send_by is not None and (now := self._clock()) > send_by:  # the last moment before the request leaves
            raise _SlotMissed(now - send_by)
        try:
            return send_kite_request(self._session, method, self._base_url + path, headers, self._timeout, form, query)
        except BrokerError:
            # Every failed attempt, retried or not. No error-type dimension: the dashboard reads service alone.
            metrics.add_metric(name=metrics_names.BROKER_ERRORS, unit="Count", value=1)
            raise
