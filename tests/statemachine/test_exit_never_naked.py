"""The exit path under real broker behaviour, on the local stack (moto's Step Functions, our Lambdas in-process, the
ExitQueue and its poller, the watcher fed by the paper ticker) with the paper exchange (manual market) as the broker:

- an exit the broker accepts and then cancels in part (market protection in a fast market) is retried for the
  unfilled quantity only, until the position is flat, never for the whole quantity again;
- an exit whose placement fails after the GTT was deleted is retried within seconds, not after the ExitQueue's
  visibility timeout;
- a GTT that fired while the market gapped past its LIMIT child is exited at market, the child cancelled first;
- a position closed by hand at the broker is not taken for the GTT's fill: the bracket is reconciled at once (not at
  the next scheduled run), closes MANUAL, and its GTT does not outlive it.

The streamer's part (seeing the stop crossed) is played by the test: it puts the streamer's exit intent on the queue.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from kiteconnect import KiteConnect

from bracketflow.domain.ids import order_tag
from local.chaos import CrashAfterBroker
from local.stack import LocalStack
from tests.support.stack import (
    broker_orders,
    event_types,
    events,
    fresh_strategy,
    gtts,
    market_fixture,
    net_position,
    paper,
    place,
    protected_bracket,
    quote,
    run_reconcile,
    stack_fixture,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "exit-never-naked-key"
STATUS_BOUND_S = 90  # a bound for a busy 2-core machine, not a speed claim

stack = stack_fixture(API_KEY, relay=True)


market = market_fixture()


def stop_hit(stack: LocalStack, bracket_id: str, ltp: str, stop: str = "1480") -> None:
    """What the streamer sends when it sees the stop crossed: a STOP exit intent on the ExitQueue. (The paper market
    is left where it is unless a test moves it: quoting through the stop would fire the GTT, another story.)"""
    stack.client("sqs").send_message(
        QueueUrl=stack.queue_url("ExitQueue"),
        MessageBody=json.dumps(
            {
                "bracket_id": bracket_id,
                "reason": "STOP",
                "ltp": ltp,
                "stop_price": stop,
                "detected_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "message_index": 0,
                "packet_index": 0,
            }
        ),
    )


def exit_orders(stack: LocalStack, bracket_id: str) -> list[dict[str, Any]]:
    tag = order_tag(bracket_id, "EXIT")
    return sorted((o for o in broker_orders(stack, "INFY") if o["tag"] == tag), key=lambda o: o["order_id"])


def live_gtts(stack: LocalStack) -> list[str]:
    return [str(g["id"]) for g in gtts(stack) if g["status"] == "active"]


# ---------- an exit the broker cancels in part ----------


def test_an_exit_cancelled_in_part_by_market_protection_is_retried_for_the_rest_until_flat(market):
    # Given a protected BUY 10 INFY (stop 1480), and a fast market in which the exchange's market protection lets
    # only 30 % of each of the next two market orders fill and cancels the rest
    b = protected_bracket(market, fresh_strategy("partial-cancel"), timeout_s=STATUS_BOUND_S)
    paper(
        market,
        "faults",
        {"rules": [{"kind": "partial_cancel", "match": {"tradingsymbol": "INFY"}, "count": 2, "fill_ratio": 0.3}]},
    )
    # When the streamer reports the stop crossed
    stop_hit(market, b.id, "1479.95")
    # Then the bracket ends CLOSED, flat at the broker: 3 sold, then 2 of the 7 left, then the last 5
    done = wait_for_status(b.id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    orders = exit_orders(market, b.id)
    assert [(o["status"], o["quantity"], o["filled_quantity"]) for o in orders] == [
        ("CANCELLED", 10, 3),
        ("CANCELLED", 7, 2),
        ("COMPLETE", 5, 5),
    ]
    assert done.status.value == "CLOSED", event_types(b.id)
    assert net_position(market, "INFY") == 0
    # And nothing protects a position that is gone, and the P&L is booked on all 10 at what they really sold for
    assert live_gtts(market) == []
    closed = next(e for e in events(b.id) if e["type"] == "BracketClosed")
    sold = sum(float(o["average_price"]) * int(o["filled_quantity"]) for o in orders)
    assert int(closed["quantity"]) == 10
    assert float(closed["pnl"]) == pytest.approx(sold - 10 * float(done.entry.average_price))
    assert done.exit_reason.value == "STOP"


# ---------- an exit whose placement fails is retried within seconds ----------


def test_an_exit_that_fails_after_the_gtt_was_deleted_is_retried_well_within_the_visibility_timeout(market):
    # Given a protected BUY 10 INFY, and a broker that answers the next two order placements with a 500 (refused,
    # nothing placed: the exit Lambda's own retries run out and the message fails)
    b = protected_bracket(market, fresh_strategy("exit-retry"), timeout_s=STATUS_BOUND_S)
    paper(
        market,
        "faults",
        {"rules": [{"kind": "http_500", "match": {"path": "/orders/regular", "method": "POST"}, "count": 2}]},
    )
    # When the streamer reports the stop crossed
    stop_hit(market, b.id, "1479.95")
    # Then the first attempt deleted the GTT and failed: nothing protects the position now
    wait_for("the GTT deleted by the exit", lambda: str(b.gtt_id) not in live_gtts(market), STATUS_BOUND_S)
    # And the retry comes in seconds: the bracket is CLOSED before half the ExitQueue's visibility timeout (the wait
    # it had before) has passed — a bound that only an exit retried on the visibility timeout cannot meet
    attrs = market.client("sqs").get_queue_attributes(
        QueueUrl=market.queue_url("ExitQueue"), AttributeNames=["VisibilityTimeout"]
    )["Attributes"]
    visibility_s = int(attrs["VisibilityTimeout"])
    assert visibility_s >= 180  # >= 6 x the exit Lambda's timeout, for an exit that is merely slow
    done = wait_for_status(b.id, "CLOSED", timeout_s=visibility_s / 2)
    assert [(o["status"], o["filled_quantity"]) for o in exit_orders(market, b.id)] == [("COMPLETE", 10)]
    assert net_position(market, "INFY") == 0
    assert done.exit_reason.value == "STOP"


# ---------- an exit whose invocation dies after the GTT was deleted ----------


def test_an_exit_whose_invocation_died_after_deleting_the_gtt_is_resumed_within_seconds(market):
    # Given a protected BUY 10 INFY, and exit invocations that die right after the broker acted (a Lambda timeout or
    # a crashed sandbox: no handler code runs, so nothing hands the message back early)
    b = protected_bracket(market, fresh_strategy("exit-died"), timeout_s=STATUS_BOUND_S)
    crash = CrashAfterBroker(1.0, seed=5, functions=["ExitFunction"])
    undo = crash.install(str(market.paper_url))
    try:
        # When the streamer reports the stop crossed, and the exit's invocation dies after deleting the GTT
        stop_hit(market, b.id, "1479.95")
        wait_for("the exit invocation's death", lambda: crash.fired["ExitFunction"] >= 1, STATUS_BOUND_S)
        crash.rate = 0
        assert str(b.gtt_id) not in live_gtts(market) and exit_orders(market, b.id) == []
        # Then the exit is resumed and done long before the ExitQueue would hand its message out again (its
        # visibility timeout): only the claim's delayed watchdog copy can meet a third of it
        attrs = market.client("sqs").get_queue_attributes(
            QueueUrl=market.queue_url("ExitQueue"), AttributeNames=["VisibilityTimeout"]
        )["Attributes"]
        done = wait_for_status(b.id, "CLOSED", timeout_s=int(attrs["VisibilityTimeout"]) / 3)
    finally:
        undo()
    # And exactly one exit order was placed, for the whole position
    assert [(o["status"], o["filled_quantity"]) for o in exit_orders(market, b.id)] == [("COMPLETE", 10)]
    assert net_position(market, "INFY") == 0
    assert done.exit_reason.value == "STOP"


# ---------- an emergency flatten whose invocation died, with a GTT the broker lists late ----------


def test_an_emergency_flatten_that_died_sweeps_a_gtt_the_broker_lists_late_before_the_bracket_closes(market):
    # Given the broker creates the GTT, answers 500, and lists it only after protection's own look (1 s) has given up,
    # but within the broker's listing window (3 s); and emergency flattens that die right after the broker placed
    # them (a Lambda timeout: its sweeps after the flatten never run)
    listed_after_s = 2.9
    rules = [
        {"kind": "http_500_after", "match": {"path": "/gtt/triggers", "method": "POST"}},
        {"kind": "slow_visibility", "match": {"path": "/gtt/triggers", "method": "POST"}, "seconds": listed_after_s},
    ]
    paper(market, "faults", {"rules": rules})
    crash = CrashAfterBroker(1.0, seed=5, functions=["EmergencyExitFunction"])
    undo = crash.install(str(market.paper_url))
    try:
        # When a MARKET BUY 10 INFY bracket fills, protection gives up and the position is flattened
        bracket_id = place(market, fresh_strategy("late-gtt"), price_type="MARKET")
        wait_for("the flatten's invocation to die", lambda: crash.fired["EmergencyExitFunction"] >= 1, 60)
        crash.rate = 0
        closed = wait_for_status(bracket_id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    finally:
        undo()
    assert closed.status.value == "CLOSED" and closed.exit_reason.value == "EMERGENCY", event_types(bracket_id)
    assert net_position(market, "INFY") == 0
    # Then by the time the bracket is closed, the GTT the lost create made is gone: the workflow's retry of the
    # flatten swept once more after the listing window (left alive, it would fire into the flat account)
    wait_for("the broker to show everything it made", lambda: paper(market, "state", method="GET")["hidden"] == 0)
    assert live_gtts(market) == [], gtts(market)
    assert [g["status"] for g in gtts(market)] == ["deleted"]


# ---------- a GTT child the market gapped past ----------


def test_a_gtt_fired_through_a_gap_whose_child_does_not_fill_is_exited_at_market(market):
    # Given a protected BUY 10 INFY: GTT stop trigger 1480 with its LIMIT sell child at 1472.60
    b = protected_bracket(market, fresh_strategy("gap"), timeout_s=STATUS_BOUND_S)
    # When the market gaps through the stop to 1460: the GTT fires, its LIMIT child rests unfilled below the market
    quote(market, "1460", "1459.95", "1460.05")
    gtt = next(g for g in gtts(market) if str(g["id"]) == str(b.gtt_id))
    assert gtt["status"] == "triggered"
    child_id = str(gtt["orders"][0]["result"]["order_result"]["order_id"])
    # And the streamer reports the stop crossed
    stop_hit(market, b.id, "1460")
    # Then the bracket is exited at market and CLOSED, flat at the broker
    done = wait_for_status(b.id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    assert done.status.value == "CLOSED", event_types(b.id)
    assert net_position(market, "INFY") == 0
    # And the child was cancelled before the exit: never a live child and an exit at once, never a reverse position
    child = next(o for o in broker_orders(market, "INFY") if str(o["order_id"]) == child_id)
    assert (child["status"], child["filled_quantity"]) == ("CANCELLED", 0)
    assert [(o["status"], o["filled_quantity"]) for o in exit_orders(market, b.id)] == [("COMPLETE", 10)]
    # And a market that later comes back to the child's price sells nothing more
    quote(market, "1473", "1472.95", "1473.05")
    assert net_position(market, "INFY") == 0
    assert done.exit_reason.value == "STOP"


def test_a_gtt_whose_order_the_exchange_refuses_has_its_position_exited_at_once(market):
    # Given a protected BUY 10 INFY (GTT target trigger 1550), and an exchange that refuses the GTT's order
    b = protected_bracket(market, fresh_strategy("child-refused"), timeout_s=STATUS_BOUND_S)
    paper(market, "faults", {"rules": [{"kind": "reject", "match": {"path": "/gtt/triggers"}}]})
    # When the market runs past the target: the GTT fires, and its LIMIT sell is REJECTED
    quote(market, "1551", "1550.95", "1551.05")
    gtt = next(g for g in gtts(market) if str(g["id"]) == str(b.gtt_id))
    assert gtt["status"] == "triggered"
    (fired,) = [leg["result"]["order_result"] for leg in gtt["orders"] if leg.get("result")]  # the target leg
    child = next(o for o in broker_orders(market, "INFY") if str(o["order_id"]) == str(fired["order_id"]))
    assert child["status"] == "REJECTED"
    # Then, with no scheduled reconciliation on this stack and no stop crossed for the streamer to see, the watcher's
    # sight of the refused order has the bracket exited at market: CLOSED, flat, one exit order
    done = wait_for_status(b.id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    assert done.status.value == "CLOSED", event_types(b.id)
    assert [(o["status"], o["filled_quantity"]) for o in exit_orders(market, b.id)] == [("COMPLETE", 10)]
    assert net_position(market, "INFY") == 0
    assert done.exit_reason.value == "TARGET"


# ---------- a position closed by hand at the broker ----------


def test_a_position_closed_by_hand_is_not_taken_for_the_gtt_fill_and_its_gtt_does_not_outlive_it(
    market, kite: KiteConnect
):
    # Given a protected BUY 10 INFY MIS, its GTT live at the broker
    b = protected_bracket(market, fresh_strategy("by-hand"), timeout_s=STATUS_BOUND_S)
    assert str(b.gtt_id) in live_gtts(market)
    # When the trader sells 10 INFY MIS by hand in the Kite app (an untagged order of the GTT's side and size)
    by_hand = kite.place_order(
        variety="regular",
        exchange="NSE",
        tradingsymbol="INFY",
        transaction_type="SELL",
        quantity=10,
        product="MIS",
        order_type="LIMIT",
        price=1499.95,
    )
    assert kite.order_history(by_hand)[-1]["status"] == "COMPLETE"
    # Then, with no scheduled reconciliation run (this stack has no schedules), the watcher's sight of a fill that no
    # order of ours made on the bracket's position has the bracket reconciled at once: CLOSED as a MANUAL exit at the
    # trader's order, not as its GTT's stop or target
    done = wait_for_status(b.id, "CLOSED", timeout_s=STATUS_BOUND_S)
    assert _seen(by_hand)
    assert done.exit_reason.value == "MANUAL"
    assert done.exit.broker_order_id == by_hand
    # And its GTT no longer lives at the broker: it can never fire into the flat account and open a short
    assert str(b.gtt_id) not in live_gtts(market)
    quote(market, "1479", "1478.95", "1479.05")
    assert net_position(market, "INFY") == 0


def test_a_quick_round_trip_by_hand_is_not_taken_for_a_close_while_its_second_leg_works(market, kite: KiteConnect):
    # Given a protected BUY 10 INFY MIS, its GTT live at the broker
    b = protected_bracket(market, fresh_strategy("round-trip"), timeout_s=STATUS_BOUND_S)
    hand = {"variety": "regular", "exchange": "NSE", "tradingsymbol": "INFY", "quantity": 10, "product": "MIS"}
    # When the trader sells 10 INFY MIS by hand and buys them back at once, the buy filling only seconds later
    sold = kite.place_order(**hand, transaction_type="SELL", order_type="LIMIT", price=1499.95)
    assert kite.order_history(sold)[-1]["status"] == "COMPLETE"
    paper(market, "faults", {"rules": [{"kind": "delay_fill", "match": {"tradingsymbol": "INFY"}, "seconds": 6}]})
    bought = kite.place_order(**hand, transaction_type="BUY", order_type="LIMIT", price=1500.05)
    assert kite.order_history(bought)[-1]["status"] == "OPEN"
    # (the watcher has the bracket reconciled at once on the sell it saw, while the buy still works)
    wait_for("the sell to be seen", lambda: _seen(sold), STATUS_BOUND_S)
    wait_for("the buy back to fill", lambda: net_position(market, "INFY") == 10, STATUS_BOUND_S)
    run_reconcile(market)
    # Then the bracket still holds the position, its GTT live: the flat moment was the trader's round trip, not a
    # close, and taking it for one would have cancelled the stop of a position that is open again
    after = wait_for_status(b.id, "PROTECTED", "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    assert after.status.value == "PROTECTED", event_types(b.id)
    assert str(after.gtt_id) in live_gtts(market)


def test_a_whole_position_closed_by_hand_in_one_order_closes_every_bracket_on_it(market, kite: KiteConnect):
    # Given two protected brackets on INFY MIS (BUY 10 and BUY 4: the broker's net position is 14)
    first = protected_bracket(market, fresh_strategy("bulk-a"), timeout_s=STATUS_BOUND_S)
    second = protected_bracket(market, fresh_strategy("bulk-b"), timeout_s=STATUS_BOUND_S, quantity=4)
    assert net_position(market, "INFY") == 14
    # When the trader exits the whole position in the Kite app: one untagged SELL 14
    by_hand = kite.place_order(
        variety="regular",
        exchange="NSE",
        tradingsymbol="INFY",
        transaction_type="SELL",
        quantity=14,
        product="MIS",
        order_type="LIMIT",
        price=1499.95,
    )
    assert kite.order_history(by_hand)[-1]["status"] == "COMPLETE"
    # Then both brackets are CLOSED MANUAL at that order, each for its own quantity (not left under review while
    # the broker is flat), and neither GTT lives on to fire into the flat account
    for b, quantity in ((first, 10), (second, 4)):
        done = wait_for_status(b.id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
        assert done.status.value == "CLOSED", event_types(b.id)
        assert done.exit_reason.value == "MANUAL"
        assert (done.exit.broker_order_id, done.exit.filled_quantity) == (by_hand, quantity)
        assert str(b.gtt_id) not in live_gtts(market)
    assert net_position(market, "INFY") == 0


def test_a_stop_exit_racing_a_close_by_hand_never_opens_the_reverse_position(market, kite: KiteConnect, monkeypatch):

    monkeypatch.setattr("bracketflow.services.reconcile.checks.EXITING_FLAT_AFTER_S", 0.0)
    # Given a protected BUY 10 INFY MIS
    b = protected_bracket(market, fresh_strategy("race-hand"), timeout_s=STATUS_BOUND_S)
    # When the trader sells 10 by hand and, in the same instant, the streamer reports the stop crossed
    by_hand = kite.place_order(
        variety="regular",
        exchange="NSE",
        tradingsymbol="INFY",
        transaction_type="SELL",
        quantity=10,
        product="MIS",
        order_type="LIMIT",
        price=1499.95,
    )
    stop_hit(market, b.id, "1479.95")
    # Then no exit order of ours sells into the flat account (it would open a short of 10), and reconciliation
    # closes the bracket MANUAL at the trader's order
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        assert net_position(market, "INFY") == 0
        time.sleep(0.5)
    run_reconcile(market)
    done = wait_for_status(b.id, "CLOSED", timeout_s=STATUS_BOUND_S)
    assert done.exit_reason.value == "MANUAL" and done.exit.broker_order_id == by_hand
    assert exit_orders(market, b.id) == [] and net_position(market, "INFY") == 0
    assert str(b.gtt_id) not in live_gtts(market)


def _seen(order_id: str) -> bool:
    """The watcher has acted on (or ruled out) the order's COMPLETE update: it keeps a claim of every update it took."""
    from bracketflow.adapters.dynamo import lifecycle as store

    return "Item" in store.table().get_item(Key=store.order_update_key(order_id, "COMPLETE", 10))


def test_a_gtt_fired_through_a_gap_with_no_stop_seen_by_the_streamer_is_exited_by_reconciliation(market, monkeypatch):

    # the grace (GTT_CHILD_GRACE_S, 3 s) still applies
    monkeypatch.setattr("bracketflow.services.reconcile.checks.GTT_STALL_S", 0.0)
    # Given a protected BUY 10 INFY whose GTT fires through a gap, its LIMIT child resting unfilled below the market
    b = protected_bracket(market, fresh_strategy("gap-unseen"), timeout_s=STATUS_BOUND_S)
    quote(market, "1460", "1459.95", "1460.05")
    gtt = next(g for g in gtts(market) if str(g["id"]) == str(b.gtt_id))
    assert gtt["status"] == "triggered"
    child_id = str(gtt["orders"][0]["result"]["order_result"]["order_id"])
    # And nothing else notices (the streamer dropped the bracket as the GTT fired; no stop-hit message comes)
    time.sleep(4.5)  # past the grace, by the broker's whole-second clock
    # When reconciliation runs
    run_reconcile(market)
    # Then it queues the stop exit, and the exit Lambda cancels the child and exits at market: flat, CLOSED
    done = wait_for_status(b.id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    assert done.status.value == "CLOSED", event_types(b.id)
    assert net_position(market, "INFY") == 0
    child = next(o for o in broker_orders(market, "INFY") if str(o["order_id"]) == child_id)
    assert (child["status"], child["filled_quantity"]) == ("CANCELLED", 0)
    assert [(o["status"], o["filled_quantity"]) for o in exit_orders(market, b.id)] == [("COMPLETE", 10)]
