"""A strategy's own signals through the whole local stack (the webhook and REST API, the bracket workflow on moto's
interpreter, the exit Lambda on ExitQueue, the watcher) with the paper exchange (manual market) as the broker:

- an exit alert closes the strategy's open bracket on the symbol with reason SIGNAL, once: its resend does nothing;
- an exit alert cancels the strategy's working entry, and leaves other strategies' brackets alone;
- TradingView's flat market position is an exit whatever the action says;
- closeall by API key closes every open bracket of the account, on every symbol.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from bracketflow.domain.ids import order_tag
from local.stack import LocalStack
from tests.stack_support import (
    BRACKET_STACK_ENV,
    assert_every_version_audited,
    broker_orders,
    event_types,
    events,
    fresh_strategy,
    gtts,
    net_position,
    place,
    protected_bracket,
    quote,
    reset_market,
    set_aside_open_brackets,
    stack_fixture,
    token_stored,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "strategy-signals-key"
STATUS_BOUND_S = 90  # a bound for a busy 2-core machine, not a speed claim

stack = stack_fixture(API_KEY, relay=True, extra_env={**BRACKET_STACK_ENV, "ENTRY_TIMEOUT_S": "300"})


@pytest.fixture
def market(stack: LocalStack) -> LocalStack:
    """A clean paper exchange quoting INFY 1499.95 / 1500.00 and SBIN 799.95 / 800.00, no bracket left open."""
    reset_market(stack)
    quote(stack, "1500", "1499.95", "1500")
    quote(stack, "800", "799.95", "800", symbol="SBIN")
    set_aside_open_brackets()
    return stack


def alert(stack: LocalStack, body: dict[str, Any]) -> requests.Response:
    """A TradingView alert with the account's API key in its body (as text/plain, the way TradingView sends it)."""
    import json

    return requests.post(
        f"{stack.api_url}/tradingview/webhook/bracket",
        data=json.dumps({"apikey": API_KEY, **body}),
        headers={"Content-Type": "text/plain"},
        timeout=30,
    )


def exit_orders(stack: LocalStack, bracket_id: str, symbol: str = "INFY") -> list[dict[str, Any]]:
    tag = order_tag(bracket_id, "EXIT")
    return [o for o in broker_orders(stack, symbol) if o["tag"] == tag]


def test_an_exit_alert_closes_the_strategys_bracket_once_and_its_resend_does_nothing(market):
    # Given a protected BUY 10 INFY of strategy S
    strategy = fresh_strategy("sig-exit")
    b = protected_bracket(market, strategy, timeout_s=STATUS_BOUND_S)
    # When S sends an exit alert for NSE:INFY
    body = {"action": "exit", "symbol": "NSE:INFY", "strategy": strategy}
    first = alert(market, body)
    # Then it is answered at once, naming the bracket it exits
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["duplicate"] is False
    assert [(x["bracket_id"], x["action"]) for x in answer["brackets"]] == [(b.id, "EXIT_POSITION")]
    # And the bracket ends CLOSED with reason SIGNAL, flat at the broker, its GTT gone
    done = wait_for_status(b.id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    assert done.status.value == "CLOSED", event_types(b.id)
    assert done.exit_reason.value == "SIGNAL"
    assert net_position(market, "INFY") == 0
    assert [g for g in gtts(market) if g["status"] == "active"] == []
    requested = [e for e in events(b.id) if e["type"] == "ExitRequested"]
    assert [e["reason"] for e in requested] == ["SIGNAL"]
    # When TradingView resends the same alert
    again = alert(market, body)
    # Then it is recognised, and nothing more is placed
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True
    assert again.json()["signal_id"] == answer["signal_id"]
    assert len(exit_orders(market, b.id)) == 1
    assert net_position(market, "INFY") == 0
    assert_every_version_audited(b.id)


def test_an_exit_alert_cancels_the_strategys_working_entry_and_leaves_other_strategies_alone(market):
    # Given strategy S's BUY limit at 1490 resting at the exchange, and strategy T's protected INFY bracket
    s, t = fresh_strategy("sig-pending"), fresh_strategy("sig-other")
    resting = place(market, s, entry_price="1490", sl_price="1470", target_price="1530")
    wait_for_status(resting, "ENTRY_PENDING", timeout_s=STATUS_BOUND_S)
    wait_for("the entry wait's token", lambda: token_stored(resting, "entry_task_token"))
    other = protected_bracket(market, t, timeout_s=STATUS_BOUND_S)
    # When S says close INFY (TradingView's {{strategy.market_position}} flat, whatever the action)
    answer = alert(
        market, {"action": "sell", "market_position": "flat", "symbol": "INFY", "exchange": "NSE", "strategy": s}
    )
    assert answer.status_code == 200, answer.text
    assert [(x["bracket_id"], x["action"]) for x in answer.json()["brackets"]] == [(resting, "CANCEL_ENTRY")]
    # Then S's entry is cancelled at the exchange, and T's bracket is still protected, its position held
    cancelled = wait_for_status(resting, "CANCELLED", timeout_s=STATUS_BOUND_S)
    order = next(o for o in broker_orders(market, "INFY") if o["order_id"] == cancelled.entry.broker_order_id)
    assert order["status"] == "CANCELLED"
    requested = next(e for e in events(resting) if e["type"] == "CancelRequested")
    assert (requested["by"], requested["exit_reason"]) == ("signal", "SIGNAL")
    assert wait_for_status(other.id, "PROTECTED").status.value == "PROTECTED"
    assert net_position(market, "INFY") == 10


def test_closeall_by_api_key_closes_every_open_bracket_of_the_account(market):
    # Given protected brackets on INFY and SBIN, of two strategies
    a = protected_bracket(market, fresh_strategy("sig-all-a"), timeout_s=STATUS_BOUND_S)
    b = protected_bracket(
        market,
        fresh_strategy("sig-all-b"),
        timeout_s=STATUS_BOUND_S,
        symbol="SBIN",
        entry_price="800",
        sl_price="790",
        target_price="820",
    )
    # When the account sends closeall with no strategy
    answer = alert(market, {"action": "closeall"})
    assert answer.status_code == 200, answer.text
    assert sorted(x["bracket_id"] for x in answer.json()["brackets"]) == sorted([a.id, b.id])
    # Then both close with reason SIGNAL and the account is flat on both symbols
    for bracket_id in (a.id, b.id):
        done = wait_for_status(bracket_id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
        assert (done.status.value, done.exit_reason.value) == ("CLOSED", "SIGNAL"), event_types(bracket_id)
    assert net_position(market, "INFY") == 0
    assert net_position(market, "SBIN") == 0


def test_close_position_on_the_rest_api_exits_once_per_client_order_id(market):
    # Given a protected bracket of strategy S
    strategy = fresh_strategy("sig-rest")
    b = protected_bracket(market, strategy, timeout_s=STATUS_BOUND_S)
    body = {"action": "close", "symbol": "INFY", "strategy": strategy, "client_order_id": f"{strategy}-exit"}
    url = f"{market.api_url}/api/v1/closeposition"
    # When the close is sent twice with one client_order_id
    first = requests.post(url, json=body, headers={"X-API-KEY": API_KEY}, timeout=30)
    second = requests.post(url, json=body, headers={"X-API-KEY": API_KEY}, timeout=30)
    # Then the first acts, the second is a resend
    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    assert (first.json()["duplicate"], second.json()["duplicate"]) == (False, True)
    done = wait_for_status(b.id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    assert (done.status.value, done.exit_reason.value) == ("CLOSED", "SIGNAL")
    assert len(exit_orders(market, b.id)) == 1
    # And an exit without a symbol is refused with a 400 that says so
    bad = requests.post(url, json={"action": "close"}, headers={"X-API-KEY": API_KEY}, timeout=30)
    assert bad.status_code == 400, bad.text
    assert "symbol" in bad.json()["message"]
