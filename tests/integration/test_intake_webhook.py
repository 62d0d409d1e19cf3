"""POST /tradingview/webhook/bracket: TradingView's variants, tokens, the IP allow-list and resent alerts."""

# ruff: noqa: F811  (pytest fixtures imported from tests.support.intake are redefined as test parameters)
from __future__ import annotations

import json
import threading
from decimal import Decimal

import pytest

from tests.support.intake import aws, call_webhook, other_trader, trader  # noqa: F401


def alert(**fields):
    base = {"symbol": "NSE:INFY", "action": "buy", "product": "MIS", "quantity": "10", "entry_price": "1500",
            "sl_price": "1480", "target_price": "1550"}  # fmt: skip
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def states(aws):
    return [i for i in aws.items("BRACKET#") if i["sk"] == "STATE"]


@pytest.fixture
def token(trader):
    from bracketflow.services.accounts import create_webhook_token

    _, value = create_webhook_token(trader.account_id, "breakout")
    return value


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "text/plain; charset=utf-8"])
def test_an_alert_in_a_json_or_text_body_becomes_a_bracket(aws, trader, content_type):
    # Given TradingView's alert message (numbers as strings, NSE:INFY, lowercase action) in either content type
    body = json.dumps(alert(apikey=trader.api_key))
    # When it arrives
    answer = call_webhook(body, content_type=content_type)
    # Then one bracket on NSE INFY BUY 10 with the levels as given
    assert answer.status == 200, answer.body
    (state,) = states(aws)
    assert (state["exchange"], state["symbol"], state["action"], state["quantity"]) == ("NSE", "INFY", "BUY", 10)
    assert (state["entry_price"], state["sl_price"], state["target_price"]) == (1500, 1480, 1550)
    assert [e["name"] for e in aws.executions()] == [answer.body["bracket_id"]]


def test_a_bare_symbol_with_an_exchange_field_is_the_same_instrument(aws, trader):
    answer = call_webhook(alert(apikey=trader.api_key, symbol="infy", exchange="nse", action="BUY", quantity=10))
    assert answer.status == 200, answer.body
    assert states(aws)[0]["symbol"] == "INFY"


def test_a_symbol_prefix_that_contradicts_the_exchange_is_a_400(aws, trader):
    answer = call_webhook(alert(apikey=trader.api_key, exchange="BSE"))
    assert answer.status == 400 and "exchange" in answer.body["message"]
    assert aws.items("BRACKET#") == []


@pytest.mark.parametrize(
    ("action", "levels", "expected_sl", "expected_target"),
    [
        ("buy", {"sl_percent": "1", "target_percent": "2"}, Decimal("1485.00"), Decimal("1530.00")),
        ("sell", {"sl_percent": "1", "target_percent": "2"}, Decimal("1515.00"), Decimal("1470.00")),
        ("buy", {"sl_points": "12.5", "target_points": 30}, Decimal("1487.50"), Decimal("1530.00")),
        ("sell", {"sl_points": "12.5", "target_points": 30}, Decimal("1512.50"), Decimal("1470.00")),
        # 0.33% of 1500 = 4.95 (on tick); 0.77% = 11.55 -> both on the 0.05 tick already
        ("buy", {"sl_percent": "0.33", "target_price": "1550"}, Decimal("1495.05"), Decimal("1550")),
        # 0.123% of 1500 = 1.845 -> 1498.155 rounds to the nearest tick 1498.15
        ("buy", {"sl_percent": "0.123", "target_points": "1"}, Decimal("1498.15"), Decimal("1501.00")),
    ],
)
def test_levels_given_as_percent_or_points_are_measured_from_the_entry_and_put_on_the_tick(
    aws, trader, action, levels, expected_sl, expected_target
):
    body = alert(**{"apikey": trader.api_key, "action": action, "sl_price": None, "target_price": None, **levels})
    answer = call_webhook(body)
    assert answer.status == 200, answer.body
    (state,) = states(aws)
    assert (state["sl_price"], state["target_price"]) == (expected_sl, expected_target)


@pytest.mark.parametrize(
    ("levels", "message_part"),
    [
        ({"sl_percent": "1"}, "exactly one of sl_price"),
        ({"sl_price": None}, "exactly one of sl_price"),
        ({"sl_price": None, "sl_percent": "150"}, "between 0 and 100"),
        ({"sl_price": None, "sl_points": "-3"}, "sl_points must be greater than 0"),
        ({"sl_price": None, "sl_percent": "1", "entry_price": None, "pricetype": "market"}, "need entry_price"),
    ],
)
def test_relative_levels_that_cannot_be_read_are_a_400(aws, trader, levels, message_part):
    answer = call_webhook(alert(apikey=trader.api_key, **levels))
    assert answer.status == 400 and message_part in answer.body["message"]
    assert aws.items("BRACKET#") == []


@pytest.mark.parametrize(
    ("trail", "expected"),
    [
        ({"trail": {"type": "percent", "value": "1"}}, ("percent", Decimal(1))),
        ({"trail": {"type": "POINTS", "value": 5}}, ("points", Decimal(5))),
        ({"trail": "0.5%"}, ("percent", Decimal("0.5"))),
        ({"trail": "5 points"}, ("points", Decimal(5))),
        ({"trail_percent": "1.5"}, ("percent", Decimal("1.5"))),
        ({"trail_points": "2"}, ("points", Decimal(2))),
    ],
)
def test_a_trail_spec_in_any_of_its_forms_is_kept(aws, trader, trail, expected):
    answer = call_webhook(alert(apikey=trader.api_key, **trail))
    assert answer.status == 200, answer.body
    (state,) = states(aws)
    assert (state["trail_type"], state["trail_value"]) == expected


def test_a_bad_trail_is_a_400(aws, trader):
    answer = call_webhook(alert(apikey=trader.api_key, trail="fast"))
    assert answer.status == 400 and "trail" in answer.body["message"]


@pytest.mark.parametrize("body", ["", "not json", "[1]", "42", "{" * 5000])
def test_a_body_that_is_not_a_json_object_is_a_400(aws, trader, body):
    answer = call_webhook(body, content_type="text/plain")
    assert answer.status == 400 and answer.body["status"] == "error"
    assert aws.items("BRACKET#") == []


def test_a_webhook_token_in_the_path_places_for_its_strategy(aws, trader, token):
    answer = call_webhook(alert(), token=token)
    assert answer.status == 200, answer.body
    assert states(aws)[0]["strategy"] == "breakout" and states(aws)[0]["account_id"] == trader.account_id


def test_a_webhook_token_in_the_body_works_too(aws, trader, token):
    assert call_webhook(alert(token=token)).status == 200


def test_a_token_cannot_place_for_another_strategy(aws, trader, token):
    answer = call_webhook(alert(strategy="scalper"), token=token)
    assert answer.status == 403 and "breakout" in answer.body["message"]
    assert aws.items("BRACKET#") == []


def test_a_revoked_or_unknown_token_is_401(aws, trader, token):
    from bracketflow.services.accounts import revoke_webhook_token

    revoke_webhook_token(trader.account_id, token)
    assert call_webhook(alert(), token=token).status == 401
    assert call_webhook(alert(), token="bfw_unknown").status == 401
    assert call_webhook(alert()).status == 401  # no credential at all
    assert aws.items("BRACKET#") == []


def test_another_account_cannot_revoke_my_token(aws, trader, other_trader, token):
    from bracketflow.errors import NotFound
    from bracketflow.services.accounts import revoke_webhook_token

    with pytest.raises(NotFound):
        revoke_webhook_token(other_trader.account_id, token)
    assert call_webhook(alert(), token=token).status == 200


def test_the_source_ip_allow_list_refuses_other_addresses(aws, trader, monkeypatch):
    from bracketflow.adapters.aws import reset_clients

    monkeypatch.setenv("TRADINGVIEW_ALLOWED_IPS", "52.89.214.238, 34.212.75.30, 10.0.0.0/8")
    reset_clients()
    assert call_webhook(alert(apikey=trader.api_key), source_ip="52.89.214.238").status == 200
    assert call_webhook(alert(apikey=trader.api_key, symbol="NSE:SBIN", entry_price=800, sl_price=790,
                              target_price=820), source_ip="10.1.2.3").status == 200  # fmt: skip
    refused = call_webhook(alert(apikey=trader.api_key, symbol="NSE:TCS"), source_ip="203.0.113.9")
    assert refused.status == 403 and "203.0.113.9" in refused.body["message"]
    assert len(states(aws)) == 2


def test_a_resent_alert_answers_duplicate_and_still_makes_one_bracket(aws, trader):
    # Given an alert that was registered
    first = call_webhook(alert(apikey=trader.api_key))
    # When TradingView resends it (also as text, with a number written differently)
    again = call_webhook(json.dumps(alert(apikey=trader.api_key, quantity=10)), content_type="text/plain")
    # Then 200 with "duplicate": true and the original bracket id, and exactly one bracket and one execution
    assert (first.status, again.status) == (200, 200)
    assert again.body["duplicate"] is True and again.body["bracket_id"] == first.body["bracket_id"]
    assert len(states(aws)) == 1 and len(aws.executions()) == 1


def test_a_resend_starts_the_workflow_the_first_attempt_did_not(aws, trader, monkeypatch):
    from bracketflow.settings import get_settings

    # Given an alert whose bracket was written but whose workflow did not start (the attempt died in between: here
    # Step Functions refuses the start)
    monkeypatch.setenv("BRACKET_STATE_MACHINE_ARN", aws.state_machine_arn + "-missing")
    get_settings.cache_clear()
    first = call_webhook(alert(apikey=trader.api_key))
    assert first.status == 200 and aws.executions() == []
    # When TradingView resends it, with Step Functions answering again
    monkeypatch.setenv("BRACKET_STATE_MACHINE_ARN", aws.state_machine_arn)
    get_settings.cache_clear()
    again = call_webhook(alert(apikey=trader.api_key))
    # Then it is answered as a resend, and the bracket's workflow runs now rather than at the next resume sweep
    assert again.body["duplicate"] is True and again.body["bracket_id"] == first.body["bracket_id"]
    assert [e["name"] for e in aws.executions()] == [first.body["bracket_id"]]
    # and a further resend starts nothing more
    call_webhook(alert(apikey=trader.api_key))
    assert len(aws.executions()) == 1


def test_concurrent_resends_make_exactly_one_bracket(aws, trader, monkeypatch):
    from bracketflow.adapters.aws import reset_clients

    # Given a placement limit that lets four through at one instant
    from bracketflow.services import register_bracket

    monkeypatch.setenv("PLACEMENT_RATE_LIMIT_PER_SECOND", "10")
    monkeypatch.setattr(register_bracket, "now_ms", lambda: 1_775_000_000_000)
    reset_clients()
    # moto's in-memory table is not thread-safe (a transaction deep-copies it while another thread writes); make
    # each DynamoDB call atomic, as it is in DynamoDB, while our code between the calls still interleaves freely.
    from moto.dynamodb.responses import DynamoHandler

    moto_lock = threading.Lock()
    original = DynamoHandler.call_action

    def atomic_call(self):
        with moto_lock:
            return original(self)

    monkeypatch.setattr(DynamoHandler, "call_action", atomic_call)
    # And the same alert arriving four times at once
    answers = []
    lock = threading.Lock()

    def send():
        a = call_webhook(alert(apikey=trader.api_key))
        with lock:
            answers.append(a)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then all are answered 200, all name the same bracket, and only one bracket exists
    assert [a.status for a in answers] == [200] * 4
    assert len({a.body["bracket_id"] for a in answers}) == 1
    assert sorted(a.body["duplicate"] for a in answers) == [False, True, True, True]
    assert len(states(aws)) == 1 and len(aws.executions()) == 1


@pytest.mark.parametrize(
    ("action", "sl", "target", "priced_at"),
    [("buy", "1480", "1550", "the target"), ("sell", "1550", "1480", "the stop")],
)
def test_a_market_alert_without_a_price_is_held_to_the_max_order_value(aws, trader, action, sl, target, priced_at):
    # Given an account allowed orders up to 500,000 and a MARKET alert of 330 INFY with no price (absolute levels)
    from bracketflow.domain.enums import BlockKind

    body = alert(apikey=trader.api_key, action=action, quantity="330", entry_price=None, pricetype="MARKET",
                 sl_price=sl, target_price=target)  # fmt: skip
    # When it arrives (330 x 1480 = 488,400 would pass; at the level it may be held to, 330 x 1550 = 511,500)
    answer = call_webhook(body)
    # Then it is refused for its value, counted at {priced_at}, never sent to the broker
    assert answer.status == 403, answer.body
    assert answer.body["tag"] == BlockKind.RISK_BLOCKED.tag("MAX_ORDER_VALUE")
    assert aws.executions() == []


def test_a_market_alert_within_the_max_order_value_is_placed(aws, trader):
    body = alert(apikey=trader.api_key, quantity="100", entry_price=None, pricetype="MARKET")
    answer = call_webhook(body)
    assert answer.status == 200, answer.body
    assert states(aws)[0]["price_type"] == "MARKET"
