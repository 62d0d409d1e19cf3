"""A strategy's own signals through the whole local stack (the webhook and REST API, the bracket workflow on moto's
interpreter, the exit Lambda on ExitQueue, the watcher) with the paper exchange (manual market) as the broker:

- an exit alert closes the strategy's open bracket on the symbol with reason SIGNAL, once: its resend does nothing;
- an exit alert cancels the strategy's working entry, and leaves other strategies' brackets alone;
- TradingView's flat market position is an exit whatever the action says;
- closeall by API key closes every open bracket of the account, on every symbol;
- closelong / closeshort close only the strategy's brackets on that side;
- a reverse sends the new entry only once the old position is flat at the broker;
- risk_amount / risk_percent (of the account's capital) size the quantity, saying why;
- exit_after / exit_at (IST) exit the bracket with reason TIME when their minute comes.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from bracketflow.domain.ids import order_tag
from local.stack import LocalStack
from tests.support.stack import (
    BRACKET_STACK_ENV,
    assert_every_version_audited,
    bracket,
    broker_orders,
    event_types,
    events,
    fresh_strategy,
    gtts,
    market_fixture,
    net_position,
    place,
    protected_bracket,
    stack_fixture,
    token_stored,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "strategy-signals-key"
STATUS_BOUND_S = 90  # a bound for a busy 2-core machine, not a speed claim

stack = stack_fixture(API_KEY, relay=True, extra_env={**BRACKET_STACK_ENV, "ENTRY_TIMEOUT_S": "300"})


market = market_fixture(sbin=True)


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


def test_closelong_and_closeshort_close_only_the_strategys_brackets_on_that_side(market):
    # Given strategy S long 10 INFY and short 10 SBIN, both protected
    strategy = fresh_strategy("sig-sides")
    long = protected_bracket(market, strategy, timeout_s=STATUS_BOUND_S)
    short = protected_bracket(
        market,
        strategy,
        timeout_s=STATUS_BOUND_S,
        symbol="SBIN",
        action="SELL",
        entry_price="799.95",
        sl_price="810",
        target_price="780",
    )
    # When S sends closeshort INFY and closelong SBIN: neither names a bracket it holds
    for action, symbol in (("closeshort", "NSE:INFY"), ("closelong", "NSE:SBIN")):
        answer = alert(market, {"action": action, "symbol": symbol, "strategy": strategy})
        assert answer.status_code == 200, answer.text
        assert answer.json()["brackets"] == [] and "no open bracket" in answer.json()["message"]
        assert answer.json()["side"] == ("SHORT" if action == "closeshort" else "LONG")
    # Then both are still protected, their positions held
    assert bracket(long.id).status.value == "PROTECTED" and bracket(short.id).status.value == "PROTECTED"
    assert (net_position(market, "INFY"), net_position(market, "SBIN")) == (10, -10)
    # When S sends closelong INFY
    answer = alert(market, {"action": "closelong", "symbol": "NSE:INFY", "strategy": strategy})
    assert [(x["bracket_id"], x["action"]) for x in answer.json()["brackets"]] == [(long.id, "EXIT_POSITION")]
    # Then only the long closes (SIGNAL), and the short is still protected
    done = wait_for_status(long.id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    assert (done.status.value, done.exit_reason.value) == ("CLOSED", "SIGNAL"), event_types(long.id)
    assert (net_position(market, "INFY"), net_position(market, "SBIN")) == (0, -10)
    assert bracket(short.id).status.value == "PROTECTED"
    # When S sends closeshort SBIN, it closes the short the same way
    answer = alert(market, {"action": "closeshort", "symbol": "NSE:SBIN", "strategy": strategy})
    assert [(x["bracket_id"], x["action"]) for x in answer.json()["brackets"]] == [(short.id, "EXIT_POSITION")]
    done = wait_for_status(short.id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    assert (done.status.value, done.exit_reason.value) == ("CLOSED", "SIGNAL"), event_types(short.id)
    assert net_position(market, "SBIN") == 0
    assert len(exit_orders(market, long.id)) == 1 and len(exit_orders(market, short.id, "SBIN")) == 1


# ---------- reverse ----------


def test_a_reverse_opens_the_other_way_only_once_the_old_position_is_flat_at_the_broker(market):
    import threading

    # Given strategy S long 10 INFY, protected
    strategy = fresh_strategy("sig-reverse")
    old = protected_bracket(market, strategy, timeout_s=STATUS_BOUND_S)
    old_exit, samples, stop = order_tag(old.id, "EXIT"), [], threading.Event()

    def sample() -> None:  # the paper exchange's own orders, over and over, while the reverse happens
        while not stop.is_set():
            samples.append({o["tag"]: o["status"] for o in broker_orders(market, "INFY")})

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
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
        # Then the old bracket closes (reason SIGNAL) and the new one is protected short
        closed = wait_for_status(old.id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
        assert (closed.status.value, closed.exit_reason.value) == ("CLOSED", "SIGNAL")
        wait_for_status(new_id, "PROTECTED", timeout_s=STATUS_BOUND_S)
    finally:
        stop.set()
        sampler.join(10)
    assert net_position(market, "INFY") == -10
    # And at no sampled moment was the new entry at the broker while the old position's exit had not filled
    new_entry = order_tag(new_id, "ENTRY")
    seen_entry = [s for s in samples if new_entry in s]
    assert seen_entry, "the sampler never saw the new entry"
    assert all(s.get(old_exit) == "COMPLETE" for s in seen_entry)
    assert any(old_exit in s and new_entry not in s for s in samples), "the sampler never saw the exit alone"


# ---------- risk sizing ----------


def place_raw(stack: LocalStack, **fields: Any) -> requests.Response:
    body = {
        "symbol": "INFY",
        "exchange": "NSE",
        "product": "MIS",
        "action": "BUY",
        "entry_price": "1490",
        "sl_price": "1470",
        "target_price": "1530",
        "strategy": fresh_strategy("sizing"),
        **fields,
    }
    return requests.post(
        f"{stack.api_url}/api/v1/placebracketorder", json=body, headers={"X-API-KEY": API_KEY}, timeout=30
    )


def test_risk_amount_sizes_the_quantity_from_the_stop_and_says_why(market):
    # When a bracket risks 1000 rupees with a stop 20 below the entry
    answer = place_raw(market, risk_amount="1000")
    # Then it is placed for floor(1000 / 20) = 50, and the answer and the audit trail say so
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["quantity"] == 50
    assert data["sizing"]["quantity_by_risk"] == 50 and data["sizing"]["stop_distance"] == "20"
    registered = events(data["bracket_id"])[0]
    assert registered["quantity"] == 50 and registered["sizing"]["method"] == "risk_amount"
    # And one capped by the max order value (500000 at 1490 is 335 units) is capped, saying so
    capped = place_raw(market, risk_amount="100000")
    assert capped.status_code == 200, capped.text
    assert (capped.json()["quantity"], capped.json()["sizing"]["capped_by_max_order_value"]) == (335, True)


def test_a_risk_that_sizes_to_zero_or_has_no_capital_is_a_400_that_says_so(market):
    zero = place_raw(market, risk_amount="10")
    assert zero.status_code == 400, zero.text
    assert "rounds to 0" in zero.json()["message"]
    no_capital = place_raw(market, risk_percent="1")
    assert no_capital.status_code == 400, no_capital.text
    assert "capital" in no_capital.json()["message"]
    both = place_raw(market, risk_amount="1000", quantity=5)
    assert both.status_code == 400, both.text


def test_risk_percent_sizes_from_the_capital_set_for_the_account(market):
    from bracketflow import admin
    from bracketflow.adapters.dynamo import records as r
    from bracketflow.adapters.dynamo.table import table
    from local.stack import DEV_ACCOUNT_ID

    # Given the account's capital set to 5 lakh the way an operator sets it
    assert admin.main(["set-capital", DEV_ACCOUNT_ID, "500000"]) == 0
    try:
        # When a bracket risks 0.5 % of it (2500 rupees) with a stop 20 below the entry (a warm API Lambda knows the
        # account as it was for up to CREDENTIAL_CACHE_SECONDS, as for its other limits: until then it is refused)
        def sized() -> requests.Response | None:
            tried = place_raw(market, risk_percent="0.5")
            return None if "needs the account's capital" in tried.text else tried

        answer = wait_for("the capital in effect", sized, timeout_s=STATUS_BOUND_S)
        # Then it is placed for floor(2500 / 20) = 125, and the answer and the audit trail say how
        assert answer.status_code == 200, answer.text
        data = answer.json()
        assert data["quantity"] == 125
        sizing = data["sizing"]
        assert (sizing["method"], sizing["capital"], sizing["risk_percent"]) == ("risk_percent", "500000", "0.5")
        assert sizing["quantity_by_risk"] == 125 and sizing["capped_by_max_order_value"] is False
        registered = events(data["bracket_id"])[0]
        assert registered["quantity"] == 125 and registered["sizing"]["capital"] == "500000"
        # And one that would size to nothing (0.001 % = 5 rupees, under one stop distance) is a 400 that says so
        zero = place_raw(market, risk_percent="0.001")
        assert zero.status_code == 400, zero.text
        assert "rounds to 0" in zero.json()["message"]
    finally:
        table().update_item(Key=r.account_key(DEV_ACCOUNT_ID), UpdateExpression="REMOVE capital")


# ---------- time exit ----------


def test_a_time_exit_closes_the_bracket_with_reason_time_when_its_minute_comes(market):
    from datetime import UTC, datetime, timedelta

    # Given a protected bracket asked to leave after 5 minutes
    b = protected_bracket(market, fresh_strategy("sig-time"), timeout_s=STATUS_BOUND_S, exit_after=5)
    # When the risk watch runs before that, nothing happens to it
    early = market.runtime.invoke("RiskWatchFunction", {"time": datetime.now(UTC).isoformat()})
    assert [x for x in early["time_exits"] if x["bracket_id"] == b.id] == []
    # When it runs at the sixth minute
    late = (datetime.now(UTC) + timedelta(minutes=6)).isoformat()
    ran = market.runtime.invoke("RiskWatchFunction", {"time": late})
    assert [(x["bracket_id"], x["action"]) for x in ran["time_exits"]] == [(b.id, "EXIT_POSITION")]
    # Then the bracket closes with reason TIME, flat at the broker, once
    done = wait_for_status(b.id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    assert (done.status.value, done.exit_reason.value) == ("CLOSED", "TIME")
    assert net_position(market, "INFY") == 0
    market.runtime.invoke("RiskWatchFunction", {"time": late})
    assert len(exit_orders(market, b.id)) == 1


def test_an_exit_at_time_closes_the_bracket_with_reason_time_at_that_ist_minute(market):
    from datetime import UTC, datetime, timedelta

    from bracketflow.domain.calendar import IST

    # Given a protected bracket asked to leave at an IST time a few minutes from now (the last minute of the day if
    # that would be tomorrow's)
    now = datetime.now(UTC)
    at = min(now.astimezone(IST) + timedelta(minutes=5), now.astimezone(IST).replace(hour=23, minute=59))
    if at.strftime("%H:%M") <= now.astimezone(IST).strftime("%H:%M"):
        pytest.skip("no later minute left today on the IST clock")
    exit_at = at.strftime("%H:%M")
    b = protected_bracket(market, fresh_strategy("sig-time-at"), timeout_s=STATUS_BOUND_S, exit_at=exit_at)
    assert b.spec.exit_at == exit_at
    due = at.replace(second=0, microsecond=0).astimezone(UTC)
    assert b.exit_due_at == due
    # When the risk watch runs the minute before, nothing happens to it
    early = market.runtime.invoke("RiskWatchFunction", {"time": (due - timedelta(seconds=30)).isoformat()})
    assert [x for x in early["time_exits"] if x["bracket_id"] == b.id] == []
    assert bracket(b.id).status.value == "PROTECTED"
    # When it runs at that minute
    ran = market.runtime.invoke("RiskWatchFunction", {"time": due.isoformat()})
    assert [(x["bracket_id"], x["action"]) for x in ran["time_exits"]] == [(b.id, "EXIT_POSITION")]
    # Then the bracket closes with reason TIME, flat at the broker, with one exit order
    done = wait_for_status(b.id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    assert (done.status.value, done.exit_reason.value) == ("CLOSED", "TIME"), event_types(b.id)
    assert net_position(market, "INFY") == 0
    assert len(exit_orders(market, b.id)) == 1


def test_an_exit_at_that_has_passed_today_is_a_400_that_says_so(market):
    from datetime import UTC, datetime, timedelta

    from bracketflow.domain.calendar import IST

    now = datetime.now(UTC).astimezone(IST)
    if now.hour == 0 and now.minute == 0:
        pytest.skip("no minute of today has passed yet")
    passed = (now - timedelta(minutes=1)).strftime("%H:%M")
    answer = place_raw(market, quantity=1, exit_at=passed)
    assert answer.status_code == 400, answer.text
    assert "already passed" in answer.json()["message"]
    malformed = place_raw(market, quantity=1, exit_at="25:00")
    assert malformed.status_code == 400, malformed.text
    assert "exit_at" in malformed.json()["message"]
