"""POST /api/v1/placebracketorder: the bracket API's contract, every validation rule and error code, the block
tags, idempotency by client_order_id, the per-key limit and a workflow start that fails."""

# ruff: noqa: F811  (pytest fixtures imported from tests.support.intake are redefined as test parameters)
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests.support.intake import aws, bracket_request, call_api, other_trader, trader  # noqa: F401

PLACE = "/api/v1/placebracketorder"


def brackets(aws):
    return [i for i in aws.items("BRACKET#") if i["sk"] == "STATE"]


def test_a_valid_bracket_is_registered_and_its_workflow_started_by_bracket_id(aws, trader):
    # Given the bracket API's example request
    # When it is placed
    answer = call_api("POST", PLACE, bracket_request(trader.api_key))
    # Then 200 with the API's fields plus bracket_id
    assert answer.status == 200, answer.body
    body = answer.body
    assert body["status"] == "success" and body["bracket_id"].startswith("br_")
    assert (body["symbol"], body["action"], body["quantity"]) == ("INFY", "BUY", 10)
    assert Decimal(body["entry_price"]) == 1500 and Decimal(body["sl_price"]) == 1480
    assert Decimal(body["target_price"]) == 1550 and body["duplicate"] is False
    # And one bracket in CREATED, its three legs CREATED, one audit event, all written
    (state,) = brackets(aws)
    assert state["status"] == "CREATED" and state["account_id"] == trader.account_id
    legs = {i["sk"]: i["status"] for i in aws.items(f"BRACKET#{body['bracket_id']}") if i["sk"].startswith("ORDER#")}
    assert legs == {"ORDER#ENTRY": "CREATED", "ORDER#STOP": "CREATED", "ORDER#TARGET": "CREATED"}
    events = [i for i in aws.items("BRACKET#") if i["sk"].startswith("EVENT#")]
    assert [e["event_type"] for e in events] == ["BracketRegistered"]
    # And its execution is named by the bracket id and carries it
    (execution,) = aws.executions()
    assert execution["name"] == body["bracket_id"]
    started = aws.sfn.describe_execution(executionArn=execution["executionArn"])
    assert json.loads(started["input"]) == {"bracket_id": body["bracket_id"], "account_id": trader.account_id}


def test_the_api_key_may_come_in_the_x_api_key_header(aws, trader):
    answer = call_api("POST", PLACE, bracket_request(), headers={"X-API-KEY": trader.api_key})
    assert answer.status == 200, answer.body


def test_optional_fields_are_kept_on_the_bracket(aws, trader):
    # Given a SELL with trail, activation, strategy, tag, validity and lowercase words
    body = bracket_request(
        trader.api_key,
        action="sell",
        exchange="nse",
        product="cnc",
        entry_price="1500.05",
        sl_price=1520,
        target_price=1450,
        trail={"type": "points", "value": 5},
        trail_activation_price=1490,
        strategy="meanrev",
        tag="mylabel",
        validity="ioc",
        disclosed_quantity=5,
    )
    answer = call_api("POST", PLACE, body)
    assert answer.status == 200, answer.body
    (state,) = brackets(aws)
    # Then the stored bracket has the normalised values
    assert (state["action"], state["exchange"], state["product"], state["validity"]) == ("SELL", "NSE", "CNC", "IOC")
    assert state["entry_price"] == Decimal("1500.05") and state["trail_type"] == "points"
    assert state["trail_value"] == 5 and state["trail_activation_price"] == 1490
    assert (state["strategy"], state["user_tag"], state["disclosed_quantity"]) == ("meanrev", "mylabel", 5)


@pytest.mark.parametrize(
    ("overrides", "status", "message_part"),
    [
        ({"symbol": None}, 400, "symbol"),
        ({"exchange": None}, 400, "exchange"),
        ({"product": None}, 400, "product"),
        ({"action": None}, 400, "action"),
        ({"quantity": None}, 400, "quantity"),
        ({"entry_price": None}, 400, "entry_price"),
        ({"sl_price": None}, 400, "sl_price"),
        ({"target_price": None}, 400, "target_price"),
        ({"quantity": 0}, 400, "quantity"),
        ({"quantity": -5}, 400, "quantity"),
        ({"quantity": "ten"}, 400, "quantity"),
        ({"entry_price": 0}, 400, "entry_price"),
        ({"sl_price": -1}, 400, "sl_price"),
        ({"entry_price": "abc"}, 400, "entry_price"),
        ({"exchange": "FOREX"}, 400, "exchange"),
        ({"product": "BO"}, 400, "product"),
        ({"action": "HOLD"}, 400, "action"),
        ({"pricetype": "STOP"}, 400, "pricetype"),
        ({"validity": "GTC"}, 400, "validity"),
        ({"ordertype": "AMO"}, 400, "ordertype"),
        ({"sl_price": 1500}, 400, "For BUY orders, SL price must be less than entry price"),
        ({"target_price": 1490}, 400, "For BUY orders, target price must be greater than entry price"),
        ({"action": "SELL"}, 400, "For SELL orders, SL price must be greater than entry price"),
        ({"action": "SELL", "sl_price": 1520}, 400, "For SELL orders, target price must be less than entry price"),
        ({"sl_price": "1480.03"}, 400, "tick size"),
        ({"symbol": "NOSUCH"}, 400, "unknown instrument"),
        ({"symbol": "NIFTY 50"}, 400, "index"),
        ({"tag": "x" * 21}, 400, "tag"),
        ({"trail": {"type": "percent", "value": 0}}, 400, "trail"),
        ({"trail": {"type": "bps", "value": 1}}, 400, "trail"),
        ({"trail_activation_price": 1490}, 400, "trail"),
        ({"disclosed_quantity": 11}, 400, "disclosed_quantity"),
        ({"strategy": "has space"}, 400, "strategy"),
    ],
)
def test_every_invalid_request_is_a_400_naming_the_problem_and_writes_nothing(
    aws, trader, overrides, status, message_part
):
    # Given a request broken in one way
    # When it is placed
    answer = call_api("POST", PLACE, bracket_request(trader.api_key, **overrides))
    # Then the status and a message that names the problem, in the API's envelope
    assert answer.status == status, answer.body
    assert answer.body["status"] == "error" and message_part.lower() in answer.body["message"].lower()
    # And no bracket, leg, event or dedupe key was written, and no workflow started
    assert aws.items("BRACKET#") == [] and aws.items("DEDUPE#") == [] and aws.executions() == []


def test_a_quantity_off_the_lot_size_is_refused(aws, trader):
    body = bracket_request(
        trader.api_key, symbol="NIFTY26DECFUT", exchange="NFO", product="NRML", quantity=50,
        entry_price="24000.0", sl_price="23900.0", target_price="24200.0",
    )  # fmt: skip
    answer = call_api("POST", PLACE, body)
    assert answer.status == 400 and "lot size 75" in answer.body["message"]
    assert aws.items("BRACKET#") == []


@pytest.mark.parametrize("body", ["{not json", "[1, 2]", '"text"', ""])
def test_a_body_that_is_not_a_json_object_is_a_400(aws, trader, body):
    answer = call_api("POST", PLACE, body, headers={"X-API-KEY": trader.api_key})
    assert answer.status == 400 and answer.body["status"] == "error"
    assert aws.items("BRACKET#") == []


@pytest.mark.parametrize("key", [None, "", "bfk_not-a-real-key", "x" * 300])
def test_a_missing_or_unknown_api_key_is_401(aws, trader, key):
    answer = call_api("POST", PLACE, bracket_request(key))
    assert answer.status == 401
    assert answer.body == {"status": "error", "message": "Invalid API key or authentication failed"}
    assert aws.items("BRACKET#") == []


def test_a_revoked_api_key_is_401(aws, trader):
    from bracketflow.adapters.dynamo import accounts as store
    from bracketflow.services.accounts import hash_secret

    assert store.revoke_api_key(hash_secret(trader.api_key), trader.account_id)
    assert call_api("POST", PLACE, bracket_request(trader.api_key)).status == 401


def test_the_per_key_limit_answers_429_with_a_clear_message(aws, trader, monkeypatch):
    from bracketflow.services import register_bracket

    # Given a clock that does not move (every request in the same instant)
    monkeypatch.setattr(register_bracket, "now_ms", lambda: 1_775_000_000_000)
    answers = [call_api("POST", PLACE, bracket_request(trader.api_key, symbol=s)) for s in ("INFY", "SBIN", "TCS")]
    # Then the default 2/s lets two through and refuses the third
    assert [a.status for a in answers] == [200, 200, 429]
    assert answers[2].body["message"] == "rate limit exceeded: at most 2 bracket orders per second for this API key"
    # And a refused request registered nothing
    assert len(brackets(aws)) == 2


def test_the_placement_rate_is_configurable(aws, trader, monkeypatch):
    from bracketflow.adapters.aws import reset_clients
    from bracketflow.services import register_bracket

    monkeypatch.setenv("PLACEMENT_RATE_LIMIT_PER_SECOND", "1")
    reset_clients()
    monkeypatch.setattr(register_bracket, "now_ms", lambda: 1_775_000_000_000)
    first = call_api("POST", PLACE, bracket_request(trader.api_key))
    second = call_api("POST", PLACE, bracket_request(trader.api_key, symbol="SBIN"))
    assert (first.status, second.status) == (200, 429)
    assert "at most 1 bracket orders per second" in second.body["message"]


def test_a_resent_client_order_id_answers_the_original_bracket_without_a_second_one(aws, trader):
    body = bracket_request(trader.api_key, client_order_id="cid-1")
    first = call_api("POST", PLACE, body)
    again = call_api("POST", PLACE, body)
    assert (first.status, again.status) == (200, 200)
    assert again.body["duplicate"] is True and again.body["bracket_id"] == first.body["bracket_id"]
    assert len(brackets(aws)) == 1 and len(aws.executions()) == 1


def test_a_client_order_id_reused_for_a_different_order_is_duplicate_blocked(aws, trader):
    first = call_api("POST", PLACE, bracket_request(trader.api_key, client_order_id="cid-1"))
    other = call_api("POST", PLACE, bracket_request(trader.api_key, client_order_id="cid-1", symbol="SBIN",
                                                     entry_price=800, sl_price=790, target_price=820))  # fmt: skip
    assert first.status == 200
    assert other.status == 409 and other.body["tag"] == "DUPLICATE_BLOCKED:CLIENT_ORDER_ID_REUSED"
    assert other.body["bracket_id"] != first.body["bracket_id"]
    statuses = sorted(i["status"] for i in brackets(aws))
    assert statuses == ["CREATED", "FAILED"]


def _set_limits(aws, account_id, **limits):
    aws.table.update_item(
        Key={"pk": f"ACCOUNT#{account_id}", "sk": "PROFILE"},
        UpdateExpression="SET " + ", ".join(f"{k} = :{k}" for k in limits),
        ExpressionAttributeValues={f":{k}": v for k, v in limits.items()},
    )


def _assert_blocked(aws, answer, status, tag):
    assert answer.status == status, answer.body
    assert answer.body["tag"] == tag and tag in answer.body["message"]
    state = next(i for i in brackets(aws) if i["bracket_id"] == answer.body["bracket_id"])
    # The blocked bracket is FAILED with its tag, its legs FAILED with the tag, its trail audited, never started
    assert state["status"] == "FAILED" and state["tags"] == [tag] and "gsi2pk" not in state
    legs = [i for i in aws.items(f"BRACKET#{state['bracket_id']}") if i["sk"].startswith("ORDER#")]
    assert {(leg["status"], leg["tag"]) for leg in legs} == {("FAILED", tag)}
    events = [i["event_type"] for i in aws.items(f"BRACKET#{state['bracket_id']}") if i["sk"].startswith("EVENT#")]
    assert events == ["BracketRegistered", "BracketBlocked"]
    assert answer.body["bracket_id"] not in {e["name"] for e in aws.executions()}


def test_an_order_value_above_the_limit_is_risk_blocked(aws, trader):
    _set_limits(aws, trader.account_id, max_order_value=Decimal(10000))
    answer = call_api("POST", PLACE, bracket_request(trader.api_key))  # 10 x 1500 = 15000
    _assert_blocked(aws, answer, 403, "RISK_BLOCKED:MAX_ORDER_VALUE")


def test_too_many_open_brackets_is_risk_blocked(aws, trader):
    _set_limits(aws, trader.account_id, max_open_brackets=1)
    assert call_api("POST", PLACE, bracket_request(trader.api_key)).status == 200
    answer = call_api("POST", PLACE, bracket_request(trader.api_key, symbol="SBIN", entry_price=800, sl_price=790,
                                                      target_price=820))  # fmt: skip
    _assert_blocked(aws, answer, 403, "RISK_BLOCKED:MAX_OPEN_BRACKETS")


def test_a_scale_out_counts_as_one_open_position(aws, trader):
    # Given a limit of 2 open positions and a scale-out alert open in three shares (three brackets, one position)
    _set_limits(aws, trader.account_id, max_open_brackets=2)
    targets = [{"price": "1520", "share": 40}, {"price": "1530", "share": 30}, {"price": "1540", "share": 30}]
    scale_out = call_api("POST", PLACE, bracket_request(trader.api_key, targets=targets, target_price=None))
    assert scale_out.status == 200 and len(scale_out.body["shares"]) == 3, scale_out.body
    # When a second alert comes, it is the second position: admitted
    sbin = {"symbol": "SBIN", "entry_price": 800, "sl_price": 790, "target_price": 820}
    assert call_api("POST", PLACE, bracket_request(trader.api_key, **sbin)).status == 200
    # And a third is one too many
    answer = call_api("POST", PLACE, bracket_request(trader.api_key, **{**sbin, "symbol": "TCS"}))
    _assert_blocked(aws, answer, 403, "RISK_BLOCKED:MAX_OPEN_BRACKETS")


def test_a_day_past_the_loss_limit_is_risk_blocked(aws, trader):
    # Given a bracket today that closed with a loss beyond the account's daily limit
    first = call_api("POST", PLACE, bracket_request(trader.api_key))
    aws.table.update_item(
        Key={"pk": f"BRACKET#{first.body['bracket_id']}", "sk": "STATE"},
        UpdateExpression="SET realised_pnl = :p, #s = :closed REMOVE gsi2pk, gsi2sk",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":p": Decimal(-6000), ":closed": "CLOSED"},
    )
    # When another bracket comes
    answer = call_api("POST", PLACE, bracket_request(trader.api_key, symbol="SBIN", entry_price=800, sl_price=790,
                                                      target_price=820))  # fmt: skip
    _assert_blocked(aws, answer, 403, "RISK_BLOCKED:DAILY_LOSS_HIT")
    # And the order book says why in the trader's words, as it does for the kill switch's own block
    book = call_api("GET", "/api/v1/orderbook", headers={"X-API-KEY": trader.api_key})
    assert book.status == 200, book.body
    (row,) = [o for o in book.body["data"]["orders"] if o["bracket_id"] == answer.body["bracket_id"]]
    assert row["block"]["reason"] == "DAILY_LOSS_HIT" and "daily loss limit" in row["block"]["explanation"]


def test_outside_the_trading_window_a_live_broker_account_is_risk_blocked(aws, trader, monkeypatch):
    from datetime import UTC, datetime

    from bracketflow.adapters.aws import reset_clients
    from bracketflow.services import register_bracket

    # Given the Kite broker and a Sunday
    monkeypatch.setenv("BROKER", "kite")
    reset_clients()
    monkeypatch.setattr(register_bracket, "utc_now", lambda: datetime(2026, 1, 4, 6, 0, tzinfo=UTC))
    answer = call_api("POST", PLACE, bracket_request(trader.api_key))
    _assert_blocked(aws, answer, 403, "RISK_BLOCKED:OUTSIDE_TRADING_WINDOW")


def test_the_paper_market_is_always_open(aws, trader, monkeypatch):
    from datetime import UTC, datetime

    from bracketflow.services import register_bracket

    monkeypatch.setattr(register_bracket, "utc_now", lambda: datetime(2026, 1, 4, 6, 0, tzinfo=UTC))
    assert call_api("POST", PLACE, bracket_request(trader.api_key)).status == 200


def test_an_open_bracket_the_other_way_on_the_same_symbol_is_guard_blocked(aws, trader):
    assert call_api("POST", PLACE, bracket_request(trader.api_key, strategy="a")).status == 200
    answer = call_api("POST", PLACE, bracket_request(trader.api_key, strategy="b", action="SELL", sl_price=1520,
                                                      target_price=1450))  # fmt: skip
    _assert_blocked(aws, answer, 409, "GUARD_BLOCKED:OPPOSITE_OPEN_BRACKET")


def test_a_blocked_scale_out_answer_names_every_refused_share(aws, trader):
    # Given an open bracket one way, and a scale-out alert in three shares the other way
    assert call_api("POST", PLACE, bracket_request(trader.api_key, strategy="a")).status == 200
    targets = [{"price": "1450", "share": 40}, {"price": "1440", "share": 30}, {"price": "1430", "share": 30}]
    answer = call_api("POST", PLACE, bracket_request(trader.api_key, strategy="b", action="SELL", sl_price=1520,
                                                      target_price=None, targets=targets))  # fmt: skip
    # Then it is refused, and the answer names each share's FAILED bracket, not only the first
    _assert_blocked(aws, answer, 409, "GUARD_BLOCKED:OPPOSITE_OPEN_BRACKET")
    shares = answer.body["shares"]
    assert [s["share_index"] for s in shares] == [1, 2, 3] and shares[0]["bracket_id"] == answer.body["bracket_id"]
    stored = {i["bracket_id"]: i["status"] for i in brackets(aws)}
    assert {stored[s["bracket_id"]] for s in shares} == {"FAILED"} and len({s["bracket_id"] for s in shares}) == 3
    assert {s["bracket_status"] for s in shares} == {"FAILED"}


def test_an_open_bracket_for_the_same_symbol_and_strategy_is_duplicate_blocked(aws, trader):
    assert call_api("POST", PLACE, bracket_request(trader.api_key, strategy="a")).status == 200
    answer = call_api("POST", PLACE, bracket_request(trader.api_key, strategy="a", quantity=20))
    _assert_blocked(aws, answer, 409, "DUPLICATE_BLOCKED:OPEN_BRACKET_SAME_SYMBOL_STRATEGY")
    # And another strategy on the same symbol and side is not a duplicate
    assert call_api("POST", PLACE, bracket_request(trader.api_key, strategy="b")).status == 200


def test_another_accounts_open_brackets_do_not_block_mine(aws, trader, other_trader):
    assert call_api("POST", PLACE, bracket_request(other_trader.api_key)).status == 200
    assert call_api("POST", PLACE, bracket_request(trader.api_key, action="SELL", sl_price=1520,
                                                   target_price=1450)).status == 200  # fmt: skip


def test_a_workflow_that_cannot_start_leaves_the_bracket_recorded_and_resumable(aws, trader, monkeypatch):
    from bracketflow.adapters.aws import reset_clients
    from bracketflow.services.register_bracket import resume_unstarted_brackets

    # Given the workflow ARN is missing
    monkeypatch.setenv("BRACKET_STATE_MACHINE_ARN", "")
    reset_clients()
    answer = call_api("POST", PLACE, bracket_request(trader.api_key))
    # Then the caller still gets the registered bracket, told the start is pending
    assert answer.status == 200 and "pending" in answer.body["message"]
    bracket_id = answer.body["bracket_id"]
    events = [i["event_type"] for i in aws.items(f"BRACKET#{bracket_id}") if i["sk"].startswith("EVENT#")]
    assert events == ["BracketRegistered", "WorkflowStartFailed"]
    assert aws.executions() == []
    # When the ARN is back and resume runs
    monkeypatch.setenv("BRACKET_STATE_MACHINE_ARN", aws.state_machine_arn)
    reset_clients()
    assert resume_unstarted_brackets(older_than_s=0) == [bracket_id]
    # Then the execution exists under the bracket id, and a second resume does not start another
    assert [e["name"] for e in aws.executions()] == [bracket_id]
    resume_unstarted_brackets(older_than_s=0)
    assert len(aws.executions()) == 1


def test_every_placement_is_in_the_order_log_with_the_key_redacted(aws, trader):
    call_api("POST", PLACE, bracket_request(trader.api_key))
    call_api("POST", PLACE, bracket_request(trader.api_key, sl_price=1600))
    logs = aws.items("ORDERLOG#")
    assert sorted(int(x["status_code"]) for x in logs) == [200, 400]
    assert all(json.loads(x["request"])["apikey"] == "***" for x in logs)
    assert trader.api_key not in json.dumps([str(x) for x in aws.items()])


def _scale_out(api_key, **overrides):
    """BUY 10 INFY at 1500, stop 1480: 6 for 1520 and 4 for +2 percent (1530), breakeven after target 1."""
    targets = [{"price": 1520, "quantity": 6}, {"percent": 2, "quantity": 4}]
    return bracket_request(api_key, target_price=None, targets=targets, breakeven_after=1, **overrides)


def test_a_scale_out_registers_one_bracket_per_share_in_one_go_and_its_resend_answers_them_all(aws, trader):
    # Given a REST scale-out with a client_order_id
    body = _scale_out(trader.api_key, client_order_id="cid-scale", breakeven_buffer="0.5")
    # When it is placed
    first = call_api("POST", PLACE, body)
    # Then two shares are answered, each its own bracket for its quantity and target, under the same stop
    assert first.status == 200, first.body
    shares = first.body["shares"]
    assert [(s["share_index"], s["quantity"], Decimal(s["target_price"])) for s in shares] == [
        (1, 6, Decimal("1520")),
        (2, 4, Decimal("1530")),
    ]
    assert first.body["bracket_id"] == shares[0]["bracket_id"] and first.body["quantity"] == 10
    ids = [s["bracket_id"] for s in shares]
    states = {i["bracket_id"]: i for i in brackets(aws)}
    assert sorted(states) == sorted(ids)
    for index, bracket_id in enumerate(ids, start=1):
        state = states[bracket_id]
        assert (state["status"], state["share_index"], state["share_group"]) == ("CREATED", index, ids)
        assert (Decimal(state["sl_price"]), state["breakeven_after"], Decimal(state["breakeven_buffer"])) == (
            Decimal("1480"),
            1,
            Decimal("0.5"),
        )
        legs = {i["sk"] for i in aws.items(f"BRACKET#{bracket_id}") if i["sk"].startswith("ORDER#")}
        assert legs == {"ORDER#ENTRY", "ORDER#STOP", "ORDER#TARGET"}
    # And each share's workflow is started under its own id
    assert sorted(e["name"] for e in aws.executions()) == sorted(ids)
    # When it is resent
    again = call_api("POST", PLACE, body)
    # Then the same shares are answered, and nothing new is written or started
    assert again.status == 200 and again.body["duplicate"] is True
    assert [s["bracket_id"] for s in again.body["shares"]] == ids
    assert len(brackets(aws)) == 2 and len(aws.executions()) == 2


def test_a_scale_out_is_risk_checked_as_one_position_and_blocked_whole(aws, trader):
    # Given an order value limit below the whole quantity's value but above each share's
    _set_limits(aws, trader.account_id, max_order_value=Decimal(12000))
    # When a scale-out of 10 x 1500 (6 and 4) is placed
    answer = call_api("POST", PLACE, _scale_out(trader.api_key))
    # Then it is blocked, every share FAILED with the tag, none started
    assert answer.status == 403 and answer.body["tag"] == "RISK_BLOCKED:MAX_ORDER_VALUE"
    assert sorted(i["status"] for i in brackets(aws)) == ["FAILED", "FAILED"]
    assert aws.executions() == []


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"target_price": 1550}, "not both"),
        ({"targets": [{"price": 1520, "quantity": 6}, {"price": 1530, "quantity": 5}]}, "add up to the quantity 10"),
        ({"targets": [{"price": 1520, "share": 50}, {"price": 1530.03, "share": 50}]}, "target 2: target_price"),
        ({"breakeven_after": 2}, "breakeven_after must name a target from 1 to 1"),
    ],
)
def test_a_scale_out_that_cannot_be_split_is_a_400_and_writes_nothing(aws, trader, changes, says):
    answer = call_api("POST", PLACE, {**_scale_out(trader.api_key), **changes})
    assert answer.status == 400 and says in answer.body["message"], answer.body
    assert brackets(aws) == []
