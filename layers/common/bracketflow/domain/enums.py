"""The words of the trade, as str enums: their values are exactly what goes on the wire and into DynamoDB."""

from __future__ import annotations

from enum import StrEnum
from typing import Self


class _WireEnum(StrEnum):
    """A str enum: str(), f-strings and JSON show the value ("BUY", not "Action.BUY")."""

    @classmethod
    def values(cls) -> list[str]:
        return [m.value for m in cls]

    @classmethod
    def parse(cls, raw: object) -> Self:
        """Case-insensitive lookup by value; raises ValueError naming the allowed values.

        Wire input from TradingView arrives lowercase ("buy", "nse"); we accept any case and surrounding blanks.
        """
        if isinstance(raw, cls):
            return raw
        if isinstance(raw, str):
            wanted = raw.strip().upper()
            for member in cls:
                if member.value.upper() == wanted:
                    return member
        raise ValueError(f"must be one of {', '.join(cls.values())}, got {raw!r}")


class Action(_WireEnum):
    BUY = "BUY"
    SELL = "SELL"


class PositionSide(_WireEnum):
    LONG = "LONG"
    SHORT = "SHORT"


class Exchange(_WireEnum):
    NSE = "NSE"
    BSE = "BSE"
    NFO = "NFO"
    MCX = "MCX"
    NCDEX = "NCDEX"
    CDS = "CDS"


class Product(_WireEnum):
    MIS = "MIS"  # intraday: squared off by the broker (and by us, EOD) before the close
    CNC = "CNC"  # delivery equity
    NRML = "NRML"  # carry-forward derivatives


class PriceType(_WireEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"
    SL = "SL"
    SL_M = "SL-M"

    @property
    def has_limit_price(self) -> bool:
        """LIMIT and SL orders carry a limit price; MARKET and SL-M fill at the market."""
        return self in (PriceType.LIMIT, PriceType.SL)

    @property
    def needs_trigger(self) -> bool:
        return self in (PriceType.SL, PriceType.SL_M)


DEFAULT_PRICE_TYPE = PriceType.LIMIT


class Validity(_WireEnum):
    DAY = "DAY"
    IOC = "IOC"
    TTL = "TTL"


DEFAULT_VALIDITY = Validity.DAY


class BracketStatus(_WireEnum):
    CREATED = "CREATED"
    ENTRY_PENDING = "ENTRY_PENDING"
    ENTRY_FILLED = "ENTRY_FILLED"
    PROTECTED = "PROTECTED"
    EXITING = "EXITING"
    EXIT_FAILED = "EXIT_FAILED"
    CLOSED = "CLOSED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    NEEDS_REVIEW = "NEEDS_REVIEW"


class OrderStatus(_WireEnum):
    """A leg's status, in the order lifecycle's words."""

    CREATED = "CREATED"
    SENT_TO_BROKER = "SENT_TO_BROKER"
    EXECUTED = "EXECUTED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class LegRole(_WireEnum):
    ENTRY = "ENTRY"
    STOP = "STOP"
    TARGET = "TARGET"
    EXIT = "EXIT"


class ExitReason(_WireEnum):
    STOP = "STOP"  # the original stop-loss was hit
    TRAIL_STOP = "TRAIL_STOP"  # a stop that had trailed was hit
    TARGET = "TARGET"
    MANUAL = "MANUAL"  # the trader asked (DELETE) or closed it at the broker
    EOD = "EOD"  # MIS square-off before the close
    EMERGENCY = "EMERGENCY"  # protection could not be placed, so the position was flattened
    ROLLBACK = "ROLLBACK"  # a batch leg compensated
    SIGNAL = "SIGNAL"  # the strategy said so: an exit/close/closeall alert, or a reverse
    TIME = "TIME"  # the bracket's exit_after / exit_at came
    KILL_SWITCH = "KILL_SWITCH"  # the account's daily loss limit was hit, or the trader flattened the account


class BlockKind(_WireEnum):
    """Why a bracket was refused before reaching the broker; the tag stays visible in the order book."""

    RISK_BLOCKED = "RISK_BLOCKED"
    GUARD_BLOCKED = "GUARD_BLOCKED"
    DUPLICATE_BLOCKED = "DUPLICATE_BLOCKED"
    VALIDATION_FAILED = "VALIDATION_FAILED"

    def tag(self, reason: str) -> str:
        """The block tag "<KIND>:<reason>", e.g. "RISK_BLOCKED:DAILY_LOSS_HIT"."""
        return block_tag(self, reason)


BLOCK_TAG_SEPARATOR = ":"


def block_tag(kind: BlockKind | str, reason: str) -> str:
    """Build "<KIND>:<reason>". The reason is free text but must be non-empty (a bare kind says nothing)."""
    kind = BlockKind.parse(kind) if not isinstance(kind, BlockKind) else kind
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("a block tag needs a reason")
    return f"{kind.value}{BLOCK_TAG_SEPARATOR}{reason}"


def parse_block_tag(tag: str | None) -> tuple[BlockKind, str] | None:
    """Split a tag into (kind, reason), or None when the tag is not a block tag (e.g. the trader's own label)."""
    if not tag:
        return None
    kind, sep, reason = tag.partition(BLOCK_TAG_SEPARATOR)
    if kind not in BlockKind.values():
        return None
    return BlockKind(kind), reason if sep else ""


class TrailType(_WireEnum):
    PERCENT = "percent"
    POINTS = "points"
