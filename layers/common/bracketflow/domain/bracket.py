"""The bracket aggregate: one entry leg + a stop-loss leg + a target leg (+ an optional trailing spec).

Immutable values: every change returns a new Bracket with version + 1, so the repository can write it with a
condition on the version (and status) it was read at, and concurrent actors cannot skip or repeat a change.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from bracketflow.domain import trailing
from bracketflow.domain.calendar import IST
from bracketflow.domain.enums import (
    DEFAULT_PRICE_TYPE,
    DEFAULT_VALIDITY,
    Action,
    BlockKind,
    BracketStatus,
    Exchange,
    ExitReason,
    LegRole,
    OrderStatus,
    PositionSide,
    PriceType,
    Product,
    TrailType,
    Validity,
    block_tag,
)
from bracketflow.domain.ids import AccountId, BracketId, BrokerOrderId, ClientOrderId, new_bracket_id
from bracketflow.domain.states import ensure_bracket_transition, ensure_order_transition
from bracketflow.errors import InvalidStateTransition


def utc_now() -> datetime:
    return datetime.now(UTC)


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _to_dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


@dataclass(frozen=True, slots=True)
class TrailSpec:
    """How the stop follows the market: by a percent of the reference price, or by a fixed number of points."""

    type: TrailType
    value: Decimal

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type.value, "value": str(self.value)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrailSpec:
        return cls(type=TrailType.parse(data["type"]), value=Decimal(str(data["value"])))


@dataclass(frozen=True, slots=True)
class ScaleTarget:
    """One target of a scale-out request: its price and its share of the quantity, as a percent or in units."""

    price: Decimal
    share_percent: Decimal | None = None
    quantity: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"price": str(self.price)}
        if self.share_percent is not None:
            out["share"] = str(self.share_percent)
        if self.quantity is not None:
            out["quantity"] = self.quantity
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScaleTarget:
        quantity = data.get("quantity")
        return cls(
            price=Decimal(str(data["price"])),
            share_percent=_to_dec(data.get("share")),
            quantity=None if quantity is None else int(quantity),
        )


@dataclass(frozen=True, slots=True)
class BracketSpec:
    """The normalised order request: what the trader asked for, after parsing (and, once validated, checked).

    symbol is the bare tradingsymbol ("INFY", not "NSE:INFY"). entry_price is None only for MARKET/SL-M entries
    placed without an expected price. trigger_price is needed only by SL/SL-M entries (Kite requires it).
    """

    account_id: AccountId
    symbol: str
    exchange: Exchange
    product: Product
    action: Action
    quantity: int
    entry_price: Decimal | None
    sl_price: Decimal
    target_price: Decimal
    price_type: PriceType = DEFAULT_PRICE_TYPE
    trigger_price: Decimal | None = None
    trail: TrailSpec | None = None
    trail_activation_price: Decimal | None = None
    validity: Validity = DEFAULT_VALIDITY
    disclosed_quantity: int = 0
    tag: str | None = None
    strategy: str | None = None
    client_order_id: ClientOrderId | None = None
    # Time exit: minutes after registration, and/or a time of day on the IST clock ("HH:MM"); the earlier one counts.
    exit_after: int | None = None
    exit_at: str | None = None
    # Open this one only once the strategy's open bracket the other way on the symbol is closed (exit, then enter).
    reverse: bool = False
    # Sizing from risk (services/sizing): what the quantity was worked out from, kept for the audit trail.
    risk_amount: Decimal | None = None
    risk_percent: Decimal | None = None
    # Scale-out (domain/scale_out.py): the request's targets, split at intake into one bracket per share; each share
    # then has no targets, its own target_price and quantity, and its 1-based share_index. breakeven_after names the
    # share whose TARGET exit moves the other shares' stops to their entry plus breakeven_buffer (points).
    # breakeven_at: a price instead; once the market reaches it the streamer moves the stop there (any bracket).
    targets: tuple[ScaleTarget, ...] = ()
    share_index: int | None = None
    breakeven_after: int | None = None
    breakeven_buffer: Decimal | None = None
    breakeven_at: Decimal | None = None

    @property
    def position_side(self) -> PositionSide:
        return PositionSide.LONG if self.action is Action.BUY else PositionSide.SHORT

    @property
    def exit_action(self) -> Action:
        """The side of the stop, target and exit orders: the opposite of the entry."""
        return Action.SELL if self.action is Action.BUY else Action.BUY

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (Decimals as strings, so no precision is lost on the way through JSON)."""
        return {
            "account_id": self.account_id,
            "symbol": self.symbol,
            "exchange": self.exchange.value,
            "product": self.product.value,
            "action": self.action.value,
            "quantity": self.quantity,
            "entry_price": _dec(self.entry_price),
            "sl_price": str(self.sl_price),
            "target_price": str(self.target_price),
            "price_type": self.price_type.value,
            "trigger_price": _dec(self.trigger_price),
            "trail": None if self.trail is None else self.trail.to_dict(),
            "trail_activation_price": _dec(self.trail_activation_price),
            "validity": self.validity.value,
            "disclosed_quantity": self.disclosed_quantity,
            "tag": self.tag,
            "strategy": self.strategy,
            "client_order_id": self.client_order_id,
            **self._signal_fields(),
        }

    def _signal_fields(self) -> dict[str, Any]:
        """The strategy-signal fields, only when set: a plain bracket's dict (and its request hash) stays as it was."""
        fields = {
            "exit_after": self.exit_after,
            "exit_at": self.exit_at,
            "reverse": self.reverse or None,
            "risk_amount": _dec(self.risk_amount),
            "risk_percent": _dec(self.risk_percent),
            "targets": [t.to_dict() for t in self.targets] or None,
            "share_index": self.share_index,
            "breakeven_after": self.breakeven_after,
            "breakeven_buffer": _dec(self.breakeven_buffer),
            "breakeven_at": _dec(self.breakeven_at),
        }
        return {k: v for k, v in fields.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BracketSpec:
        """Inverse of to_dict; it trusts its input (stored, already validated), so it does not re-validate."""
        cid = data.get("client_order_id")
        return cls(
            account_id=AccountId(data["account_id"]),
            symbol=data["symbol"],
            exchange=Exchange(data["exchange"]),
            product=Product(data["product"]),
            action=Action(data["action"]),
            quantity=int(data["quantity"]),
            entry_price=_to_dec(data.get("entry_price")),
            sl_price=Decimal(str(data["sl_price"])),
            target_price=Decimal(str(data["target_price"])),
            price_type=PriceType(data.get("price_type") or DEFAULT_PRICE_TYPE.value),
            trigger_price=_to_dec(data.get("trigger_price")),
            trail=None if not data.get("trail") else TrailSpec.from_dict(data["trail"]),
            trail_activation_price=_to_dec(data.get("trail_activation_price")),
            validity=Validity(data.get("validity") or DEFAULT_VALIDITY.value),
            disclosed_quantity=int(data.get("disclosed_quantity") or 0),
            tag=data.get("tag"),
            strategy=data.get("strategy"),
            client_order_id=None if cid is None else ClientOrderId(cid),
            exit_after=None if data.get("exit_after") is None else int(data["exit_after"]),
            exit_at=data.get("exit_at"),
            reverse=bool(data.get("reverse")),
            risk_amount=_to_dec(data.get("risk_amount")),
            risk_percent=_to_dec(data.get("risk_percent")),
            targets=tuple(ScaleTarget.from_dict(t) for t in data.get("targets") or ()),
            share_index=None if data.get("share_index") is None else int(data["share_index"]),
            breakeven_after=None if data.get("breakeven_after") is None else int(data["breakeven_after"]),
            breakeven_buffer=_to_dec(data.get("breakeven_buffer")),
            breakeven_at=_to_dec(data.get("breakeven_at")),
        )


@dataclass(frozen=True, slots=True)
class LegOrder:
    """Our record of one order at the broker (entry or exit), in the order lifecycle's statuses."""

    role: LegRole
    status: OrderStatus = OrderStatus.CREATED
    broker_order_id: BrokerOrderId | None = None
    quantity: int = 0
    filled_quantity: int = 0
    average_price: Decimal | None = None
    message: str | None = None  # the broker's reason on a reject/cancel

    def transition(self, to: OrderStatus, **changes: Any) -> LegOrder:
        ensure_order_transition(self.status, to)
        return dataclasses.replace(self, status=to, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role.value,
            "status": self.status.value,
            "broker_order_id": self.broker_order_id,
            "quantity": self.quantity,
            "filled_quantity": self.filled_quantity,
            "average_price": _dec(self.average_price),
            "message": self.message,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LegOrder:
        oid = data.get("broker_order_id")
        return cls(
            role=LegRole(data["role"]),
            status=OrderStatus(data.get("status") or OrderStatus.CREATED.value),
            broker_order_id=None if oid is None else BrokerOrderId(oid),
            quantity=int(data.get("quantity") or 0),
            filled_quantity=int(data.get("filled_quantity") or 0),
            average_price=_to_dec(data.get("average_price")),
            message=data.get("message"),
        )


# Fields transition()/update() must never take from **changes: they are the aggregate's identity and bookkeeping.
_PROTECTED_FIELDS = frozenset({"id", "account_id", "spec", "status", "version", "created_at", "reverse_of", "group"})


@dataclass(frozen=True, slots=True)
class Bracket:
    """The bracket aggregate. stop_price is the CURRENT stop (it starts at spec.sl_price and only ratchets)."""

    id: BracketId
    account_id: AccountId
    spec: BracketSpec
    status: BracketStatus
    version: int
    stop_price: Decimal
    created_at: datetime
    updated_at: datetime
    entry: LegOrder
    exit: LegOrder | None = None
    gtt_id: str | None = None  # the broker's id of the two-leg OCO protecting the position
    exit_reason: ExitReason | None = None
    # System tags such as block tags ("RISK_BLOCKED:DAILY_LOSS_HIT"); the trader's own label is spec.tag.
    tags: tuple[str, ...] = field(default_factory=tuple)
    # Exit orders that ended (cancelled, rejected) after filling part of the position: the exit that follows sells only
    # the rest, and the P&L counts these fills too.
    earlier_exits: tuple[LegOrder, ...] = field(default_factory=tuple)
    # A reverse: the brackets the other way that must be closed (flat at the broker) before this entry is sent.
    reverse_of: tuple[BracketId, ...] = field(default_factory=tuple)
    # A scale-out share: the ids of every share of its alert, in share order (itself included); empty otherwise.
    group: tuple[BracketId, ...] = field(default_factory=tuple)

    @classmethod
    def register(
        cls, spec: BracketSpec, *, bracket_id: BracketId | None = None, now: datetime | None = None
    ) -> Bracket:
        """A new bracket in CREATED, version 1, its entry leg recorded as CREATED before anything else happens."""
        at = now or utc_now()
        return cls(
            id=bracket_id or new_bracket_id(),
            account_id=spec.account_id,
            spec=spec,
            status=BracketStatus.CREATED,
            version=1,
            stop_price=spec.sl_price,
            created_at=at,
            updated_at=at,
            entry=LegOrder(role=LegRole.ENTRY, quantity=spec.quantity),
        )

    @property
    def position_side(self) -> PositionSide:
        return self.spec.position_side

    @property
    def exit_due_at(self) -> datetime | None:
        """When the time exit is due (the earlier of exit_after and exit_at), or None without one. exit_at is the time
        on the IST day the bracket was registered (intake refuses one that has already passed)."""
        due = []
        if self.spec.exit_after is not None:
            due.append(self.created_at + timedelta(minutes=self.spec.exit_after))
        if self.spec.exit_at is not None:
            day = self.created_at.astimezone(IST).date()
            due.append(datetime.combine(day, time.fromisoformat(self.spec.exit_at), tzinfo=IST).astimezone(UTC))
        return min(due) if due else None

    @property
    def filled_quantity(self) -> int:
        return self.entry.filled_quantity

    @property
    def entry_working(self) -> bool:
        """Part of the entry filled and the bracket moved on (protected, exiting...) while the rest of the entry
        order still works at the broker: later fills add to the position. (A bracket flagged for review while its
        entry worked with nothing filled is not this: the broker's answer decides it, lifecycle.entry_undecided.)"""
        return (
            self.status not in (BracketStatus.CREATED, BracketStatus.ENTRY_PENDING)
            and self.entry.status is OrderStatus.SENT_TO_BROKER
            and self.entry.broker_order_id is not None
            and self.entry.filled_quantity > 0
        )

    @property
    def stop_has_trailed(self) -> bool:
        """The current stop is tighter than the one placed: an exit at it is a TRAIL_STOP, not a STOP."""
        return trailing.stop_has_trailed(self.position_side, self.spec.sl_price, self.stop_price)

    def transition(self, to: BracketStatus, *, now: datetime | None = None, **changes: Any) -> Bracket:
        """The bracket in status `to`, version + 1; raises InvalidStateTransition if the table forbids it."""
        ensure_bracket_transition(self.status, to)
        return self._next(status=to, now=now, changes=changes)

    def update(self, *, now: datetime | None = None, **changes: Any) -> Bracket:
        """A change that keeps the status (e.g. the stop trailed, the entry got its broker order id)."""
        return self._next(status=self.status, now=now, changes=changes)

    def block(self, kind: BlockKind, reason: str, *, now: datetime | None = None) -> Bracket:
        """CREATED -> FAILED with the block tag "<KIND>:<reason>"; the entry leg is marked FAILED too."""
        tag = block_tag(kind, reason)
        if self.status is not BracketStatus.CREATED:
            # ENTRY_PENDING -> FAILED is a broker reject, not a block: blocks happen before the broker sees it.
            raise InvalidStateTransition("bracket", self.status.value, f"{BracketStatus.FAILED.value} (blocked)")
        return self.transition(
            BracketStatus.FAILED,
            now=now,
            tags=(*self.tags, tag),
            entry=self.entry.transition(OrderStatus.FAILED, message=tag),
        )

    def _next(self, *, status: BracketStatus, now: datetime | None, changes: dict[str, Any]) -> Bracket:
        bad = _PROTECTED_FIELDS & changes.keys()
        if bad:
            raise ValueError(f"cannot change {', '.join(sorted(bad))} through a transition")
        return dataclasses.replace(
            self, status=status, version=self.version + 1, updated_at=now or utc_now(), **changes
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account_id": self.account_id,
            "spec": self.spec.to_dict(),
            "status": self.status.value,
            "version": self.version,
            "stop_price": str(self.stop_price),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "entry": self.entry.to_dict(),
            "exit": None if self.exit is None else self.exit.to_dict(),
            "gtt_id": self.gtt_id,
            "exit_reason": None if self.exit_reason is None else self.exit_reason.value,
            "tags": list(self.tags),
            "earlier_exits": [leg.to_dict() for leg in self.earlier_exits],
            "reverse_of": list(self.reverse_of),
            **({"group": list(self.group)} if self.group else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Bracket:
        return cls(
            id=BracketId(data["id"]),
            account_id=AccountId(data["account_id"]),
            spec=BracketSpec.from_dict(data["spec"]),
            status=BracketStatus(data["status"]),
            version=int(data["version"]),
            stop_price=Decimal(str(data["stop_price"])),
            created_at=datetime.fromisoformat(data["created_at"]),
            updated_at=datetime.fromisoformat(data["updated_at"]),
            entry=LegOrder.from_dict(data["entry"]),
            exit=None if not data.get("exit") else LegOrder.from_dict(data["exit"]),
            gtt_id=data.get("gtt_id"),
            exit_reason=None if not data.get("exit_reason") else ExitReason(data["exit_reason"]),
            tags=tuple(data.get("tags") or ()),
            earlier_exits=tuple(LegOrder.from_dict(leg) for leg in data.get("earlier_exits") or ()),
            reverse_of=tuple(BracketId(i) for i in data.get("reverse_of") or ()),
            group=tuple(BracketId(i) for i in data.get("group") or ()),
        )
