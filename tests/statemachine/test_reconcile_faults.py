"""Reconciliation recovers an order update lost on purpose while the watcher's feed IS running.

The local stack runs with the order-update relay (paper ticker -> OrderEventsQueue, as the streamer would), so every
update reaches the watcher — except the one the paper exchange's `drop_order_update` fault swallows. The next
reconcile run must then complete what that update would have: the bracket goes on exactly as if it had arrived.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
import requests

from local.stack import LocalStack
from tests.support.stack import (
    bracket,
    events,
    market_fixture,
    paper,
    place,
    quote,
    run_reconcile,
    stack_fixture,
    token_stored,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "reconcile-faults-key"
STATUS_BOUND_S = 90  # how long a bracket may take to reach a status: a bound for a busy machine, not a speed claim

# the relay runs: every order update reaches the watcher, except those the exchange drops on purpose
stack = stack_fixture(API_KEY, relay=True)


market = market_fixture()


def dropped(stack: LocalStack) -> int:
    state = requests.get(f"{stack.paper_url}/_paper/state", timeout=10).json()["data"]
    return sum(r["fired"] for r in state["faults"] if r["kind"] == "drop_order_update")


def test_an_entry_fill_update_dropped_by_the_exchange_is_recovered_by_reconciliation(market, kite):
    # Given a bracket whose entry rests below the market, its workflow waiting on the fill, the watcher's feed up
    bracket_id = place(market, entry_price="1490", sl_price="1470", target_price="1540")
    wait_for_status(bracket_id, "ENTRY_PENDING", timeout_s=STATUS_BOUND_S)
    wait_for("the entry wait's token", lambda: token_stored(bracket_id, "entry_task_token"))
    # (the task that stored the token looks at the broker once more right after; let that look finish first, or it
    # — not reconciliation — would be what sees the fill)
    time.sleep(1.5)
    # When the exchange fills it but drops the fill's order update (and only INFY's: the feed itself stays up)
    paper(market, "faults", {"rules": [{"kind": "drop_order_update", "match": {"tradingsymbol": "INFY"}, "count": 5}]})
    quote(market, "1490", "1489.95", "1490")
    order_id = bracket(bracket_id).entry.broker_order_id
    assert kite.order_history(order_id)[-1]["status"] == "COMPLETE"
    assert dropped(market) >= 1
    paper(market, "faults", {"rules": []})
    assert bracket(bracket_id).status.value == "ENTRY_PENDING", events(bracket_id)  # nothing else could tell it
    # And reconciliation runs
    summary = run_reconcile(market)
    # Then it recorded the fill and the workflow went on to protect the position
    assert summary["repairs"].get("MISSED_ENTRY_UPDATE") == 1
    done = wait_for_status(bracket_id, "PROTECTED", timeout_s=STATUS_BOUND_S)
    assert done.entry.filled_quantity == 10 and done.entry.average_price == Decimal("1490")
    types = [e["type"] for e in events(bracket_id)]
    assert types.index("EntryFilled") < types.index("Reconciled") < types.index("ProtectionPlaced")


def test_a_gtt_child_fill_update_dropped_is_recovered_and_the_bracket_closes_at_its_target(market, kite):
    # Given a protected bracket, the watcher's feed up
    bracket_id = place(market)
    b = wait_for_status(bracket_id, "PROTECTED", timeout_s=STATUS_BOUND_S)
    wait_for("the exit wait's token", lambda: token_stored(bracket_id, "exit_task_token"))
    time.sleep(1.5)  # (as above: the exit wait's own look at the broker finishes first)
    # When the market reaches the target, the GTT fires and its child fills, but the child's updates are dropped
    paper(market, "faults", {"rules": [{"kind": "drop_order_update", "match": {"tradingsymbol": "INFY"}, "count": 5}]})
    quote(market, "1551", "1550.95", "1551")
    assert kite.get_gtt(int(b.gtt_id))["status"] == "triggered"
    assert dropped(market) >= 1
    paper(market, "faults", {"rules": []})
    assert bracket(bracket_id).status.value == "PROTECTED"
    summary = run_reconcile(market)
    # Then reconciliation closes it at the target with the broker's fill
    done = wait_for_status(bracket_id, "CLOSED", timeout_s=STATUS_BOUND_S)
    assert done.exit_reason.value == "TARGET" and done.exit.average_price >= Decimal("1550")
    assert summary["repairs"].get("GTT_TRIGGERED") == 1
