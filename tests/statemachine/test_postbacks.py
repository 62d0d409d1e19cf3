"""Kite sends every order update twice: on the ticker's websocket and as a postback to the app's URL. The local stack
gets both from the paper exchange, so an update the ticker loses still reaches the watcher, at once, not at the next
reconciliation: a fill is protected in seconds even when its ticker update never comes."""

from __future__ import annotations

import pytest

from tests.support.stack import (
    bracket,
    fresh_strategy,
    market_fixture,
    paper,
    place,
    quote,
    stack_fixture,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "postbacks-key"
STATUS_BOUND_S = 90  # a bound for a busy 2-core machine, not a speed claim

stack = stack_fixture(API_KEY, relay=True, postbacks=True)


market = market_fixture()


def test_a_fill_whose_ticker_update_is_lost_is_protected_from_its_postback(market):
    # Given every ticker order update for INFY lost (the websocket's copy), and no scheduled reconciliation
    lost = {"kind": "drop_order_update", "match": {"tradingsymbol": "INFY"}, "count": 1000}
    paper(market, "faults", {"rules": [lost]})
    # And a BUY 10 INFY resting at 1490 below the market
    bracket_id = place(market, fresh_strategy("postback"), entry_price="1490", sl_price="1470", target_price="1540")
    wait_for("the entry resting", lambda: bracket(bracket_id).entry.broker_order_id, STATUS_BOUND_S)
    # When the market comes down through it and it fills
    quote(market, "1489", "1488.95", "1489")
    # Then the fill reaches the watcher as a postback and the position is protected
    done = wait_for_status(bracket_id, "PROTECTED", timeout_s=STATUS_BOUND_S)
    assert done.entry.filled_quantity == 10 and done.gtt_id
