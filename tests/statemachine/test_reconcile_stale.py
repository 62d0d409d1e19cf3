"""Reconciliation never repairs from a stale broker view, on the local stack against the paper exchange.

A run reads the broker once (TakeSnapshot), then reaches each open bracket, seconds or minutes later (the Map runs
4 at a time). Here the test holds that gap open: it takes a run's snapshot with the stack's ReconcileSnapshot
function, lets the bracket and the broker move on, then hands the bracket to the stack's ReconcileBracket function
with that run's id, exactly as the workflow's Map would.

(a) The entry filled before the snapshot, its GTT was placed after it: the snapshot shows a position with no GTT.
    Re-protecting from it would place a second GTT, one that sync_stop and the exits never touch.
(b) The entry filled after the snapshot: the snapshot shows no position, and an earlier order of the trader's on
    the exit side. Closing from it would record a MANUAL exit at that order's price and cancel the GTT of a
    position that is open: nothing would protect it.
Also: the trader's hand actions after a snapshot (a position sold and bought back) are seen before acting, and a
position closed by hand is closed with the order that closed it: the whole quantity, placed after the entry filled.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from local.stack import LocalStack
from tests.support.stack import (
    bracket,
    events,
    gtts,
    market_fixture,
    net_position,
    place,
    protected_bracket,
    quote,
    run_reconcile,
    stack_fixture,
    token_stored,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "reconcile-stale-key"

# no relay: no order update reaches the watcher, so the test decides when a fill becomes known
stack = stack_fixture(API_KEY, relay=False)


market = market_fixture()


def by_hand(kite: Any, side: str, quantity: int) -> str:
    """The trader trades INFY (MIS) at the broker, outside bracketflow: a LIMIT at the touch (BUY 1500, SELL
    1499.95), which fills at once in the fixture's market."""
    order_id = kite.place_order(
        kite.VARIETY_REGULAR,
        exchange="NSE",
        tradingsymbol="INFY",
        transaction_type=side,
        quantity=quantity,
        product="MIS",
        order_type="LIMIT",
        price=1500 if side == "BUY" else 1499.95,
    )
    assert kite.order_history(order_id)[-1]["status"] == "COMPLETE"
    return str(order_id)


def snapshot(stack: LocalStack) -> str:
    """A reconcile run's first step (the stack's ReconcileSnapshot function); its run id."""
    return str(stack.runtime.invoke("ReconcileSnapshotFunction", {})["run_id"])


def reconcile_one(stack: LocalStack, run_id: str, bracket_id: str) -> dict[str, Any]:
    """That run's ReconcileBracket for one bracket, as its Map hands it over."""
    return dict(stack.runtime.invoke("ReconcileBracketFunction", {"run_id": run_id, "bracket_id": bracket_id}))


def active_gtts(stack: LocalStack) -> list[str]:
    return [str(g["id"]) for g in gtts(stack) if g["status"] == "active"]


def resting_entry(stack: LocalStack) -> str:
    """A BUY 10 INFY MIS resting at 1490 (stop 1470, target 1540), its workflow waiting for the fill."""
    bracket_id = place(stack, entry_price="1490", sl_price="1470", target_price="1540")
    wait_for_status(bracket_id, "ENTRY_PENDING")
    wait_for("the entry wait's token", lambda: token_stored(bracket_id, "entry_task_token"))
    return bracket_id


def test_a_gtt_placed_after_the_snapshot_is_not_placed_again(market, kite):
    # Given an entry that fills at the broker (its update lost)
    bracket_id = resting_entry(market)
    quote(market, "1490", "1489.95", "1490")
    # And a run that reads the broker now: a position of 10, no GTT yet
    stale = snapshot(market)
    # And the bracket moves on before that run reaches it: the fill recorded, its GTT placed
    run_reconcile(market)
    protected = wait_for_status(bracket_id, "PROTECTED")
    assert active_gtts(market) == [protected.gtt_id]
    # When the first run's ReconcileBracket reaches it
    result = reconcile_one(market, stale, bracket_id)
    # Then it places nothing: one GTT protects the position, the bracket's own
    assert result["repair"] is None, result
    assert active_gtts(market) == [protected.gtt_id]
    assert bracket(bracket_id).status.value == "PROTECTED" and bracket(bracket_id).gtt_id == protected.gtt_id


def test_a_fill_after_the_snapshot_is_not_closed_with_an_earlier_order_of_the_traders(market, kite):
    # Given the trader's own round trip in INFY MIS earlier in the day (net 0, a SELL of 10 in the order book)
    by_hand(kite, "BUY", 10)
    by_hand(kite, "SELL", 10)
    # And a bracket's entry resting at 1490
    bracket_id = resting_entry(market)
    # And a run that reads the broker now: flat, the entry still open
    stale = snapshot(market)
    # When the entry fills, the bracket is protected, and only then does that run reach it
    quote(market, "1490", "1489.95", "1490")
    run_reconcile(market)
    protected = wait_for_status(bracket_id, "PROTECTED")
    result = reconcile_one(market, stale, bracket_id)
    # Then the bracket is not closed: the position is open at the broker and its GTT stays
    assert result["repair"] is None, result
    after = bracket(bracket_id)
    assert after.status.value == "PROTECTED" and after.exit is None
    assert net_position(market, "INFY") == 10 and active_gtts(market) == [protected.gtt_id]
    assert [e["repair"] for e in events(bracket_id) if e["type"] == "Reconciled"] == ["MISSED_ENTRY_UPDATE"]


def test_a_position_sold_and_bought_back_after_the_snapshot_keeps_its_gtt(market, kite):
    # Given a protected bracket whose 10 INFY the trader sells by hand
    b = protected_bracket(market)
    by_hand(kite, "SELL", 10)
    # And a run that reads the broker now: flat
    stale = snapshot(market)
    # When the trader buys the 10 back before that run reaches the bracket
    by_hand(kite, "BUY", 10)
    result = reconcile_one(market, stale, b.id)
    # Then the bracket is left protected (the broker, looked at again before acting, shows the position open)
    assert result["repair"] is None, result
    assert bracket(b.id).status.value == "PROTECTED" and active_gtts(market) == [b.gtt_id]
    assert net_position(market, "INFY") == 10


def test_a_position_closed_by_hand_is_closed_with_the_order_that_closed_it(market, kite):
    # Given a protected bracket the trader closes by hand (SELL 10 at 1499.95)
    b = protected_bracket(market)
    closing = by_hand(kite, "SELL", 10)
    # And later trades a round trip of 5 on the same instrument (net still 0; the latest SELL is of 5)
    time.sleep(1.1)  # the broker stamps orders in whole seconds: the round trip is stamped after the close
    by_hand(kite, "BUY", 5)
    by_hand(kite, "SELL", 5)
    summary = run_reconcile(market)
    # Then the bracket is CLOSED (MANUAL) with the order of 10 that closed it, and its GTT is cancelled
    assert summary["repairs"] == {"POSITION_CLOSED_AT_BROKER": 1}, summary
    done = wait_for_status(b.id, "CLOSED")
    assert done.exit_reason.value == "MANUAL" and done.exit.broker_order_id == closing
    assert done.exit.filled_quantity == 10 and done.exit.average_price == Decimal("1499.95")
    assert active_gtts(market) == []


def test_a_position_closed_in_pieces_is_not_closed_with_an_order_from_before_its_fill(market, kite):
    # Given the trader's round trip of 10 before the bracket (a SELL of 10 in the book)
    by_hand(kite, "BUY", 10)
    by_hand(kite, "SELL", 10)
    time.sleep(1.1)  # the broker stamps orders in whole seconds: the bracket's fill is stamped after
    b = protected_bracket(market)
    # When the trader closes the bracket's position by hand in two pieces of 5
    by_hand(kite, "SELL", 5)
    by_hand(kite, "SELL", 5)
    summary = run_reconcile(market)
    # Then no single order is taken as its close (not the SELL of 10 from before its fill, not a piece of 5):
    # a human looks, and its GTT, which would only open a position now, is cancelled
    assert summary["repairs"] == {"FLAGGED": 1}, summary
    after = bracket(b.id)
    assert after.status.value == "NEEDS_REVIEW" and after.exit is None
    assert "POSITION_FLAT" in [e for e in events(b.id) if e["type"] == "FlaggedForReview"][-1]["reason"]
    assert active_gtts(market) == []


def test_a_run_with_no_open_bracket_reads_only_the_gtts_and_still_reports_orphans(market, kite):
    # (the schedule runs all evening for the commodity and currency sessions, mostly with nothing open)
    from bracketflow.adapters.dynamo.reconcile import get_snapshot

    # Given orders in the broker's book, a GTT no bracket owns, and no open bracket
    by_hand(kite, "BUY", 10)
    by_hand(kite, "SELL", 10)
    legs = [{"transaction_type": "SELL", "quantity": 5, "order_type": "LIMIT", "product": "CNC", "price": 1400}]
    stray = kite.place_gtt(kite.GTT_TYPE_SINGLE, "INFY", "NSE", [1400], 1500, legs)["trigger_id"]
    # When a run goes through
    run_id = snapshot(market)
    summary = market.runtime.invoke("ReconcileSummaryFunction", {"run_id": run_id, "results": []})
    # Then it read the GTTs only (no orders, no positions) and still reports the orphan
    stored = get_snapshot(run_id)
    assert stored is not None and stored["orders"] == [] and stored["positions"] == []
    assert [str(g["gtt_id"]) for g in stored["gtts"]] == [str(stray)]
    assert summary["orphan_gtts"] == [str(stray)]
