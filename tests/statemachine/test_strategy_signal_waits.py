"""The waits inside a strategy's signals, on the local stack with the paper exchange (manual market) as the broker:

- a reverse whose old position does not close within REVERSE_WAIT_S (its exit's fill held at the exchange) gives up:
  the new entry is cancelled unsent, never both directions at once, and the old bracket still closes;
- an exit alert that meets a bracket whose GTT is being placed (ENTRY_FILLED) waits for the protection and exits it
  once it is PROTECTED, once, instead of being taken for someone else's exit.

Its own stack: REVERSE_WAIT_S is short here (6 s), and the broker's answers are waited for longer (BROKER_TIMEOUT_S
8 s), so a GTT whose answer the exchange holds back keeps the bracket ENTRY_FILLED long enough to be met by an alert.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from bracketflow.domain.ids import order_tag
from local.stack import LocalStack
from tests.support.stack import (
    BRACKET_STACK_ENV,
    bracket,
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
    stack_fixture,
    token_stored,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "strategy-signal-waits-key"
STATUS_BOUND_S = 90  # a bound for a busy 2-core machine, not a speed claim
REVERSE_WAIT_S = 6

stack = stack_fixture(
    API_KEY,
    relay=True,
    extra_env={
        **BRACKET_STACK_ENV,
        "ENTRY_TIMEOUT_S": "300",
        "REVERSE_WAIT_S": str(REVERSE_WAIT_S),
        "BROKER_TIMEOUT_S": "8",
    },
)


market = market_fixture()


def alert(stack: LocalStack, body: dict[str, Any]) -> requests.Response:
    return requests.post(
        f"{stack.api_url}/tradingview/webhook/bracket",
        data=json.dumps({"apikey": API_KEY, **body}),
        headers={"Content-Type": "text/plain"},
        timeout=30,
    )


def orders_tagged(stack: LocalStack, bracket_id: str, role: str) -> list[dict[str, Any]]:
    tag = order_tag(bracket_id, role)
    return [o for o in broker_orders(stack, "INFY") if o["tag"] == tag]


def test_a_reverse_whose_old_position_stays_open_gives_up_and_never_sends_the_new_entry(market):
    # Given strategy S long 10 INFY, protected, and an exchange that holds the next INFY fill for 30 s
    strategy = fresh_strategy("rev-wait")
    old = protected_bracket(market, strategy, timeout_s=STATUS_BOUND_S)
    paper(market, "faults", {"rules": [{"kind": "delay_fill", "match": {"tradingsymbol": "INFY"}, "seconds": 30}]})
    # When S sends a SELL with reverse: true
    answer = alert(
        market,
        {
            "action": "sell",
            "symbol": "NSE:INFY",
            "product": "MIS",
            "quantity": 10,
            "entry_price": "1499.95",
            "sl_price": "1520",
            "target_price": "1450",
            "strategy": strategy,
            "reverse": True,
        },
    )
    assert answer.status_code == 200, answer.text
    new_id = answer.json()["bracket_id"]
    assert answer.json()["reverse_of"] == [old.id]
    # Then the old bracket's exit is at the exchange, unfilled, and the new one gives up after REVERSE_WAIT_S:
    # cancelled with its entry never sent, saying why
    given_up = wait_for_status(new_id, "CANCELLED", "ENTRY_PENDING", "PROTECTED", timeout_s=STATUS_BOUND_S)
    assert given_up.status.value == "CANCELLED", event_types(new_id)
    cancelled = next(e for e in events(new_id) if e["type"] == "EntryCancelled")
    assert cancelled["by"] == "reverse" and old.id in cancelled["message"] and "still open" in cancelled["message"]
    assert [o["status"] for o in orders_tagged(market, old.id, "EXIT")] == ["OPEN"]
    assert orders_tagged(market, new_id, "ENTRY") == []
    # And once the held fill comes, the old bracket closes (SIGNAL) and the account is flat: nothing was reversed
    closed = wait_for_status(old.id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    assert (closed.status.value, closed.exit_reason.value) == ("CLOSED", "SIGNAL"), event_types(old.id)
    assert net_position(market, "INFY") == 0
    assert [o["status"] for o in orders_tagged(market, old.id, "EXIT")] == ["COMPLETE"]
    assert orders_tagged(market, new_id, "ENTRY") == [] and bracket(new_id).status.value == "CANCELLED"


def test_an_exit_alert_that_meets_a_bracket_placing_its_gtt_exits_it_once_it_is_protected(market):
    # Given strategy S's BUY limit at 1490 resting at the exchange, and an exchange that will create the next GTT
    # but hold its answer back for 20 s (PlaceProtection waits BROKER_TIMEOUT_S, then finds the GTT it created)
    strategy = fresh_strategy("sig-filled")
    b = place(market, strategy, entry_price="1490", sl_price="1470", target_price="1530")
    wait_for_status(b, "ENTRY_PENDING", timeout_s=STATUS_BOUND_S)
    wait_for("the entry wait's token", lambda: token_stored(b, "entry_task_token"))
    paper(
        market,
        "faults",
        {"rules": [{"kind": "timeout", "match": {"path": "/gtt/triggers", "method": "POST"}, "seconds": 20}]},
    )
    # When the market comes down to the entry, it fills, and S sends an exit alert while the GTT is being placed
    quote(market, "1490", "1489.95", "1490")
    wait_for_status(b, "ENTRY_FILLED", "PROTECTED", timeout_s=STATUS_BOUND_S)
    answer = alert(market, {"action": "exit", "symbol": "NSE:INFY", "strategy": strategy})
    assert answer.status_code == 200, answer.text
    assert [(x["bracket_id"], x["status"], x["action"]) for x in answer.json()["brackets"]] == [
        (b, "ENTRY_FILLED", "EXIT_POSITION")
    ]
    # Then the bracket is protected first, then exited for the signal: CLOSED SIGNAL, flat, its GTT gone
    done = wait_for_status(b, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    trail = event_types(b)
    assert (done.status.value, done.exit_reason.value) == ("CLOSED", "SIGNAL"), trail
    assert trail.index("ProtectionPlaced") < trail.index("ExitRequested"), trail
    assert "EmergencyExitPlaced" not in trail and "ProtectionFailed" not in trail, trail
    assert [e["reason"] for e in events(b) if e["type"] == "ExitRequested"] == ["SIGNAL"]
    assert [o["status"] for o in orders_tagged(market, b, "EXIT")] == ["COMPLETE"]
    assert net_position(market, "INFY") == 0
    assert [g for g in gtts(market) if g["status"] == "active"] == []
