"""A price breakeven on the local stack: a plain trailing bracket placed through the API with breakeven_at is filled
and protected at the paper exchange; when the price reaches the trigger the streamer moves its stop to the entry plus
the buffer (stored with its BreakevenStopSet event, and at the paper exchange's GTT through the stop-sync Lambda);
when the price falls back the bracket exits once, at the breakeven stop, and the account is flat."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import requests

from local.stack import LocalStack
from tests.support.stack import bracket, event_types, events, gtts, net_position, quote, wait_for

BOUND_S = 90  # an upper bound for a slow machine, never a timing assertion


def triggers(stack: LocalStack, gtt_id: str | None) -> list[Decimal]:
    gtt = next(g for g in gtts(stack) if str(g["id"]) == str(gtt_id))
    return [Decimal(str(v)) for v in gtt["condition"]["trigger_values"]]


def breakeven_event(bracket_id: str) -> dict[str, Any] | None:
    return next((e for e in events(bracket_id) if e["type"] == "BreakevenStopSet"), None)


def test_the_stop_moves_to_breakeven_at_the_price_and_the_bracket_exits_there_once(manual_market, dev_api_key):
    stack = manual_market
    flat_before = net_position(stack, "INFY")
    # Given a BUY 2 INFY MIS at 1500, stop 1480, target 1600, a 2% trail, and breakeven at 1520 with 1 point of costs
    placed = requests.post(
        f"{stack.api_url}/api/v1/placebracketorder",
        json={
            "symbol": "INFY",
            "exchange": "NSE",
            "product": "MIS",
            "action": "BUY",
            "quantity": 2,
            "entry_price": "1500",
            "sl_price": "1480",
            "target_price": "1600",
            "trail": {"type": "percent", "value": "2"},
            "breakeven_at": "1520",
            "breakeven_buffer": "1",
            "strategy": "breakeven-price-e2e",
        },
        headers={"X-API-KEY": dev_api_key},
        timeout=30,
    )
    assert placed.status_code == 200, placed.text
    assert Decimal(str(placed.json()["breakeven_at"])) == Decimal("1520")
    bracket_id = placed.json()["bracket_id"]
    protected = wait_for(
        "PROTECTED", lambda: (b := bracket(bracket_id)) and b.status.value == "PROTECTED" and b, timeout_s=BOUND_S
    )
    assert triggers(stack, protected.gtt_id) == [Decimal("1480"), Decimal("1600")]

    # When INFY trades and is bid at 1520 (re-quoted until the streamer, which may still be picking the bracket up, has
    # seen it; its first packets after subscribing may come without depth, and then the reference price is the LTP)
    def reached() -> dict[str, Any] | None:
        quote(stack, "1520", "1520", "1520.05")
        return breakeven_event(bracket_id)

    moved = wait_for("the streamer's breakeven", reached, timeout_s=BOUND_S)
    # Then the stop moved once from 1480 to the entry plus the buffer, 1501 (the 2% trail alone would be at 1489.60)
    assert (Decimal(moved["old_stop"]), Decimal(moved["new_stop"])) == (Decimal("1480"), Decimal("1501"))
    assert (Decimal(moved["breakeven_at"]), Decimal(moved["price"]), Decimal(moved["buffer"])) == (
        Decimal("1520"),
        Decimal("1520"),
        Decimal("1"),
    )
    assert bracket(bracket_id).stop_price == Decimal("1501")
    # And the GTT at the paper exchange holds the breakeven stop, its target unchanged
    wait_for(
        "the GTT's breakeven stop",
        lambda: triggers(stack, protected.gtt_id) == [Decimal("1501"), Decimal("1600")],
        timeout_s=BOUND_S,
    )

    # When the price falls back to 1500.50, through the breakeven stop
    quote(stack, "1500.50", "1500.45", "1500.50")
    # Then the bracket exits once, at its breakeven stop, and the account's INFY position is back where it was
    closed = wait_for(
        "CLOSED", lambda: (b := bracket(bracket_id)) and b.status.value == "CLOSED" and b, timeout_s=BOUND_S
    )
    assert closed.exit_reason.value == "TRAIL_STOP" and closed.exit.filled_quantity == 2
    assert event_types(bracket_id).count("BracketClosed") == 1
    assert event_types(bracket_id).count("BreakevenStopSet") == 1
    wait_for("the account flat again", lambda: net_position(stack, "INFY") == flat_before, timeout_s=BOUND_S)
