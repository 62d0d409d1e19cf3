"""ExitRequest: the ExitQueue's message, "close this bracket's position at market". Its producers: the streamer (a
stop crossed: STOP or TRAIL_STOP, with the price and where in the feed it was seen), the trader's DELETE of a
protected bracket (MANUAL), the MIS square-off (EOD), reconciliation (a stop crossed while no GTT stood, or a GTT's
target whose order was refused: TARGET) and an exit that failed at the broker (retry_of, any reason). Its consumer:
the exit Lambda (services/execute_exit.py), which claims the bracket exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from bracketflow.contracts.wire import compact_json, json_object
from bracketflow.domain.enums import ExitReason
from bracketflow.errors import ValidationFailed

# Reasons a first exit may carry. TARGET: reconciliation found the GTT's target leg fired and its order refused,
# the position still open. A retry (retry_of set) keeps whatever reason its exit had.
QUEUED_EXIT_REASONS = frozenset(
    {
        ExitReason.STOP,
        ExitReason.TRAIL_STOP,
        ExitReason.TARGET,
        ExitReason.MANUAL,
        ExitReason.EOD,
        ExitReason.SIGNAL,
        ExitReason.TIME,
        ExitReason.KILL_SWITCH,
    }
)
# Exits nobody saw a price for: the trader's DELETE, the square-off clock, a strategy's signal, a time exit and the kill
# switch. A stop hit always carries its LTP.
PRICELESS_EXIT_REASONS = frozenset(
    {ExitReason.MANUAL, ExitReason.EOD, ExitReason.SIGNAL, ExitReason.TIME, ExitReason.KILL_SWITCH}
)


@dataclass(frozen=True)
class ExitRequest:
    """Close this bracket's position at market (the ExitQueue's message)."""

    bracket_id: str
    reason: ExitReason
    ltp: Decimal | None  # None for a MANUAL (the trader's DELETE) or EOD (square-off) exit, and for a retry
    stop_price: Decimal  # the stop that was crossed (the bracket's stop when no price was seen)
    detected_at: str | None = None  # ISO UTC, with a Z
    message_index: int | None = None  # where in the feed the streamer saw the crossing
    packet_index: int | None = None
    retry_of: str | None = None  # the broker order id of an exit that failed at the broker
    # Set only on the exit Lambda's own delayed copy of a message it claimed (its watchdog): the claim it checks on.
    resume_claim: str | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "bracket_id": self.bracket_id,
            "reason": self.reason.value,
            "ltp": None if self.ltp is None else str(self.ltp),
            "stop_price": str(self.stop_price),
            "detected_at": self.detected_at,
            "message_index": self.message_index,
            "packet_index": self.packet_index,
        }
        if self.retry_of is not None:
            body["retry_of"] = self.retry_of
        if self.resume_claim is not None:
            body["resume_claim"] = self.resume_claim
        return body

    def to_json(self) -> str:
        return compact_json(self.to_dict())

    @classmethod
    def from_json(cls, body: str) -> ExitRequest:
        """Parse an ExitQueue message; ValidationFailed names what is wrong (such a message goes to the DLQ)."""
        raw = json_object(body, "exit intent")
        try:
            reason = ExitReason(raw["reason"])
            retry_of = raw.get("retry_of")
            retry = retry_of is not None  # an exit that failed at the broker, retried (any reason)
            if reason not in QUEUED_EXIT_REASONS and not retry:
                raise ValueError(f"reason must be one of {', '.join(sorted(QUEUED_EXIT_REASONS))}, got {reason.value}")
            ltp = raw.get("ltp") if reason in PRICELESS_EXIT_REASONS or retry else raw["ltp"]
            return cls(
                bracket_id=str(raw["bracket_id"]),
                reason=reason,
                ltp=None if ltp is None else Decimal(str(ltp)),
                stop_price=Decimal(str(raw["stop_price"])),
                detected_at=raw.get("detected_at"),
                message_index=raw.get("message_index"),
                packet_index=raw.get("packet_index"),
                retry_of=None if retry_of is None else str(retry_of),
                resume_claim=str(raw["resume_claim"]) if raw.get("resume_claim") else None,
            )
        except KeyError as missing:
            raise ValidationFailed(f"exit intent lacks {missing}") from None
        except (ValueError, InvalidOperation) as exc:
            raise ValidationFailed(f"exit intent is invalid: {exc}") from None
