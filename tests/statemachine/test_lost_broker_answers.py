"""Answers the broker loses, through the whole local stack against the paper exchange: a placement or GTT create it
carried out but answered 500, with the result showing in its books only seconds later, or its GTT service down right
after acting. Whatever retries (the adapter, the workflow's Retry, reconciliation), the broker ends with one entry and
one GTT per bracket, and a bracket flattened because protection failed leaves no GTT behind.
"""

from __future__ import annotations

import pytest
import requests

from bracketflow.domain.ids import order_tag
from local.chaos import CrashAfterBroker
from local.stack import LocalStack
from tests.support.stack import (
    BRACKET_STACK_ENV,
    KITE_HEADERS,
    bracket,
    broker_orders,
    event_types,
    gtts,
    market_fixture,
    net_position,
    paper,
    place,
    quote,
    run_reconcile,
    stack_fixture,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "lost-answers-key"
STATUS_BOUND_S = 90  # a bound for a busy 2-core machine, not a speed claim
# The broker shows a new order or GTT this late (under the window the adapter looks over, BROKER_LOOKUP_WINDOW_S).
SLOW_S = 2
# A GTT the broker lists this late after answering its create with the id.
LISTED_LATE_S = 20

# PlaceProtection's own (shorter) window too: these tests are about adopting what a lost answer made, not about how
# soon a failing protection flattens (test_bracket_workflow.py, bench_emergency_exit.py)
stack = stack_fixture(
    API_KEY,
    relay=True,
    extra_env={
        **BRACKET_STACK_ENV,
        "BROKER_LOOKUP_WINDOW_S": "4",
        "PROTECTION_LOOKUP_WINDOW_S": "4",
        # longer than a reconcile run takes on a loaded machine (the default is 10 s)
        "GTT_VISIBILITY_GRACE_S": str(LISTED_LATE_S * 2),
    },
)

LEVELS = {"price_type": "MARKET", "sl_price": "1485", "target_price": "1530"}


market = market_fixture()


def lost_and_late(path: str, seconds: float = SLOW_S) -> list[dict]:
    """The broker carries out one POST on `path`, answers it 500, and shows what it made only `seconds` later."""
    return [
        {"kind": "http_500_after", "match": {"path": path, "method": "POST"}},
        {"kind": "slow_visibility", "match": {"path": path, "method": "POST"}, "seconds": seconds},
    ]


def fired(stack: LocalStack, kind: str) -> int:
    return sum(r["fired"] for r in paper(stack, "faults", method="GET")["rules"] if r["kind"] == kind)


def wait_for_the_books(stack: LocalStack) -> None:
    """Until the broker's books show every order and GTT it made (nothing left hidden by slow_visibility)."""
    wait_for("the broker to show everything it made", lambda: paper(stack, "state", method="GET")["hidden"] == 0)


def active_gtts(stack: LocalStack) -> list[str]:
    return sorted(str(g["id"]) for g in gtts(stack) if g["status"] == "active")


def test_a_gtt_create_answered_500_and_listed_late_is_adopted_not_made_twice(market):
    # Given the broker creates the first GTT, answers 500, and lists it only two seconds later
    paper(market, "faults", {"rules": lost_and_late("/gtt/triggers")})
    # When a MARKET BUY 10 INFY bracket fills and is protected
    bracket_id = place(market, **LEVELS)
    protected = wait_for_status(bracket_id, "PROTECTED", timeout_s=STATUS_BOUND_S)
    assert fired(market, "http_500_after") == 1 and fired(market, "slow_visibility") == 1
    # Then, once the broker shows everything, one GTT stands for the position, and it is the bracket's
    wait_for_the_books(market)
    assert active_gtts(market) == [protected.gtt_id]
    assert len(gtts(market)) == 1
    assert net_position(market, "INFY") == 10


def test_a_reprotect_whose_create_answer_was_lost_makes_one_gtt(market, kite):
    # Given a protected bracket whose GTT someone deleted at the broker
    bracket_id = place(market, **LEVELS)
    first = wait_for_status(bracket_id, "PROTECTED", timeout_s=STATUS_BOUND_S)
    kite.delete_gtt(int(first.gtt_id))
    # When reconciliation re-protects it and the broker loses the create's answer and lists the GTT late
    paper(market, "faults", {"rules": lost_and_late("/gtt/triggers")})
    summary = run_reconcile(market)
    assert summary["repairs"].get("REPROTECTED") == 1, summary
    # Then one new GTT stands for the position, the one the bracket records
    after = wait_for_status(bracket_id, "PROTECTED")
    wait_for_the_books(market)
    assert active_gtts(market) == [after.gtt_id]
    assert after.gtt_id != first.gtt_id


def test_a_gtt_the_broker_lists_late_is_not_made_again_by_reconciliation(market):
    # Given the broker answers the GTT's create with its id but leaves it out of its GTT book for a while
    rule = {"kind": "slow_visibility", "match": {"path": "/gtt/triggers", "method": "POST"}, "seconds": LISTED_LATE_S}
    paper(market, "faults", {"rules": [rule]})
    bracket_id = place(market, **LEVELS)
    protected = wait_for_status(bracket_id, "PROTECTED", timeout_s=STATUS_BOUND_S)
    assert fired(market, "slow_visibility") == 1 and protected.gtt_id not in active_gtts(market)
    # When reconciliation runs before the broker lists it
    summary = run_reconcile(market)
    # Then it makes no second GTT (both would fire: two exits, a reverse position), and once the broker shows it,
    # one GTT stands for the position, the bracket's own
    assert not summary["repairs"], summary
    wait_for_the_books(market)
    assert active_gtts(market) == [protected.gtt_id]
    assert bracket(bracket_id).status.value == "PROTECTED"


def test_an_entry_answered_500_and_listed_late_is_placed_once(market):
    # Given the broker places the entry, answers 500, and shows it in its order book only two seconds later
    paper(market, "faults", {"rules": lost_and_late("/orders")})
    # When a MARKET BUY 10 INFY bracket is placed
    bracket_id = place(market, **LEVELS)
    wait_for_status(bracket_id, "PROTECTED", timeout_s=STATUS_BOUND_S)
    # Then the broker has one entry with the bracket's tag, and a position of 10, not 20
    wait_for_the_books(market)
    entries = [o for o in broker_orders(market, "INFY") if o["tag"] == order_tag(bracket_id, "ENTRY")]
    assert len(entries) == 1, entries
    assert net_position(market, "INFY") == 10
    assert len(active_gtts(market)) == 1


def test_an_entry_whose_placing_invocation_died_and_that_the_broker_lists_late_is_placed_once(market):
    # Given a broker that shows a new order in its book only two seconds late, and entry placements whose invocation
    # dies right after the broker placed the order (a Lambda timeout: the workflow's retry starts a second later)
    rule = {"kind": "slow_visibility", "match": {"path": "/orders", "method": "POST"}, "seconds": SLOW_S}
    paper(market, "faults", {"rules": [rule]})
    crash = CrashAfterBroker(1.0, seed=3, functions=["PlaceEntryFunction"])
    undo = crash.install(str(market.paper_url))
    try:
        # When a BUY 10 INFY LIMIT entry below the market (it rests, so no fill tells the watcher about it) is placed
        bracket_id = place(market, price_type="LIMIT", entry_price="1490", sl_price="1470", target_price="1530")
        wait_for("the placing invocation's death", lambda: crash.fired["PlaceEntryFunction"] >= 1, STATUS_BOUND_S)
        crash.rate = 0
        pending = wait_for_status(bracket_id, "ENTRY_PENDING", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    finally:
        undo()
    # Then the retry found the order the dead attempt placed, once the broker listed it, and placed no second one
    wait_for_the_books(market)
    entries = [o for o in broker_orders(market, "INFY") if o["tag"] == order_tag(bracket_id, "ENTRY")]
    assert len(entries) == 1, entries
    assert pending.status.value == "ENTRY_PENDING" and pending.entry.broker_order_id == entries[0]["order_id"]


def test_an_emergency_exit_deletes_the_gtt_a_failed_protection_left_at_the_broker(market):
    # Given the broker creates the GTT, answers 500, and its GTT service is then down until protection gives up
    rule = {"kind": "outage_after", "match": {"path": "/gtt/triggers", "method": "POST"}, "seconds": 15}
    paper(market, "faults", {"rules": [rule]})
    # When a MARKET BUY 10 INFY bracket fills, protection fails and the position is flattened
    bracket_id = place(market, **LEVELS)
    closed = wait_for_status(bracket_id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    assert closed.status.value == "CLOSED" and closed.exit_reason.value == "EMERGENCY", event_types(bracket_id)
    assert net_position(market, "INFY") == 0
    # Then no GTT outlives the bracket: the one the lost create made is deleted, so it can never fire into the
    # flat account (the bound covers the GTT service's outage)
    assert fired(market, "outage_after") == 1
    wait_for("the GTT service to answer again", lambda: _listable(market))
    wait_for("no live GTT at the broker", lambda: active_gtts(market) == [], timeout_s=STATUS_BOUND_S)
    assert [g["status"] for g in gtts(market)] == ["deleted"]


def test_a_gtt_of_a_failed_protection_that_fired_while_unreadable_is_not_flattened_again(market):
    # Given the broker creates the GTT, answers 500, and its GTT service is then down until protection gives up
    rule = {"kind": "outage_after", "match": {"path": "/gtt/triggers", "method": "POST"}, "seconds": 15}
    paper(market, "faults", {"rules": [rule]})
    bracket_id = place(market, **LEVELS)
    wait_for("the GTT create the broker carried out", lambda: fired(market, "outage_after") == 1)
    # and the market then runs past the target (1530): that GTT fires and its order closes the position
    quote(market, "1535", "1534.95", "1535")
    wait_for("the GTT's order to close the position", lambda: net_position(market, "INFY") == 0)
    # When protection fails and the emergency path runs while the GTTs still cannot be read
    wait_for("the GTT service to answer again", lambda: _listable(market), timeout_s=STATUS_BOUND_S)
    wait_for_status(bracket_id, "PROTECTED", "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    run_reconcile(market)
    # Then it flattens nothing (a flatten too would have opened a short 10): the GTT's order is the exit
    closed = wait_for_status(bracket_id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    exits = [o for o in broker_orders(market, "INFY") if o["tag"] == order_tag(bracket_id, "EXIT")]
    assert exits == [] and net_position(market, "INFY") == 0, event_types(bracket_id)
    assert closed.status.value == "CLOSED" and closed.exit_reason.value == "TARGET", event_types(bracket_id)


def _listable(stack: LocalStack) -> bool:
    return requests.get(f"{stack.paper_url}/gtt/triggers", headers=KITE_HEADERS, timeout=10).status_code == 200
