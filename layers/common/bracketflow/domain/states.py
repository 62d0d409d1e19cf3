"""The bracket and order (leg) state machines: every allowed status change, in this one place.

Bracket (docs/state-machines.md):
    CREATED -> ENTRY_PENDING -> ENTRY_FILLED -> PROTECTED -> EXITING -> CLOSED
    CREATED -> FAILED                        blocked (risk/guard/duplicate) or invalid
    CREATED -> CANCELLED                     the trader's DELETE before the entry was sent (PlaceEntry sees it)
    ENTRY_PENDING -> CANCELLED | EXPIRED | FAILED   cancelled by us/the trader, validity ran out, broker rejected
    ENTRY_FILLED -> EXITING                  protection could not be placed: EmergencyExit flattens the position
                                             (also the trader's DELETE before protection lands)
    PROTECTED -> CLOSED                      the GTT's stop or target filled at the broker
    EXITING -> EXIT_FAILED -> EXITING        exit order failed; retry
    * -> NEEDS_REVIEW                        reconciliation found something it cannot explain
    NEEDS_REVIEW -> ENTRY_FILLED             the entry it was flagged over (still working at the broker) filled
                                             after all: that fill is protected like any other, never ignored

Decision on NEEDS_REVIEW: it is reachable from EVERY status except itself, terminal ones included, because
reconciliation may find the broker disagreeing with a bracket we already closed (e.g. a position still open
after CLOSED) — that is exactly when a human must look. NEEDS_REVIEW is not terminal: the human (or a later
reconciliation that sees the broker flat) resolves it to EXITING (flatten what is left), CLOSED (flat, with
a position that was traded) or CANCELLED (flat, the entry never filled — e.g. an order frozen at the broker); and
the broker itself resolves one flagged while its entry was still working: a fill makes it ENTRY_FILLED (then
protected or flattened), a cancel or rejection CANCELLED.

Order (leg), the order lifecycle: CREATED -> SENT_TO_BROKER -> EXECUTED | FAILED | CANCELLED,
plus CREATED -> FAILED (blocked, or the broker refused the place call outright) and CREATED -> CANCELLED (the
trader cancelled the bracket before the order was sent). EXECUTED, FAILED and
CANCELLED are final: a later broker view that disagrees is a bracket-level NEEDS_REVIEW, not a leg rewrite.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from bracketflow.domain.enums import BracketStatus as B
from bracketflow.domain.enums import OrderStatus as O
from bracketflow.errors import InvalidStateTransition

_BRACKET_EDGES: dict[B, frozenset[B]] = {
    B.CREATED: frozenset({B.ENTRY_PENDING, B.FAILED, B.CANCELLED}),
    B.ENTRY_PENDING: frozenset({B.ENTRY_FILLED, B.CANCELLED, B.EXPIRED, B.FAILED}),
    B.ENTRY_FILLED: frozenset({B.PROTECTED, B.EXITING}),
    B.PROTECTED: frozenset({B.EXITING, B.CLOSED}),
    B.EXITING: frozenset({B.CLOSED, B.EXIT_FAILED}),
    B.EXIT_FAILED: frozenset({B.EXITING}),
    B.CLOSED: frozenset(),
    B.FAILED: frozenset(),
    B.CANCELLED: frozenset(),
    B.EXPIRED: frozenset(),
    B.NEEDS_REVIEW: frozenset({B.ENTRY_FILLED, B.EXITING, B.CLOSED, B.CANCELLED}),
}

BRACKET_TRANSITIONS: Final = MappingProxyType(
    {
        status: targets | ({B.NEEDS_REVIEW} if status is not B.NEEDS_REVIEW else frozenset())
        for status, targets in _BRACKET_EDGES.items()
    }
)

ORDER_TRANSITIONS: Final = MappingProxyType(
    {
        O.CREATED: frozenset({O.SENT_TO_BROKER, O.FAILED, O.CANCELLED}),
        O.SENT_TO_BROKER: frozenset({O.EXECUTED, O.FAILED, O.CANCELLED}),
        O.EXECUTED: frozenset(),
        O.FAILED: frozenset(),
        O.CANCELLED: frozenset(),
    }
)

# Done for good in the normal course (only reconciliation may still flag them for review).
TERMINAL_BRACKET_STATUSES: Final = frozenset({B.CLOSED, B.FAILED, B.CANCELLED, B.EXPIRED})
# Everything reconciliation and the order book's "open" filter look at.
OPEN_BRACKET_STATUSES: Final = frozenset(B) - TERMINAL_BRACKET_STATUSES
# We (may) hold a position at the broker: it must be protected or being flattened.
POSITION_BRACKET_STATUSES: Final = frozenset({B.ENTRY_FILLED, B.PROTECTED, B.EXITING, B.EXIT_FAILED})
# The streamer trails and watches these.
WATCHED_BRACKET_STATUSES: Final = frozenset({B.PROTECTED})

TERMINAL_ORDER_STATUSES: Final = frozenset({O.EXECUTED, O.FAILED, O.CANCELLED})


def _table_for(status: object) -> MappingProxyType:
    if isinstance(status, B):
        return BRACKET_TRANSITIONS
    if isinstance(status, O):
        return ORDER_TRANSITIONS
    raise TypeError(f"not a bracket or order status: {status!r}")


def can_transition(current: B | O, target: B | O) -> bool:
    """True when the table allows current -> target. Both must be of the same kind (bracket or order)."""
    table = _table_for(current)
    if type(target) is not type(current):
        return False
    return target in table[current]


def ensure_bracket_transition(current: B | str, target: B | str) -> B:
    """Return the target status, or raise InvalidStateTransition; accepts stored string values too."""
    cur, tgt = B(current), B(target)
    if tgt not in BRACKET_TRANSITIONS[cur]:
        raise InvalidStateTransition("bracket", cur.value, tgt.value)
    return tgt


def ensure_order_transition(current: O | str, target: O | str) -> O:
    cur, tgt = O(current), O(target)
    if tgt not in ORDER_TRANSITIONS[cur]:
        raise InvalidStateTransition("order", cur.value, tgt.value)
    return tgt


def is_terminal(status: B | str) -> bool:
    return B(status) in TERMINAL_BRACKET_STATUSES
