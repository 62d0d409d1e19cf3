"""OrderEvent: the OrderEventsQueue's message, "the broker says this about one of the account's orders". Its producer:
the streamer, which forwards each order update the broker's WebSocket sends (its "data" object, verbatim). Its consumer:
the watcher (functions/watcher, services/order_updates.py), which acts on each update once; a Kite postback reaches the
same code over HTTP as the broker's own JSON, not as this message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bracketflow.contracts.wire import compact_json, json_object
from bracketflow.errors import ValidationFailed

TICKER = "ticker"  # the broker's WebSocket, forwarded by the streamer
UNNAMED_SOURCE = "queue"  # what an event that does not name its source is counted as


@dataclass(frozen=True)
class OrderEvent:
    """One broker order update, as the broker sent it (its numbers as the broker's JSON has them)."""

    order: dict[str, Any]
    source: str = TICKER
    received_at: str | None = None  # when the streamer read it: ISO UTC, with a Z (contracts.wire_time)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "received_at": self.received_at, "order": self.order}

    def to_json(self) -> str:
        return compact_json(self.to_dict())

    @classmethod
    def from_json(cls, body: str | bytes) -> OrderEvent:
        """Parse an OrderEventsQueue message; ValidationFailed names what is wrong (the record fails, and after its
        redeliveries goes to the DLQ)."""
        raw = json_object(body, "order event", exact_numbers=False)
        order = raw.get("order")
        if not isinstance(order, dict):
            raise ValidationFailed(f"order event must carry the broker's order update as an object, got {order!r}")
        received_at = raw.get("received_at")
        return cls(
            order=order,
            source=str(raw.get("source") or UNNAMED_SOURCE),
            received_at=None if received_at is None else str(received_at),
        )
