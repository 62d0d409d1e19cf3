"""Scale-out alerts through the whole local stack (the webhook, the bracket workflow on moto's interpreter, the
watcher, the stop-sync Lambda on StopSyncQueue) with the paper exchange (manual market) as the broker:

- an alert with two targets becomes two brackets, each with its own entry and its own two-leg GTT (the common stop,
  its own target) for its share; its resend is answered with the same brackets and places nothing;
- the first target fills: that share closes TARGET with its own P&L, the other share's stop moves to breakeven (entry
  plus the buffer) in the bracket and in its GTT at the broker, and it then exits once, at that stop;
- a breakeven that would loosen a stop already trailed past it leaves the stop where it is;
- a share whose entry was still working when the first target filled gets the breakeven stop as soon as it is
  protected (when the market is beyond it), in the bracket and at the broker.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import requests

from local.stack import LocalStack
from tests.support.stack import (
    assert_every_version_audited,
    bracket,
    broker_orders,
    event_types,
    events,
    fresh_strategy,
    gtts,
    market_fixture,
    net_position,
    paper,
    quote,
    stack_fixture,
    token_stored,
    wait_for,
    wait_for_execution_end,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "scale-out-key"
STATUS_BOUND_S = 90  # a bound for a busy 2-core machine, not a speed claim

stack = stack_fixture(API_KEY, relay=True)


market = market_fixture()


def alert(stack: LocalStack, body: dict[str, Any]) -> requests.Response:
    """A TradingView alert with the account's API key in its body (as text/plain, the way TradingView sends it)."""
    return requests.post(
        f"{stack.api_url}/tradingview/webhook/bracket",
        data=json.dumps({"apikey": API_KEY, **body}),
        headers={"Content-Type": "text/plain"},
        timeout=30,
    )


def scale_out(strategy: str, **fields: Any) -> dict[str, Any]:
    """BUY 10 INFY at 1500, stop 1480, half at 1520 and half at 1540, breakeven after target 1 plus 1 point."""
    return {
        "symbol": "NSE:INFY",
        "action": "buy",
        "product": "MIS",
        "quantity": 10,
        "price": "1500",
        "sl_price": "1480",
        "targets": [{"price": "1520", "share": 50}, {"price": "1540", "share": 50}],
        "breakeven_after": 1,
        "breakeven_buffer": "1",
        "strategy": strategy,
        **fields,
    }


def protected_shares(stack: LocalStack, strategy: str) -> tuple[Any, Any]:
    """Both shares of a scale_out alert PROTECTED, their workflows waiting for the exit."""
    answer = alert(stack, scale_out(strategy))
    assert answer.status_code == 200, answer.text
    ids = [s["bracket_id"] for s in answer.json()["shares"]]
    first, second = (wait_for_status(i, "PROTECTED", timeout_s=STATUS_BOUND_S) for i in ids)
    for i in ids:
        wait_for("the exit wait's token", lambda i=i: token_stored(i, "exit_task_token"))
    return first, second


def gtt_of(stack: LocalStack, gtt_id: str | None) -> dict[str, Any]:
    return next(g for g in gtts(stack) if str(g["id"]) == gtt_id)


def triggers(stack: LocalStack, gtt_id: str | None) -> list[Decimal]:
    return [Decimal(str(v)) for v in gtt_of(stack, gtt_id)["condition"]["trigger_values"]]


def test_a_two_target_alert_makes_two_brackets_each_with_its_own_gtt_and_its_resend_makes_none(market):
    # Given strategy S
    strategy = fresh_strategy("scale")
    body = scale_out(strategy)
    # When S sends a BUY 10 with targets 1520 (half) and 1540 (half)
    answer = alert(market, body)
    # Then it is answered with two shares: 5 for 1520, 5 for 1540
    assert answer.status_code == 200, answer.text
    placed = answer.json()
    shares = placed["shares"]
    assert [(s["share_index"], s["quantity"], Decimal(str(s["target_price"]))) for s in shares] == [
        (1, 5, Decimal("1520")),
        (2, 5, Decimal("1540")),
    ]
    assert placed["bracket_id"] == shares[0]["bracket_id"] and placed["quantity"] == 10
    # And each share is its own bracket, protected by its own GTT: the common stop, its own target, its quantity
    first, second = (wait_for_status(s["bracket_id"], "PROTECTED", timeout_s=STATUS_BOUND_S) for s in shares)
    assert first.gtt_id != second.gtt_id
    assert triggers(market, first.gtt_id) == [Decimal("1480"), Decimal("1520")]
    assert triggers(market, second.gtt_id) == [Decimal("1480"), Decimal("1540")]
    for share in (first, second):
        assert [int(o["quantity"]) for o in gtt_of(market, share.gtt_id)["orders"]] == [5, 5]
        assert share.entry.filled_quantity == 5
        assert share.group == (first.id, second.id)
    assert net_position(market, "INFY") == 10
    # When TradingView resends the alert
    again = alert(market, body)
    # Then it is recognised as the same two brackets, and nothing more reaches the broker
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True
    assert [s["bracket_id"] for s in again.json()["shares"]] == [first.id, second.id]
    entries = [o for o in broker_orders(market, "INFY") if o["transaction_type"] == "BUY"]
    assert len(entries) == 2
    assert net_position(market, "INFY") == 10


def test_the_first_target_closes_its_share_and_moves_the_other_stop_to_breakeven_at_the_broker(market):
    # Given both shares of S's scale-out protected
    first, second = protected_shares(market, fresh_strategy("scale-be"))
    # When the market trades through target 1 (1520) but not target 2
    quote(market, "1521", "1520.95", "1521")
    # Then share 1 closes at its target, for its own 5, with its own P&L
    done = wait_for_status(first.id, "CLOSED", timeout_s=STATUS_BOUND_S)
    assert done.exit_reason.value == "TARGET" and done.exit.filled_quantity == 5
    closed = next(e for e in events(first.id) if e["type"] == "BracketClosed")
    assert (closed["quantity"], Decimal(str(closed["pnl"]))) == (5, (done.exit.average_price - 1500) * 5)
    # And share 2's stop moves to its entry plus the buffer (1501), recorded with the reason
    moved = wait_for(
        "share 2's breakeven", lambda: next((e for e in events(second.id) if e["type"] == "BreakevenStopSet"), None)
    )
    assert (Decimal(moved["old_stop"]), Decimal(moved["new_stop"])) == (Decimal("1480"), Decimal("1501"))
    assert (moved["after_share"], moved["after_bracket_id"]) == (1, first.id)
    assert bracket(second.id).stop_price == Decimal("1501")
    # And its GTT at the broker holds the breakeven stop, its target unchanged
    wait_for("the GTT's breakeven stop", lambda: triggers(market, second.gtt_id) == [Decimal("1501"), Decimal("1540")])
    # When the market falls back to the entry
    quote(market, "1500.50", "1500.45", "1500.50")
    # Then share 2 exits once, at its breakeven stop, and the account is flat
    out = wait_for_status(second.id, "CLOSED", timeout_s=STATUS_BOUND_S)
    assert out.exit_reason.value == "TRAIL_STOP" and out.exit.filled_quantity == 5
    assert out.exit.average_price >= Decimal("1500")
    sells = [o for o in broker_orders(market, "INFY") if o["transaction_type"] == "SELL" and o["status"] == "COMPLETE"]
    assert sorted(o["order_id"] for o in sells) == sorted([done.exit.broker_order_id, out.exit.broker_order_id])
    assert net_position(market, "INFY") == 0
    assert event_types(second.id).count("BracketClosed") == 1
    for share in (first.id, second.id):
        assert_every_version_audited(share)


def test_a_breakeven_that_would_loosen_a_trailed_stop_leaves_it(market):
    # Given both shares protected, and share 2's stop trailed to 1510 (stored and synced to its GTT, as the streamer
    # does it) while the market is at 1515
    first, second = protected_shares(market, fresh_strategy("scale-trail"))
    quote(market, "1515", "1514.95", "1515")
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from streamer.stops import WRITTEN, persist_stop

    assert persist_stop(BracketRepository(), second.id, Decimal("1510"), is_long=True) == WRITTEN
    sync = {"bracket_id": second.id, "stop_price": "1510", "at": datetime.now(UTC).isoformat()}
    market.client("sqs").send_message(QueueUrl=market.queue_url("StopSyncQueue"), MessageBody=json.dumps(sync))
    wait_for("the GTT's trailed stop", lambda: triggers(market, second.gtt_id) == [Decimal("1510"), Decimal("1540")])
    # When target 1 fills and share 1's workflow has finished (its close applies the breakeven rule)
    quote(market, "1521", "1520.95", "1521")
    assert wait_for_status(first.id, "CLOSED", timeout_s=STATUS_BOUND_S).exit_reason.value == "TARGET"
    assert wait_for_execution_end(market, first.id)["status"] == "SUCCEEDED"
    # Then share 2 keeps its trailed stop, in the bracket and at the broker: a breakeven (1501) never loosens it
    assert "BreakevenStopSet" not in event_types(second.id)
    assert bracket(second.id).stop_price == Decimal("1510")
    assert triggers(market, second.gtt_id) == [Decimal("1510"), Decimal("1540")]
    assert bracket(second.id).status.value == "PROTECTED"


def entry_orders_in_arrival_order(stack: LocalStack, ids: list[str]) -> list[str]:
    """The shares whose entries rest at the paper exchange, in the order it received them (its order ids count up)."""
    tags = {_entry_tag(i): i for i in ids}
    resting = [o for o in broker_orders(stack, "INFY") if o.get("tag") in tags and o["status"] == "OPEN"]
    return [tags[o["tag"]] for o in sorted(resting, key=lambda o: o["order_id"])]


def test_a_share_protected_after_the_first_target_gets_the_breakeven_stop_at_once(market):
    # Given S's scale-out whose two entries rest at 1500 while INFY is offered at 1500.10
    quote(market, "1500.10", "1500.05", "1500.10")
    answer = alert(market, scale_out(fresh_strategy("scale-late")))
    assert answer.status_code == 200, answer.text
    first_id, second_id = (s["bracket_id"] for s in answer.json()["shares"])
    arrived = wait_for(
        "both entries resting", lambda: (o := entry_orders_in_arrival_order(market, [first_id, second_id]))[1:] and o
    )
    # And the exchange will fill share 1's entry when it is offered at 1500, but hold share 2's for a few seconds
    holds = [
        {"kind": "delay_fill", "match": {"tradingsymbol": "INFY"}, "seconds": 0 if i == first_id else 5}
        for i in arrived
    ]
    paper(market, "faults", {"rules": holds})
    # When INFY is offered at 1500 for a moment, and then trades at 1510: share 1 fills, share 2's entry still works
    quote(market, "1500", "1499.95", "1500")
    quote(market, "1510", "1509.95", "1510")
    first = wait_for_status(first_id, "PROTECTED", timeout_s=STATUS_BOUND_S)
    wait_for("share 1's exit wait", lambda: token_stored(first_id, "exit_task_token"))
    assert bracket(second_id).status.value == "ENTRY_PENDING"
    # And the market trades through target 1 (1520): share 1 closes at its target while share 2 is not protected
    quote(market, "1521", "1520.95", "1521")
    assert wait_for_status(first_id, "CLOSED", timeout_s=STATUS_BOUND_S).exit_reason.value == "TARGET"
    assert wait_for_execution_end(market, first_id)["status"] == "SUCCEEDED"
    assert bracket(second_id).status.value == "ENTRY_PENDING" and "BreakevenStopSet" not in event_types(second_id)

    # When share 2's entry fills at 1500 later, and INFY trades at 1510 when its protection is placed
    def fills_at_1500() -> bool:
        quote(market, "1500", "1499.95", "1500")
        filled = any(
            o["status"] == "COMPLETE" for o in broker_orders(market, "INFY") if o.get("tag") == _entry_tag(second_id)
        )
        quote(market, "1510", "1509.95", "1510")
        return filled

    wait_for("share 2's entry to fill", fills_at_1500)
    second = wait_for_status(second_id, "PROTECTED", timeout_s=STATUS_BOUND_S)
    # Then its stop moves to its entry plus the buffer (1501) at once, after target 1, in the bracket and at the broker
    moved = wait_for(
        "share 2's breakeven", lambda: next((e for e in events(second_id) if e["type"] == "BreakevenStopSet"), None)
    )
    assert (Decimal(moved["old_stop"]), Decimal(moved["new_stop"])) == (Decimal("1480"), Decimal("1501"))
    assert (moved["after_share"], moved["after_bracket_id"]) == (1, first.id)
    assert bracket(second_id).stop_price == Decimal("1501")
    wait_for("the GTT's breakeven stop", lambda: triggers(market, second.gtt_id) == [Decimal("1501"), Decimal("1540")])
    # When the market falls back to the entry, share 2 exits once, at its breakeven stop, and the account is flat
    quote(market, "1500.50", "1500.45", "1500.50")
    out = wait_for_status(second_id, "CLOSED", timeout_s=STATUS_BOUND_S)
    assert out.exit_reason.value == "TRAIL_STOP" and out.exit.filled_quantity == 5
    assert net_position(market, "INFY") == 0
    assert event_types(second_id).count("BracketClosed") == 1
    for share in (first_id, second_id):
        assert_every_version_audited(share)


def _entry_tag(bracket_id: str) -> str:
    from bracketflow.domain.ids import order_tag

    return order_tag(bracket_id, "ENTRY")
