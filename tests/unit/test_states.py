"""The bracket and order state machines, checked against docs/state-machines.md edge by edge.

The expected edges are written out here from the design text, NOT derived from the table under test, and every
pair of statuses is tried: each allowed edge must pass and every other pair must be refused.
"""

from __future__ import annotations

import itertools

import pytest

from bracketflow.domain.enums import BracketStatus, OrderStatus
from bracketflow.domain.states import (
    BRACKET_TRANSITIONS,
    OPEN_BRACKET_STATUSES,
    ORDER_TRANSITIONS,
    TERMINAL_BRACKET_STATUSES,
    can_transition,
    ensure_bracket_transition,
    ensure_order_transition,
    is_terminal,
)
from bracketflow.errors import InvalidStateTransition

# docs/state-machines.md, one line per sentence of the design (plus the decisions documented in states.py).
EXPECTED_BRACKET_EDGES = {
    # the happy path
    ("CREATED", "ENTRY_PENDING"),
    ("ENTRY_PENDING", "ENTRY_FILLED"),
    ("ENTRY_FILLED", "PROTECTED"),
    ("PROTECTED", "EXITING"),
    ("EXITING", "CLOSED"),
    # blocked or invalid
    ("CREATED", "FAILED"),
    # the trader's DELETE before the entry was sent (issue: cancel the entry, or exit the position)
    ("CREATED", "CANCELLED"),
    # the entry never filled
    ("ENTRY_PENDING", "CANCELLED"),
    ("ENTRY_PENDING", "EXPIRED"),
    ("ENTRY_PENDING", "FAILED"),
    # the GTT's stop or target filled at the broker
    ("PROTECTED", "CLOSED"),
    # exit retry loop
    ("EXITING", "EXIT_FAILED"),
    ("EXIT_FAILED", "EXITING"),
    # protection failed: EmergencyExit flattens the filled quantity (docs/state-machines.md)
    ("ENTRY_FILLED", "EXITING"),
    # a human (or reconciliation) resolves a review
    ("NEEDS_REVIEW", "EXITING"),
    ("NEEDS_REVIEW", "CLOSED"),
    ("NEEDS_REVIEW", "CANCELLED"),
    # flagged while its entry still worked at the broker, which then filled: protected like any fill
    ("NEEDS_REVIEW", "ENTRY_FILLED"),
}
ALL_BRACKET = [s.value for s in BracketStatus]
# "* -> NEEDS_REVIEW": from every status except NEEDS_REVIEW itself, terminal ones included.
EXPECTED_BRACKET_EDGES |= {(s, "NEEDS_REVIEW") for s in ALL_BRACKET if s != "NEEDS_REVIEW"}

# The order lifecycle: CREATED -> SENT_TO_BROKER -> EXECUTED | FAILED | CANCELLED; CREATED -> FAILED when blocked.
EXPECTED_ORDER_EDGES = {
    ("CREATED", "SENT_TO_BROKER"),
    ("CREATED", "FAILED"),
    ("CREATED", "CANCELLED"),  # the trader cancelled before the order was sent
    ("SENT_TO_BROKER", "EXECUTED"),
    ("SENT_TO_BROKER", "FAILED"),
    ("SENT_TO_BROKER", "CANCELLED"),
}
ALL_ORDER = [s.value for s in OrderStatus]

BRACKET_PAIRS = list(itertools.product(ALL_BRACKET, ALL_BRACKET))
ORDER_PAIRS = list(itertools.product(ALL_ORDER, ALL_ORDER))


def test_every_bracket_status_has_a_row_in_the_table():
    # Given the bracket statuses / When looking them up in the table / Then none is missing
    assert set(BRACKET_TRANSITIONS) == set(BracketStatus)
    assert set(ORDER_TRANSITIONS) == set(OrderStatus)


@pytest.mark.parametrize(("current", "target"), BRACKET_PAIRS)
def test_bracket_transition_is_allowed_exactly_when_the_design_says(current, target):
    # Given a pair of bracket statuses
    expected = (current, target) in EXPECTED_BRACKET_EDGES
    cur, tgt = BracketStatus(current), BracketStatus(target)

    # When asking the table / Then it agrees with the design
    assert can_transition(cur, tgt) is expected
    if expected:
        assert ensure_bracket_transition(cur, tgt) is tgt
    else:
        with pytest.raises(InvalidStateTransition) as err:
            ensure_bracket_transition(cur, tgt)
        assert err.value.current == current and err.value.target == target
        assert err.value.status_code == 409
        assert f"from {current} to {target}" in err.value.message


@pytest.mark.parametrize(("current", "target"), ORDER_PAIRS)
def test_order_transition_is_allowed_exactly_when_the_lifecycle_note_says(current, target):
    expected = (current, target) in EXPECTED_ORDER_EDGES
    cur, tgt = OrderStatus(current), OrderStatus(target)

    assert can_transition(cur, tgt) is expected
    if expected:
        assert ensure_order_transition(cur, tgt) is tgt
    else:
        with pytest.raises(InvalidStateTransition) as err:
            ensure_order_transition(cur, tgt)
        assert err.value.entity == "order"


def test_ensure_accepts_stored_string_values():
    # Given statuses as they come back from DynamoDB (plain strings)
    # When / Then the check works on them too
    assert ensure_bracket_transition("PROTECTED", "EXITING") is BracketStatus.EXITING
    with pytest.raises(InvalidStateTransition):
        ensure_bracket_transition("CLOSED", "EXITING")


def test_a_bracket_status_never_transitions_to_an_order_status():
    # Given statuses of different machines that share a name (CREATED, FAILED, CANCELLED)
    # When / Then they are never mixed up
    assert can_transition(BracketStatus.CREATED, OrderStatus.FAILED) is False
    assert can_transition(OrderStatus.CREATED, BracketStatus.FAILED) is False


def test_terminal_and_open_statuses_partition_the_bracket_statuses():
    # Given the design's terminal statuses
    terminal = {"CLOSED", "FAILED", "CANCELLED", "EXPIRED"}
    # Then the module agrees, and open = everything else (NEEDS_REVIEW is open: a human still has to act)
    assert {s.value for s in TERMINAL_BRACKET_STATUSES} == terminal
    assert {s.value for s in OPEN_BRACKET_STATUSES} == set(ALL_BRACKET) - terminal
    assert is_terminal("CLOSED") and not is_terminal("NEEDS_REVIEW")


def test_terminal_brackets_can_only_be_flagged_for_review():
    # Given a terminal bracket / When looking at where it may go / Then only NEEDS_REVIEW
    for status in TERMINAL_BRACKET_STATUSES:
        assert BRACKET_TRANSITIONS[status] == frozenset({BracketStatus.NEEDS_REVIEW})


def test_needs_review_cannot_be_flagged_again():
    assert not can_transition(BracketStatus.NEEDS_REVIEW, BracketStatus.NEEDS_REVIEW)


def test_the_tables_cannot_be_changed_at_runtime():
    # Given the shared tables / When something tries to add an edge / Then it fails
    with pytest.raises(TypeError):
        BRACKET_TRANSITIONS[BracketStatus.CLOSED] = frozenset({BracketStatus.EXITING})  # type: ignore[index]
