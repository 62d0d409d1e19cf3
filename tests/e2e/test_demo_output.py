"""The demo's follow loop and summary on audit trails shaped like GET /api/v1/brackets/{id}'s, without a stack:
every event printed once and in order however the polls fall, a long trail folded in the summary, and events
without a price named in words."""

from __future__ import annotations

from typing import Any

from local.demo import describe, follow, summary


def event(version: int, kind: str, second: int, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "at": f"2026-01-05T04:00:{second:02d}.000000Z",
        "version": version,
        "event_id": f"ev_{version}_{kind}",
        **fields,
    }


def bracket(status: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "bracket_id": "br_1",
        "status": status,
        "side": "BUY",
        "quantity": 1,
        "exchange": "NSE",
        "symbol": "INFY",
        "product": "MIS",
        "strategy": "demo",
        "entry": {
            "price_type": "MARKET",
            "price": "1500",
            "order_id": "1",
            "filled_quantity": 1,
            "average_price": "1500",
        },
        "stop_price": "1503.00",
        "sl_price": "1496.25",
        "target_price": "1507.50",
        "trail": {"type": "percent", "value": "0.1"},
        "exit": {"reason": "TRAIL_STOP", "price": "1502.95", "order_id": "2"},
        "tags": [],
        "events": events,
    }


def test_each_event_is_printed_once_in_trail_order_even_when_one_appears_at_a_version_already_shown():
    registered = event(1, "BracketRegistered", 0, entry_price="1500", action="BUY", quantity=1)
    placed = event(2, "EntryPlaced", 1, broker_order_id="1")
    filled = event(3, "EntryFilled", 2, average_price="1500", filled_quantity=1)
    noted = event(4, "Reconciled", 3, repair="MISSED_ENTRY_UPDATE", detail="entry COMPLETE")
    closed = event(4, "BracketClosed", 4, exit_price="1502.95", pnl="2.95", reason="TRAIL_STOP", quantity=1)
    # Given polls that see the trail grow, an event at version 4 vanish and another appear at version 4
    polls = iter(
        [
            bracket("ENTRY_PENDING", [registered]),
            bracket("ENTRY_FILLED", [registered, placed, filled]),
            bracket("ENTRY_FILLED", [registered, placed, filled, noted]),
            bracket("CLOSED", [registered, placed, filled, closed]),
        ]
    )
    printed: list[str] = []
    # When the demo follows it
    result = follow(lambda: next(polls), lambda line: printed.append(str(line)), poll_s=0, wait=lambda s: None)
    # Then every distinct event got exactly one line, in the order they appeared, and it stopped at CLOSED
    assert [line.split()[1:3] for line in printed] == [
        ["alert", "accepted"],
        ["entry", "placed"],
        ["entry", "filled"],
        ["reconciled", "-"],
        ["closed", "1502.95"],
    ]
    assert not result.timed_out and result.bracket["status"] == "CLOSED"


def test_a_following_that_never_sees_a_final_status_times_out():
    # Given a bracket that stays PROTECTED
    still = bracket("PROTECTED", [event(1, "BracketRegistered", 0, entry_price="1500")])
    # When it is followed with no time to wait
    result = follow(lambda: still, lambda line: None, timeout_s=0, poll_s=0, wait=lambda s: None)
    # Then the follow says it timed out, with the one event seen
    assert result.timed_out and len(result.lines) == 1


def test_the_summary_folds_a_long_run_of_stop_moves_to_its_first_and_last():
    stops = ["1497.35", "1498.35", "1499.35", "1500.35", "1501.35", "1502.35"]
    trail = [event(1, "BracketRegistered", 0, entry_price="1500")]
    previous = "1496.25"
    for n, stop in enumerate(stops, start=2):
        trail.append(event(n, "StopTrailed", n, old_stop=previous, new_stop=stop))
        previous = stop
    trail.append(event(8, "BracketClosed", 9, exit_price="1501.95", pnl="1.95", reason="TRAIL_STOP", quantity=1))
    # When the summary is drawn
    text = summary(bracket("CLOSED", trail))
    # Then the first and the last stop move are rows, the four between are counted, and the P&L is signed
    assert "1497.35" in text and "1502.35" in text
    assert "... 4 more stop moves" in text
    assert not any(p in text for p in ("1498.35", "1499.35", "1500.35", "1501.35"))
    assert "recorded moves: 6" in text
    assert "P&L         +1.95" in text


def test_events_without_a_price_are_named_in_words_with_what_they_say():
    b = bracket("FAILED", [])
    # Given a rejected entry and a review flag
    rejected = describe(event(3, "EntryRejected", 1, message="insufficient funds"), b)
    flagged = describe(event(4, "FlaggedForReview", 2, reason="POSITION_FLAT: no position"), b)
    # Then each line names the event, has no price, and carries the broker's or reconciliation's words
    assert (rejected.label, rejected.price, rejected.detail) == ("entry rejected", "-", "insufficient funds")
    assert (flagged.label, flagged.price, flagged.detail) == ("needs review", "-", "POSITION_FLAT: no position")


def test_a_breakeven_is_a_line_with_its_new_stop_and_the_target_that_set_it():
    b = bracket("PROTECTED", [])
    moved = describe(event(5, "BreakevenStopSet", 5, old_stop="1480", new_stop="1501", after_share=1), b)
    assert (moved.label, moved.detail) == ("stop to breakeven", "target 1 hit, from 1480.00")
    assert "1501" in moved.price


def test_a_price_breakeven_is_a_line_with_the_price_that_was_reached():
    b = bracket("PROTECTED", [])
    fields = {"old_stop": "1480", "new_stop": "1501", "breakeven_at": "1520.5", "price": "1520.5"}
    moved = describe(event(5, "BreakevenStopSet", 5, **fields), b)
    assert (moved.label, moved.detail) == ("stop to breakeven", "1520.5 reached, from 1480.00")
    assert "1501" in moved.price
