"""A thin price history for the trader's console: the streamer samples the last price of each watched instrument
every few seconds and appends it here; the console's bracket chart reads it back.

pk=PRICES#<EXCHANGE>:<SYMBOL>, sk=<minute, ISO UTC "YYYY-MM-DDTHH:MM">: `pts`, a list of [second of the minute
(0..59, with milliseconds as a decimal), price in rupees], and `expires_at` (the table's TTL) PRICE_DAYS later.
One item per instrument and minute keeps every append small (a few dozen points), so an append costs one or two
write units however long a position is held. Nothing here is on the money path: a failed write loses a point of
a chart, never a stop.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Key

from bracketflow.adapters.dynamo.table import table

PRICE_DAYS = 7
MAX_MINUTES = 24 * 60  # what one read returns at most: a day of minutes


def price_pk(instrument: str) -> str:
    return f"PRICES#{instrument.upper()}"


def _minute(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def append_prices(points: Iterable[tuple[str, datetime, Decimal]]) -> int:
    """Append (instrument "NSE:INFY", when, price) points, one UpdateItem per instrument-minute. Returns writes."""
    grouped: dict[tuple[str, str], list[list[Decimal]]] = {}
    for instrument, at, price in points:
        at = at.astimezone(UTC)
        second = Decimal(at.second) + Decimal(at.microsecond // 1000) / Decimal(1000)
        grouped.setdefault((instrument, _minute(at)), []).append([second, price])
    expires_at = int((datetime.now(UTC) + timedelta(days=PRICE_DAYS)).timestamp())
    for (instrument, minute), pts in grouped.items():
        table().update_item(
            Key={"pk": price_pk(instrument), "sk": minute},
            UpdateExpression="SET pts = list_append(if_not_exists(pts, :none), :pts), expires_at = :exp",
            ExpressionAttributeValues={":none": [], ":pts": pts, ":exp": expires_at},
        )
    return len(grouped)


def prices_between(instrument: str, start: datetime, end: datetime) -> list[tuple[datetime, Decimal]]:
    """The recorded points of `instrument` from `start` to `end` (at most MAX_MINUTES, the latest kept), in order."""
    start = max(start, end - timedelta(minutes=MAX_MINUTES))
    cond = Key("pk").eq(price_pk(instrument)) & Key("sk").between(_minute(start), _minute(end))
    kwargs: dict[str, Any] = {"KeyConditionExpression": cond}
    out: list[tuple[datetime, Decimal]] = []
    while True:
        page = table().query(**kwargs)
        for item in page.get("Items", []):
            base = datetime.strptime(item["sk"], "%Y-%m-%dT%H:%M").replace(tzinfo=UTC)
            for second, price in item.get("pts") or []:
                at = base + timedelta(milliseconds=int(Decimal(second) * 1000))
                if start <= at <= end:
                    out.append((at, Decimal(price)))
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    out.sort(key=lambda p: p[0])
    return out
