"""Kite's vocabulary on the paper exchange: its enums and limits, its error, its timestamps, its parameter parsing
and its JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from datetime import time as clock_time
from decimal import Decimal, InvalidOperation
from typing import Any

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


def input_error(message: str) -> KiteError:
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


# Our wording (Kite's own text is not published): the exchange cancelled what market protection would not fill.
MARKET_PROTECTION_CANCELLED = (
    "Order cancelled by the exchange: the rest could not be filled within the market protection price."
)


def decimal_param(params: Mapping[str, Any], name: str, default: Decimal | None = None) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise input_error(f"Invalid `{name}`: {raw!r} is not a number.") from None
    if not value.is_finite():
        raise input_error(f"Invalid `{name}`: {raw!r} is not a number.")
    return value


def integer_param(params: Mapping[str, Any], name: str, default: int | None = None) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise input_error(f"Invalid `{name}`: {raw!r} is not a whole number.") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise input_error(f"Invalid `{name}`: {raw!r} is not a whole number.")
    return int(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return kite_timestamp(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(payload: Any) -> str:
    """JSON as Kite writes it: prices as numbers, times as its timestamps."""
    return json.dumps(payload, default=_jsonable)
