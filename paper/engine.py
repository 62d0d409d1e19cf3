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

from decimal import Decimal
from typing import Any

from bracketflow.domain.instruments import Instrument
from paper.book import Order, Quote
from paper.gtt import GttDesk
from paper.kite import (
    DEFAULT_TICK,
    IST,
    MARKET_CLOSED,
    MARKET_PROTECTION_CANCELLED,
    MAX_MODIFICATIONS,
    USER_ID,
    KiteError,
    kite_timestamp,
    parse_market_hours,
)
from paper.orders import OrderDesk

# What the HTTP layer, the ticker and the tests import from here; each lives in the module named above.
__all__ = [
    "DEFAULT_TICK",
    "IST",
    "MARKET_CLOSED",
    "MARKET_PROTECTION_CANCELLED",
    "MAX_MODIFICATIONS",
    "USER_ID",
    "Engine",
    "KiteError",
    "Order",
    "Quote",
    "kite_timestamp",
    "parse_market_hours",
]


class Engine(OrderDesk, GttDesk):
    """The whole paper exchange: orders and GTTs on one book, and the views the HTTP layer answers with."""

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
            "buy_quantity": sum(level.quantity for level in bids),
            "sell_quantity": sum(level.quantity for level in asks),
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
                "buy": [{"price": lv.price, "quantity": lv.quantity, "orders": lv.orders} for lv in bids],
                "sell": [{"price": lv.price, "quantity": lv.quantity, "orders": lv.orders} for lv in asks],
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
