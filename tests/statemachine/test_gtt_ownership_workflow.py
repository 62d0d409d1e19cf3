"""Two identical brackets through the whole local stack (the real bracket workflow, the paper exchange) each end up
protected by a GTT of their own, and exiting one leaves the other's stop at the broker.

The bug this guards: two alerts of one strategy on INFY (MARKET, same stop and target, filled at the same price) ask
for identical GTTs; the second bracket's protection found the first's GTT "already at the broker" and adopted it, so
both were PROTECTED by one gtt_id and the first bracket's exit cancelled the only stop either position had.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from local.stack import LocalStack
from tests.support.stack import (
    BRACKET_STACK_ENV,
    gtts,
    market_fixture,
    net_position,
    place,
    stack_fixture,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "gtt-ownership-key"
STATUS_BOUND_S = 90  # a bound for a busy 2-core machine, not a speed claim

stack = stack_fixture(API_KEY, relay=True, extra_env=BRACKET_STACK_ENV)


market = market_fixture()


def delete(stack: LocalStack, bracket_id: str) -> Any:
    return requests.delete(f"{stack.api_url}/api/v1/brackets/{bracket_id}", headers={"X-API-KEY": API_KEY}, timeout=30)


def test_two_identical_market_brackets_are_each_protected_by_their_own_gtt(market):
    # Given a MARKET BUY 10 INFY bracket protected by its GTT
    levels = {"price_type": "MARKET", "sl_price": "1485", "target_price": "1530"}
    first = place(market, **levels)
    one = wait_for_status(first, "PROTECTED", timeout_s=STATUS_BOUND_S)
    # When a second bracket of the account with the same stop and target fills at the same price and is protected
    second = place(market, **levels)
    two = wait_for_status(second, "PROTECTED", timeout_s=STATUS_BOUND_S)
    # Then each is protected by its own GTT, both live at the broker, for a position of 20
    assert one.entry.average_price == two.entry.average_price
    assert one.gtt_id != two.gtt_id
    live = {str(g["id"]) for g in gtts(market) if g["status"] == "active"}
    assert live == {one.gtt_id, two.gtt_id}
    assert net_position(market, "INFY") == 20
    # And when the trader exits the first, its GTT goes and the second's stays at the broker, still protecting 10
    assert delete(market, first).status_code == 202
    wait_for_status(first, "CLOSED", timeout_s=STATUS_BOUND_S)
    assert net_position(market, "INFY") == 10
    live = {str(g["id"]) for g in gtts(market) if g["status"] == "active"}
    assert live == {two.gtt_id}
    assert wait_for_status(second, "PROTECTED").gtt_id == two.gtt_id
