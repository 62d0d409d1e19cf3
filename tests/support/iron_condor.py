"""The NIFTY iron condor the batch tests trade (tests/integration/test_batch_*, tests/statemachine/test_batch_saga.py):
its four strikes, their prices on the paper exchange, and its legs as POST /api/v1/batchorders takes them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

LONG_PUT, SHORT_PUT, SHORT_CALL, LONG_CALL = (
    "NIFTY26DEC23000PE",
    "NIFTY26DEC23500PE",
    "NIFTY26DEC24500CE",
    "NIFTY26DEC25000CE",
)
QUOTES = {LONG_PUT: "102.15", SHORT_PUT: "228.65", SHORT_CALL: "236.85", LONG_CALL: "114.20"}


def leg(symbol: str = LONG_PUT, side: str = "BUY", **overrides: Any) -> dict[str, Any]:
    """One NRML MARKET leg of 75 (a NIFTY lot), `overrides` changed; a field overridden with None is left out."""
    body: dict[str, Any] = {
        "tradingsymbol": symbol,
        "exchange": "NFO",
        "transaction_type": side,
        "quantity": 75,
        "order_type": "MARKET",
        "product": "NRML",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def iron_condor(overrides_by_symbol: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Long the wings, short the body, in that order (legs 1-4); a strike's legs changed by `overrides_by_symbol`."""
    changes = overrides_by_symbol or {}
    legs = [(LONG_PUT, "BUY"), (SHORT_PUT, "SELL"), (SHORT_CALL, "SELL"), (LONG_CALL, "BUY")]
    return [leg(symbol, side, **changes.get(symbol, {})) for symbol, side in legs]


def condor_quotes() -> list[dict[str, Any]]:
    """The four strikes quoted at their price with a 0.05 spread around it, as the paper exchange takes quotes."""
    quotes = []
    for symbol, ltp in QUOTES.items():
        price = Decimal(ltp)
        quotes.append(
            {"exchange": "NFO", "tradingsymbol": symbol, "ltp": ltp, "bid": str(price - Decimal("0.05")),
             "ask": str(price + Decimal("0.05"))}
        )  # fmt: skip
    return quotes
