"""The kill switch on the local stack with the paper exchange: a day's loss (realised + open) at the account's limit
flattens the account (reason KILL_SWITCH) and blocks the next alert until the next session; POST /api/v1/flatten does
the same by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import requests

from local.stack import LocalStack
from tests.support.stack import (
    clean_market,
    fresh_strategy,
    net_position,
    protected_bracket,
    quote,
    stack_fixture,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "kill-switch-key"
STATUS_BOUND_S = 90  # a bound for a busy 2-core machine, not a speed claim
stack = stack_fixture(API_KEY, relay=True)


@pytest.fixture
def market(stack: LocalStack) -> LocalStack:
    clean_market(stack)
    _lift_halts()
    return stack


def _lift_halts() -> None:
    from bracketflow.adapters.dynamo import halts
    from bracketflow.adapters.dynamo.accounts import get_account
    from bracketflow.adapters.dynamo.table import table
    from local.stack import DEV_ACCOUNT_ID

    account = get_account(DEV_ACCOUNT_ID)
    assert account is not None
    table().delete_item(Key=halts.halt_key(DEV_ACCOUNT_ID, datetime.now(UTC)))


def _set_loss_limit(limit: str) -> None:
    from bracketflow.adapters.dynamo import records as r
    from bracketflow.adapters.dynamo.table import table
    from local.stack import DEV_ACCOUNT_ID

    table().update_item(
        Key=r.account_key(DEV_ACCOUNT_ID),
        UpdateExpression="SET daily_loss_limit = :l",
        ExpressionAttributeValues={":l": limit},
    )


def _alert(stack: LocalStack, strategy: str) -> requests.Response:
    body = {
        "apikey": API_KEY,
        "action": "buy",
        "symbol": "NSE:INFY",
        "product": "MIS",
        "quantity": 10,
        "entry_price": "1500",
        "sl_price": "1480",
        "target_price": "1550",
        "strategy": strategy,
    }
    return requests.post(f"{stack.api_url}/tradingview/webhook/bracket", data=json.dumps(body), timeout=30)


def test_a_day_loss_at_the_limit_flattens_the_account_and_blocks_the_next_alert(market):
    # Given a protected BUY 10 INFY at 1500 and a market fallen to 1490 (100 rupees open loss, above the stop)
    b = protected_bracket(market, fresh_strategy("kill"), timeout_s=STATUS_BOUND_S)
    quote(market, "1490", "1489.95", "1490")
    # And a daily loss limit of 50
    _set_loss_limit("50")
    try:
        # When the risk watch runs
        ran = market.runtime.invoke("RiskWatchFunction", {})
        assert [t["reason"] for t in ran["kill_switch"]] == ["DAILY_LOSS_HIT"]
        # Then the bracket closes with reason KILL_SWITCH and the account is flat at the broker
        done = wait_for_status(b.id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
        assert (done.status.value, done.exit_reason.value) == ("CLOSED", "KILL_SWITCH")
        assert net_position(market, "INFY") == 0
        # And the next alert is refused, saying why
        refused = _alert(market, fresh_strategy("after-kill"))
        assert refused.status_code == 403, refused.text
        assert refused.json()["tag"] == "RISK_BLOCKED:DAILY_LOSS_HIT"
    finally:
        _set_loss_limit("5000")


def test_flatten_by_hand_exits_everything_and_blocks_new_brackets(market):
    b = protected_bracket(market, fresh_strategy("flatten"), timeout_s=STATUS_BOUND_S)
    answer = requests.post(f"{market.api_url}/api/v1/flatten", json={}, headers={"X-API-KEY": API_KEY}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert [(x["bracket_id"], x["action"]) for x in answer.json()["brackets"]] == [(b.id, "EXIT_POSITION")]
    done = wait_for_status(b.id, "CLOSED", "NEEDS_REVIEW", timeout_s=STATUS_BOUND_S)
    assert (done.status.value, done.exit_reason.value) == ("CLOSED", "KILL_SWITCH")
    assert net_position(market, "INFY") == 0
    refused = _alert(market, fresh_strategy("after-flatten"))
    assert refused.status_code == 403, refused.text
    assert refused.json()["tag"] == "RISK_BLOCKED:FLATTENED"
    unauthorised = requests.post(f"{market.api_url}/api/v1/flatten", json={}, timeout=30)
    assert unauthorised.status_code == 401
