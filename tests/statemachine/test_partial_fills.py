"""Partial entry fills through the whole local stack: the real bracket workflow (moto's interpreter), the watcher, the
exit Lambda on ExitQueue, and the paper exchange filling only what its book offers (ask_qty) as the broker.

What must hold: the part of an entry that filled is protected within seconds, while the rest still rests at the
broker: a GTT for what filled, resized to each new fill, and the streamer told the new quantity; when the rest is
cancelled (by hand, or at its validity), the GTT matches the final filled quantity; and a bracket that exits while
its entry still rests (the trader's DELETE, a protection that cannot be placed) cancels the rest first, so nothing
is left working at the broker that could open a new, unprotected position later.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from local.stack import LocalStack
from tests.support.stack import (
    BRACKET_STACK_ENV,
    assert_every_version_audited,
    bracket,
    broker_orders,
    event_types,
    events,
    gtts,
    net_position,
    paper,
    place,
    quote,
    reset_market,
    set_aside_open_brackets,
    stack_fixture,
    token_stored,
    wait_for,
    wait_for_execution_end,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "partial-fills-key"

# Entries rest far longer than any wait here: only a fill, a cancel or an exit moves them on.
stack = stack_fixture(API_KEY, relay=True, extra_env={**BRACKET_STACK_ENV, "ENTRY_TIMEOUT_S": "600"})


@pytest.fixture
def market(stack: LocalStack) -> LocalStack:
    """A clean paper exchange that fills only what is offered: 4 INFY at 1500.00."""
    set_aside_open_brackets()
    reset_market(stack)
    paper(stack, "config", {"partial_fills": True})
    quote(stack, "1500", "1499.95", "1500", ask_qty=4, bid_qty=100)
    control_messages(stack)  # start from an empty control queue
    return stack


def offer(stack: LocalStack, quantity: int) -> None:
    """Offer `quantity` more INFY at 1500.00: a resting BUY at 1500 takes them."""
    quote(stack, "1500", "1499.95", "1500", ask_qty=quantity, bid_qty=100)


def delete(stack: LocalStack, bracket_id: str) -> Any:
    return requests.delete(f"{stack.api_url}/api/v1/brackets/{bracket_id}", headers={"X-API-KEY": API_KEY}, timeout=30)


def control_messages(stack: LocalStack) -> list[dict[str, Any]]:
    sqs = stack.client("sqs")
    url = stack.queue_url("StreamerControlQueue")
    out: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages") or []
        if not got:
            return out
        out += [json.loads(m["Body"]) for m in got]
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
        )


def active_gtts(stack: LocalStack) -> list[dict[str, Any]]:
    return [g for g in gtts(stack) if g["status"] == "active"]


def gtt_quantities(stack: LocalStack, gtt_id: str) -> list[int]:
    gtt = next(g for g in gtts(stack) if str(g["id"]) == gtt_id)
    return [int(o["quantity"]) for o in gtt["orders"]]


def entry_order(stack: LocalStack, bracket_id: str) -> dict[str, Any]:
    order_id = bracket(bracket_id).entry.broker_order_id
    return next(o for o in broker_orders(stack, "INFY") if o["order_id"] == order_id)


def watched_quantities(stack: LocalStack, bracket_id: str, seen: list[int]) -> list[int]:
    """The quantities the streamer was told to trail for this bracket so far (seen accumulates across polls)."""
    seen += [int(m["quantity"]) for m in control_messages(stack) if m["bracket_id"] == bracket_id]
    return seen


def protected_while_resting(stack: LocalStack, strategy: str) -> str:
    """A BUY 10 at 1500 that filled 4 and rests for 6, PROTECTED by a GTT of 4 with the workflow following the rest."""
    bracket_id = place(stack, strategy)
    protected = wait_for_status(bracket_id, "PROTECTED")
    assert protected.entry.filled_quantity == 4
    wait_for("the rest wait's token", lambda: token_stored(bracket_id, "entry_rest_task_token"))
    return bracket_id


# ---------- the filled part is protected at once, and the GTT follows the fills ----------


def test_a_partly_filled_entry_is_protected_at_once_and_its_gtt_grows_with_each_fill(market):
    # Given only 4 INFY offered at 1500
    # When a BUY 10 at 1500 is placed: 4 fill now, 6 rest at the exchange
    bracket_id = place(market, "partial-grow")
    # Then the 4 are protected while the rest still rests: a GTT for 4 at the bracket's levels
    protected = wait_for_status(bracket_id, "PROTECTED")
    assert (protected.entry.filled_quantity, protected.entry.status.value) == (4, "SENT_TO_BROKER")
    assert entry_order(market, bracket_id)["status"] == "OPEN"
    assert gtt_quantities(market, protected.gtt_id) == [4, 4]
    # And the streamer was told to trail 4
    seen: list[int] = []
    wait_for("a watch for 4", lambda: 4 in watched_quantities(market, bracket_id, seen))

    # When 3 more are offered and fill
    offer(market, 3)
    # Then the same GTT is resized to 7, and the streamer told to trail 7
    wait_for("the GTT resized to 7", lambda: gtt_quantities(market, protected.gtt_id) == [7, 7])
    wait_for("a watch for 7", lambda: 7 in watched_quantities(market, bracket_id, seen))

    # When the last 3 fill
    offer(market, 3)
    # Then the GTT protects all 10, the entry is complete, and the workflow waits for the exit
    wait_for("the GTT resized to 10", lambda: gtt_quantities(market, protected.gtt_id) == [10, 10])
    wait_for("a watch for 10", lambda: 10 in watched_quantities(market, bracket_id, seen))
    wait_for("the exit wait's token", lambda: token_stored(bracket_id, "exit_task_token"))
    done = bracket(bracket_id)
    assert (done.status.value, done.gtt_id) == ("PROTECTED", protected.gtt_id)
    assert (done.entry.status.value, done.entry.filled_quantity) == ("EXECUTED", 10)
    assert entry_order(market, bracket_id)["status"] == "COMPLETE"
    # with one GTT at the exchange, for the whole position
    assert [str(g["id"]) for g in active_gtts(market)] == [protected.gtt_id]
    assert net_position(market, "INFY") == 10
    types = event_types(bracket_id)
    assert types[:4] == ["BracketRegistered", "EntryPlaced", "EntryFilled", "ProtectionPlaced"]
    assert "EntryPartiallyFilled" in types and "EntryCompleted" in types
    resized = [(e["old_quantity"], e["quantity"]) for e in events(bracket_id) if e["type"] == "ProtectionResized"]
    assert resized[0][0] == 4 and resized[-1][1] == 10
    assert_every_version_audited(bracket_id)


def test_a_rest_cancelled_at_the_broker_leaves_the_gtt_at_the_final_filled_quantity(market, kite):
    # Given a BUY 10 that filled 4, then 3 more, protected by a GTT resized to 7, 3 still resting
    bracket_id = protected_while_resting(market, "partial-cancelled-rest")
    gtt_id = bracket(bracket_id).gtt_id
    offer(market, 3)
    wait_for("the GTT resized to 7", lambda: gtt_quantities(market, gtt_id) == [7, 7])
    # When the rest is cancelled at the broker (by hand, in the trader's app)
    kite.cancel_order(kite.VARIETY_REGULAR, bracket(bracket_id).entry.broker_order_id)
    # Then the entry is final at 7, the GTT still protects exactly those 7, and the workflow waits for the exit
    wait_for("the entry recorded final", lambda: bracket(bracket_id).entry.status.value == "EXECUTED")
    wait_for("the exit wait's token", lambda: token_stored(bracket_id, "exit_task_token"))
    done = bracket(bracket_id)
    assert (done.status.value, done.entry.filled_quantity) == ("PROTECTED", 7)
    assert gtt_quantities(market, gtt_id) == [7, 7]
    assert [str(g["id"]) for g in active_gtts(market)] == [gtt_id]
    assert net_position(market, "INFY") == 7
    cancelled = next(e for e in events(bracket_id) if e["type"] == "EntryRestCancelled")
    assert (cancelled["filled_quantity"], cancelled["cancelled_quantity"]) == (7, 3)
    assert_every_version_audited(bracket_id)


# ---------- an exit while the entry still rests cancels the rest first ----------


def test_deleting_a_bracket_whose_entry_still_rests_cancels_the_rest_and_exits_what_filled(market):
    # Given a BUY 10 that filled 4, PROTECTED by a GTT of 4, 6 still resting at the exchange
    bracket_id = protected_while_resting(market, "partial-delete")
    gtt_id = bracket(bracket_id).gtt_id
    # When the trader deletes it
    answer = delete(market, bracket_id)
    assert answer.status_code == 202, answer.text
    assert answer.json()["data"]["action"] == "EXIT_POSITION"
    # Then it closes with reason MANUAL after one MARKET sell of the 4
    closed = wait_for_status(bracket_id, "CLOSED", timeout_s=60)
    assert (closed.exit_reason.value, closed.exit.filled_quantity) == ("MANUAL", 4)
    sells = [o for o in broker_orders(market, "INFY") if o["transaction_type"] == "SELL"]
    assert [(o["order_type"], o["status"], int(o["quantity"])) for o in sells] == [("MARKET", "COMPLETE", 4)]
    # And nothing is left at the exchange: the rest of the entry cancelled, the GTT deleted, flat
    entry = entry_order(market, bracket_id)
    assert (entry["status"], int(entry["filled_quantity"])) == ("CANCELLED", 4)
    assert active_gtts(market) == [] and all(str(g["id"]) != gtt_id or g["status"] == "deleted" for g in gtts(market))
    assert net_position(market, "INFY") == 0
    # so more INFY offered at 1500 buys nothing
    offer(market, 100)
    assert net_position(market, "INFY") == 0
    types = event_types(bracket_id)
    assert types.index("EntryRestCancelled") < types.index("ExitPlaced")
    assert wait_for_execution_end(market, bracket_id)["status"] == "SUCCEEDED"
    assert_every_version_audited(bracket_id)


def test_a_protection_that_fails_while_the_entry_rests_cancels_the_rest_before_flattening(market):
    # Given the exchange refuses every GTT
    rule = {"kind": "http_500", "match": {"path": "/gtt/triggers", "method": "POST"}, "count": 100}
    paper(market, "faults", {"rules": [rule]})
    # When a BUY 10 at 1500 fills 4 and rests for 6
    bracket_id = place(market, "partial-emergency")
    # Then the rest is cancelled and the 4 are flattened at market (EMERGENCY)
    closed = wait_for_status(bracket_id, "CLOSED", timeout_s=60)
    assert (closed.exit_reason.value, closed.exit.filled_quantity) == ("EMERGENCY", 4)
    entry = entry_order(market, bracket_id)
    assert (entry["status"], int(entry["filled_quantity"])) == ("CANCELLED", 4)
    assert net_position(market, "INFY") == 0
    assert active_gtts(market) == []
    offer(market, 100)
    assert net_position(market, "INFY") == 0
    types = event_types(bracket_id)
    assert types.index("EntryRestCancelled") < types.index("EmergencyExitPlaced")
    assert_every_version_audited(bracket_id)
