"""The streamer's heartbeat for the console's status panel: written from its metrics thread (never per tick).

pk=STREAMER, sk=HEARTBEAT: at (ISO UTC), every_s (how often it is written), connected (a ticker socket is open),
messages_per_s (everything the ticker sent over the last interval; Kite sends a heartbeat every second, so 0 means a
silent feed), watched (brackets it trails), reconnects (connections lost since it started), feed_lag_s (wall clock
minus the exchange time of a sampled tick). One item overwritten: about a write a minute, whatever is traded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bracketflow.adapters.dynamo.table import table

HEARTBEAT_KEY = {"pk": "STREAMER", "sk": "HEARTBEAT"}


def put_heartbeat(
    *,
    at: datetime,
    every_s: float,
    connected: bool,
    messages_per_s: float | None,
    watched: int,
    reconnects: int,
    feed_lag_s: float | None,
) -> None:
    def number(v: float | None) -> Decimal | None:
        return None if v is None else Decimal(str(round(v, 3)))

    table().put_item(
        Item={
            **HEARTBEAT_KEY,
            "type": "STREAMER_HEARTBEAT",
            "at": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "every_s": number(every_s),
            "connected": connected,
            "messages_per_s": number(messages_per_s),
            "watched": watched,
            "reconnects": reconnects,
            "feed_lag_s": number(feed_lag_s),
        }
    )


def get_heartbeat() -> dict[str, Any] | None:
    return table().get_item(Key=HEARTBEAT_KEY).get("Item")
