"""Kite's JSON read into the broker port's reports, and a failed Kite answer into a named error."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from bracketflow.adapters.broker.port import GttLeg, GttReport, OrderReport, PositionReport, Quote, TradeReport
from bracketflow.domain.ids import BrokerOrderId
from bracketflow.errors import (
    BrokerError,
    BrokerOrderNotFound,
    BrokerRateLimited,
    BrokerRejected,
    BrokerUnavailable,
    SessionExpired,
)

IST = timezone(timedelta(hours=5, minutes=30), "IST")

_REJECTED_TYPES = {"InputException", "OrderException", "MarginException", "HoldingException", "PermissionException"}
_UNAVAILABLE_TYPES = {"NetworkException", "GeneralException", "DataException"}


def error_from_response(http_status: int, body: Any) -> BrokerError:
    """Map a failed Kite answer (HTTP status + decoded JSON body, or raw text) to our named exception."""
    error_type = body.get("error_type") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    message = str(message or f"broker answered HTTP {http_status}")
    kind: type[BrokerError]
    if http_status == 429:
        return BrokerRateLimited(f"the broker is rate limiting us: {message}", http_status=429, error_type=error_type)
    if error_type == "TokenException" or (http_status == 403 and error_type != "PermissionException"):
        return SessionExpired(http_status=http_status, error_type=error_type or "TokenException")
    if http_status == 404:
        kind = BrokerOrderNotFound
    elif error_type in _REJECTED_TYPES:
        kind = BrokerRejected
    elif error_type in _UNAVAILABLE_TYPES or http_status >= 500:
        kind, message = BrokerUnavailable, f"the broker is unavailable: {message}"
    elif 400 <= http_status < 500:
        kind = BrokerRejected
    else:
        kind, message = BrokerUnavailable, f"unexpected broker answer: {message}"
    return kind(message, http_status=http_status, error_type=error_type)


def decimal_or_none(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _ts(value: Any) -> datetime | None:
    """Kite sends 'YYYY-MM-DD HH:MM:SS' in IST without an offset; ISO strings with one are kept as they are."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=IST)


def _int(value: Any, default: int = 0) -> int:
    return default if value is None or value == "" else int(value)


def order_from_kite(row: dict[str, Any]) -> OrderReport:
    tags = row.get("tags") or []
    tag = row.get("tag") or (tags[0] if tags else None)
    return OrderReport(
        order_id=BrokerOrderId(str(row["order_id"])),
        status=str(row.get("status") or ""),
        exchange=str(row.get("exchange") or ""),
        tradingsymbol=str(row.get("tradingsymbol") or ""),
        transaction_type=str(row.get("transaction_type") or ""),
        order_type=str(row.get("order_type") or ""),
        product=str(row.get("product") or ""),
        variety=str(row.get("variety") or "regular"),
        quantity=_int(row.get("quantity")),
        filled_quantity=_int(row.get("filled_quantity")),
        pending_quantity=_int(row.get("pending_quantity")),
        cancelled_quantity=_int(row.get("cancelled_quantity")),
        price=decimal_or_none(row.get("price")),
        trigger_price=decimal_or_none(row.get("trigger_price")),
        average_price=decimal_or_none(row.get("average_price")),
        tag=tag,
        status_message=row.get("status_message"),
        exchange_order_id=row.get("exchange_order_id"),
        parent_order_id=row.get("parent_order_id"),
        validity=row.get("validity"),
        order_timestamp=_ts(row.get("order_timestamp")),
    )


def trade_from_kite(row: dict[str, Any]) -> TradeReport:
    return TradeReport(
        trade_id=str(row["trade_id"]),
        order_id=BrokerOrderId(str(row["order_id"])),
        exchange=str(row.get("exchange") or ""),
        tradingsymbol=str(row.get("tradingsymbol") or ""),
        transaction_type=str(row.get("transaction_type") or ""),
        product=str(row.get("product") or ""),
        quantity=_int(row.get("quantity")),
        average_price=decimal_or_none(row.get("average_price")) or Decimal(0),
        exchange_order_id=row.get("exchange_order_id"),
        fill_timestamp=_ts(row.get("fill_timestamp") or row.get("exchange_timestamp")),
    )


def position_from_kite(row: dict[str, Any]) -> PositionReport:
    return PositionReport(
        exchange=str(row.get("exchange") or ""),
        tradingsymbol=str(row.get("tradingsymbol") or ""),
        product=str(row.get("product") or ""),
        quantity=_int(row.get("quantity")),
        average_price=decimal_or_none(row.get("average_price")) or Decimal(0),
        last_price=decimal_or_none(row.get("last_price")),
        pnl=decimal_or_none(row.get("pnl")),
        buy_quantity=_int(row.get("buy_quantity")),
        sell_quantity=_int(row.get("sell_quantity")),
        instrument_token=row.get("instrument_token"),
    )


def gtt_from_kite(row: dict[str, Any]) -> GttReport:
    condition = row.get("condition") or {}
    legs = []
    placed: list[str] = []
    for leg in row.get("orders") or []:
        legs.append(
            GttLeg(
                transaction_type=str(leg.get("transaction_type") or ""),
                quantity=_int(leg.get("quantity")),
                price=decimal_or_none(leg.get("price")) or Decimal(0),
                product=str(leg.get("product") or ""),
                order_type=str(leg.get("order_type") or "LIMIT"),
            )
        )
        result = leg.get("result") or {}
        order_result = result.get("order_result") or {}
        if order_result.get("order_id"):
            placed.append(str(order_result["order_id"]))
    return GttReport(
        gtt_id=int(row["id"]),
        status=str(row.get("status") or ""),
        type=str(row.get("type") or ""),
        exchange=str(condition.get("exchange") or ""),
        tradingsymbol=str(condition.get("tradingsymbol") or ""),
        trigger_values=tuple(decimal_or_none(v) or Decimal(0) for v in condition.get("trigger_values") or []),
        last_price=decimal_or_none(condition.get("last_price")),
        orders=tuple(legs),
        triggered_order_ids=tuple(placed),
        created_at=_ts(row.get("created_at")),
        updated_at=_ts(row.get("updated_at")),
    )


def quote_from_kite(instrument: str, row: dict[str, Any]) -> Quote:
    depth = row.get("depth") or {}
    bids = depth.get("buy") or []
    asks = depth.get("sell") or []
    return Quote(
        instrument=instrument,
        last_price=decimal_or_none(row.get("last_price")) or Decimal(0),
        instrument_token=row.get("instrument_token"),
        best_bid=decimal_or_none(bids[0].get("price")) if bids else None,
        best_ask=decimal_or_none(asks[0].get("price")) if asks else None,
        volume=row.get("volume"),
        timestamp=_ts(row.get("timestamp")),
        extra={k: v for k, v in row.items() if k in ("ohlc", "net_change", "oi")},
    )
