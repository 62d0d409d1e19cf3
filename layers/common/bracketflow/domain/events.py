"""Bracket events, in the past tense: the immutable audit trail. Every change of a bracket appends one.

Each event has an id (time-sortable), the bracket id, when it happened (UTC), the bracket's version after the
change (so the trail orders exactly like the state it explains), its type name and a JSON-safe data dict.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

from bracketflow.domain.ids import EventId, new_event_id


def _plain(value: Any) -> Any:
    """JSON-safe copy: Decimal as str (no float ever touches money), enums as their value, datetimes as ISO."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        raise TypeError("floats are not allowed in event data: pass a Decimal or a str")
    return value


@dataclass(frozen=True, slots=True)
class BracketEvent:
    type: ClassVar[str] = "BracketEvent"

    bracket_id: str
    data: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    event_id: EventId = field(default_factory=new_event_id)
    bracket_version: int | None = None

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("event time must be timezone-aware (UTC)")
        object.__setattr__(self, "at", self.at.astimezone(UTC))
        object.__setattr__(self, "data", _plain(self.data))

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "bracket_id": self.bracket_id,
            "bracket_version": self.bracket_version,
            "at": self.at.isoformat(),
            "data": dict(self.data),
        }


EVENT_TYPES: dict[str, type[BracketEvent]] = {}


_E = TypeVar("_E", bound=type[BracketEvent])


def _register(cls: _E) -> _E:
    cls.type = cls.__name__
    EVENT_TYPES[cls.__name__] = cls
    return cls


def event_from_dict(data: dict[str, Any]) -> BracketEvent:
    """Rebuild an event from to_dict() output; ValueError for an unknown type."""
    cls = EVENT_TYPES.get(data.get("type", ""))
    if cls is None:
        raise ValueError(f"unknown event type {data.get('type')!r}")
    version = data.get("bracket_version")
    return cls(
        bracket_id=data["bracket_id"],
        data=dict(data.get("data") or {}),
        at=datetime.fromisoformat(data["at"]),
        event_id=EventId(data["event_id"]),
        bracket_version=None if version is None else int(version),
    )


# The lifecycle, in order. Each docstring says what `data` usually carries.
@_register
class BracketRegistered(BracketEvent):
    """The request was accepted and recorded as CREATED. data: the spec."""


@_register
class BracketBlocked(BracketEvent):
    """Refused before the broker (CREATED -> FAILED). data: kind, reason, tag."""


@_register
class EntryPlaced(BracketEvent):
    """The entry order is at the broker. data: broker_order_id."""


@_register
class EntryFilled(BracketEvent):
    """data: filled_quantity, average_price."""


@_register
class EntryPartiallyFilled(BracketEvent):
    """data: filled_quantity, pending_quantity, average_price."""


@_register
class EntryCompleted(BracketEvent):
    """The rest of an entry that was protected while still working has filled: the whole entry is in.
    data: filled_quantity, average_price, broker_order_id."""


@_register
class EntryRestCancelled(BracketEvent):
    """The rest of an entry that was protected while still working ended unfilled (cancelled by us, the trader or the
    broker, or expired): what filled is final. data: filled_quantity, cancelled_quantity, by, message."""


@_register
class EntryRejected(BracketEvent):
    """The broker refused the entry. data: message."""


@_register
class EntryCancelled(BracketEvent):
    """data: by (user/system), message."""


@_register
class EntryExpired(BracketEvent):
    """The entry's validity ran out unfilled."""


@_register
class ProtectionPlaced(BracketEvent):
    """The GTT OCO is live. data: gtt_id, stop_price, target_price, quantity."""


@_register
class ProtectionResized(BracketEvent):
    """The GTT was modified to protect the entry's new filled quantity. data: gtt_id, old_quantity, quantity."""


@_register
class ProtectionFailed(BracketEvent):
    """The GTT could not be placed after retries. data: message."""


@_register
class StopTrailed(BracketEvent):
    """data: old_stop, new_stop, reference_price."""


@_register
class ExitRequested(BracketEvent):
    """data: reason (an ExitReason), trigger_price/ltp."""


@_register
class ExitPlaced(BracketEvent):
    """data: broker_order_id, reason."""


@_register
class ExitFilled(BracketEvent):
    """data: filled_quantity, average_price."""


@_register
class ExitFailed(BracketEvent):
    """data: message, attempt."""


@_register
class BracketClosed(BracketEvent):
    """data: reason, exit_price, pnl."""


@_register
class EmergencyExitPlaced(BracketEvent):
    """Protection failed, so the filled quantity was flattened at market. data: broker_order_id, quantity."""


@_register
class FlaggedForReview(BracketEvent):
    """Reconciliation found something it cannot explain. data: reason, broker view."""


@_register
class Reconciled(BracketEvent):
    """Reconciliation repaired a drift between the bracket and the broker. data: repair, detail, the broker's view."""


# Written by services as plain {"type": ...} mappings (the audit item is flat); registered here so every event in a
# bracket's trail has a type that event_from_dict knows (tests/unit/test_event_registry.py scans the code for them).
@_register
class WorkflowStartFailed(BracketEvent):
    """Intake could not start the bracket's workflow; it stays CREATED for resume_unstarted_brackets. data: reason."""


@_register
class WorkflowFailed(BracketEvent):
    """A workflow step failed after its retries (the bracket is FAILED or NEEDS_REVIEW). data: step, error, message."""


@_register
class CancelRequested(BracketEvent):
    """The trader's DELETE. data: by ("user"), status (when asked), action (ENTRY_NOT_SENT | CANCEL_ENTRY |
    EXIT_POSITION): what the workflow or the exit Lambda does about it."""


@_register
class ExitSkipped(BracketEvent):
    """No exit was placed because the broker's GTT had already triggered. data: reason, gtt_id, triggered_order_ids."""


@_register
class GttOrderCancelled(BracketEvent):
    """The GTT fired but its order did not fill (the market gapped past its LIMIT price, or the broker refused it): the
    exit cancelled it and exits at market what is still open. data: gtt_id, orders [{order_id, status,
    filled_quantity}]."""


@_register
class BrokerStopMoved(BracketEvent):
    """The GTT's stop leg at the broker was moved to the trailed stop. data: gtt_id, old_stop, new_stop."""


@_register
class BreakevenStopSet(BracketEvent):
    """A bracket's stop moved to its entry (plus the cost buffer): a scale-out share's because the share named by
    breakeven_after exited at its target (data: old_stop, new_stop, entry_price, buffer, after_share,
    after_bracket_id), or any bracket's because the market reached its breakeven_at (data: old_stop, new_stop,
    entry_price, buffer, breakeven_at, price: the price the streamer saw reach it)."""
