"""DELETE /api/v1/brackets/{id} through the whole local stack: the real bracket workflow (moto's interpreter), the
exit Lambda on ExitQueue, the watcher, and the paper exchange (manual market) as the broker.

What must hold: deleting an unfilled entry ends the bracket CANCELLED with the order cancelled at the exchange;
deleting an entry whose partial fill was not seen yet cancels the rest and sells what filled (CLOSED, MANUAL), never
protecting it; deleting
a PROTECTED bracket deletes its GTT and exits it once with reason MANUAL (CLOSED, flat at the exchange).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import requests

from local.stack import LocalStack
from tests.support.stack import (
    BRACKET_STACK_ENV,
    assert_every_version_audited,
    broker_orders,
    event_types,
    events,
    gtts,
    market_fixture,
    net_position,
    paper,
    place,
    quote,
    stack_fixture,
    token_stored,
    wait_for,
    wait_for_execution_end,
    wait_for_status,
)
from tests.support.stack import bracket as bracket_state  # (the tests call the bracket they hold `bracket`)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "bracket-workflow-key"

# The whole stack on free ports; entries wait long enough that only the trader's DELETE ends them.
stack = stack_fixture(API_KEY, relay=True, extra_env={**BRACKET_STACK_ENV, "ENTRY_TIMEOUT_S": "300"})


market = market_fixture(set_aside=False)


def delete(stack: LocalStack, bracket_id: str) -> Any:
    return requests.delete(f"{stack.api_url}/api/v1/brackets/{bracket_id}", headers={"X-API-KEY": API_KEY}, timeout=30)


def test_deleting_an_unfilled_entry_cancels_it_at_the_exchange(market):
    # Given a BUY limit at 1490 resting at the exchange (offered at 1500) and the workflow waiting for its fill
    bracket_id = place(market, "cancel-unfilled", entry_price="1490", sl_price="1470", target_price="1530")
    wait_for_status(bracket_id, "ENTRY_PENDING")
    wait_for("the entry wait's token", lambda: token_stored(bracket_id, "entry_task_token"))
    # When the trader deletes the bracket
    answer = delete(market, bracket_id)
    # Then the answer is 202 with the bracket's status and what will happen
    assert answer.status_code == 202, answer.text
    assert (answer.json()["data"]["status"], answer.json()["data"]["action"]) == ("ENTRY_PENDING", "CANCEL_ENTRY")
    # And the bracket ends CANCELLED with its order cancelled at the exchange, nothing protected
    bracket = wait_for_status(bracket_id, "CANCELLED")
    order = next(o for o in broker_orders(market, "INFY") if o["order_id"] == bracket.entry.broker_order_id)
    assert order["status"] == "CANCELLED"
    assert gtts(market) == []
    assert event_types(bracket_id) == ["BracketRegistered", "EntryPlaced", "CancelRequested", "EntryCancelled"]
    assert events(bracket_id)[-1]["by"] == "user"
    assert wait_for_execution_end(market, bracket_id)["status"] == "SUCCEEDED"
    assert_every_version_audited(bracket_id)


def test_deleting_an_entry_whose_partial_fill_was_not_seen_yet_sells_what_filled_instead_of_protecting_it(market):
    # Given a BUY 10 at 1490 resting at the exchange and the workflow waiting for its fill
    bracket_id = place(market, "cancel-partial", entry_price="1490", sl_price="1470", target_price="1530")
    wait_for_status(bracket_id, "ENTRY_PENDING")
    wait_for("the entry wait's token", lambda: token_stored(bracket_id, "entry_task_token"))
    # And 4 of it filled at the exchange, their update not delivered (yet), so the workflow still waits for the entry
    # (a part filled and seen is protected at once: tests/statemachine/test_partial_fills.py)
    paper(market, "config", {"partial_fills": True})
    paper(market, "faults", {"rules": [{"kind": "drop_order_update", "tradingsymbol": "INFY", "count": 1}]})
    quote(market, "1490", "1489.95", "1490", ask_qty=4, bid_qty=100)
    assert bracket_state(bracket_id).status.value == "ENTRY_PENDING"
    # When the trader deletes the bracket
    assert delete(market, bracket_id).status_code == 202
    # Then the rest is cancelled, the 4 are sold at market, and the bracket closes with reason MANUAL
    bracket = wait_for_status(bracket_id, "CLOSED", timeout_s=60)
    assert bracket.exit_reason.value == "MANUAL" and bracket.exit.filled_quantity == 4
    entry = next(o for o in broker_orders(market, "INFY") if o["order_id"] == bracket.entry.broker_order_id)
    assert (entry["status"], int(entry["filled_quantity"])) == ("CANCELLED", 4)
    assert net_position(market, "INFY") == 0
    assert gtts(market) == []
    types = event_types(bracket_id)
    assert "ProtectionPlaced" not in types and "ProtectionFailed" not in types
    assert [e["reason"] for e in events(bracket_id) if e["type"] in ("ExitRequested", "ExitPlaced")] == ["MANUAL"] * 2
    assert types[-2:] == ["ExitFilled", "BracketClosed"]
    assert wait_for_execution_end(market, bracket_id)["status"] == "SUCCEEDED"
    assert_every_version_audited(bracket_id)


def test_deleting_a_protected_bracket_deletes_its_gtt_and_exits_once(market):
    # Given a bracket PROTECTED by a GTT at the exchange
    bracket_id = place(market, "cancel-protected")
    protected = wait_for_status(bracket_id, "PROTECTED")
    assert [str(g["id"]) for g in gtts(market)] == [protected.gtt_id]
    # When the trader deletes it
    answer = delete(market, bracket_id)
    assert answer.status_code == 202, answer.text
    assert (answer.json()["data"]["status"], answer.json()["data"]["action"]) == ("PROTECTED", "EXIT_POSITION")
    # Then it closes with reason MANUAL after exactly one MARKET exit, flat at the exchange, its GTT deleted
    bracket = wait_for_status(bracket_id, "CLOSED", timeout_s=60)
    assert bracket.exit_reason.value == "MANUAL"
    sells = [o for o in broker_orders(market, "INFY") if o["transaction_type"] == "SELL"]
    assert [(o["order_type"], o["status"], int(o["quantity"])) for o in sells] == [("MARKET", "COMPLETE", 10)]
    assert net_position(market, "INFY") == 0
    assert all(str(g["id"]) != protected.gtt_id or g["status"] == "deleted" for g in gtts(market))
    closed = next(e for e in events(bracket_id) if e["type"] == "BracketClosed")
    assert (closed["reason"], Decimal(closed["pnl"])) == ("MANUAL", Decimal("-0.50"))
    assert [e["reason"] for e in events(bracket_id) if e["type"] == "ExitRequested"] == ["MANUAL"]
    assert wait_for_execution_end(market, bracket_id)["status"] == "SUCCEEDED"
    assert_every_version_audited(bracket_id)
