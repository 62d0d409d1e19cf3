"""StopSyncRequest: the StopSyncQueue's message, "move the GTT's stop leg up to this stop". Its producers: the
streamer, for a trailed stop (coalesced and rate-limited per bracket: streamer/stops.py), and a scale-out share's
breakeven (services/breakeven.py). Its consumer: functions/sync_stop (services/sync_stop.py), which modifies the GTT
only when the stop is tighter than the GTT's own and the market has not crossed it, so a repeat changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from bracketflow.contracts.wire import compact_json, json_object
from bracketflow.errors import ValidationFailed


@dataclass(frozen=True)
class StopSyncRequest:
    """Move the bracket's GTT stop to stop_price (the stop the streamer trailed to, or a breakeven)."""

    bracket_id: str
    stop_price: Decimal
    at: str | None = None  # when the stop was decided: ISO UTC, with a Z (contracts.wire_time)

    def to_dict(self) -> dict[str, Any]:
        return {"bracket_id": self.bracket_id, "stop_price": str(self.stop_price), "at": self.at}

    def to_json(self) -> str:
        return compact_json(self.to_dict())

    @classmethod
    def from_json(cls, body: str | bytes) -> StopSyncRequest:
        """Parse a StopSyncQueue message; ValidationFailed names what is wrong (such a message goes to the DLQ)."""
        raw = json_object(body, "stop sync request")
        try:
            stop = Decimal(str(raw["stop_price"]))
            if not stop.is_finite() or stop <= 0:
                raise ValueError(f"stop_price must be a positive number, got {raw['stop_price']!r}")
            return cls(bracket_id=str(raw["bracket_id"]), stop_price=stop, at=raw.get("at"))
        except KeyError as missing:
            raise ValidationFailed(f"stop sync request lacks {missing}") from None
        except (ValueError, InvalidOperation) as exc:
            raise ValidationFailed(f"stop sync request is invalid: {exc}") from None
