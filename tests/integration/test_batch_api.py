"""POST /api/v1/batchorders (+ /accounts/{id}/batch-orders) and GET /api/v1/batches/{id} on moto.

What must hold: a good batch is recorded (state, every leg, its first audit event) and its saga started, named by the
batch id; every bad batch (11 legs, none, a malformed leg) gets a 400 naming the leg and field and leaves no record
and no execution; only the owner's API key reads or places for an account.
"""

# ruff: noqa: F811  (pytest fixtures imported from the support modules are redefined as test parameters)
from __future__ import annotations

from decimal import Decimal

import pytest

from tests.support.batch import (  # noqa: F401
    LONG_CALL,
    LONG_PUT,
    SHORT_PUT,
    batch_aws,
    batch_executions,
    batch_items,
    call_batch_api,
    iron_condor,
    leg,
    post_batch,
)
from tests.support.intake import aws, other_trader, trader  # noqa: F401


def test_a_good_batch_is_recorded_and_its_saga_started(batch_aws, trader):
    # Given an iron condor
    # When Asha posts it
    answer = post_batch(trader, iron_condor(), rollback_on_failure=True)
    # Then 202: accepted and still running (the stand-in saga does nothing), in the API's shape
    body = answer.body
    assert answer.status == 202 and body["status"] == "success", body
    assert body["batch_id"].startswith("bt_") and body["account_id"] == trader.account_id
    assert body["batch_status"] == "IN_PROGRESS" and body["total_orders"] == 4
    assert body["succeeded"] == 0 and body["failed"] == 4 and body["order_ids"] == [] and body["completed_at"] is None
    assert [(leg["leg"], leg["tradingsymbol"], leg["status"]) for leg in body["legs"]][:2] == [
        (1, LONG_PUT, "CREATED"), (2, SHORT_PUT, "CREATED"),
    ]  # fmt: skip
    # And the batch, its four legs and one audit event are in the table
    kinds = sorted(i["sk"].split("#")[0] for i in batch_items(batch_aws))
    assert kinds == ["EVENT", "LEG", "LEG", "LEG", "LEG", "STATE"]
    # And the saga was started, named by the batch id, with the legs to place
    executions = batch_executions(batch_aws)
    assert [e["name"] for e in executions] == [body["batch_id"]]


def test_the_batch_reads_back_with_its_legs_and_audit_trail(batch_aws, trader):
    placed = post_batch(trader, [leg(LONG_CALL, "BUY", order_type="LIMIT", price=110.5)]).body
    answer = call_batch_api("GET", f"/api/v1/batches/{placed['batch_id']}", headers={"X-API-KEY": trader.api_key})
    data = answer.body
    assert answer.status == 200 and data["batch_id"] == placed["batch_id"]
    assert Decimal(str(data["legs"][0]["price"])) == Decimal("110.5") and data["legs"][0]["order_type"] == "LIMIT"
    assert data["rollback_on_failure"] is True  # all-or-nothing unless the trader says otherwise
    assert [e["type"] for e in data["events"]] == ["BatchRegistered"]


def test_the_account_path_alias_places_for_the_callers_own_account(batch_aws, trader):
    answer = call_batch_api(
        "POST",
        f"/accounts/{trader.account_id}/batch-orders",
        {"orders": [leg()], "rollback_on_failure": False},
        headers={"X-API-KEY": trader.api_key},
    )
    assert answer.status == 202 and answer.body["rollback_on_failure"] is False
    assert len(batch_executions(batch_aws)) == 1


def test_wait_returns_the_current_state_when_the_batch_is_not_final_in_time(batch_aws, trader):
    answer = post_batch(trader, [leg()], wait=True)
    assert answer.status == 202 and answer.body["batch_status"] == "IN_PROGRESS"


def test_a_batch_that_cannot_start_is_failed_with_nothing_sent(batch_aws, trader, monkeypatch):
    from bracketflow.adapters.aws import reset_clients

    monkeypatch.setenv("BATCH_STATE_MACHINE_ARN", "")
    reset_clients()
    answer = post_batch(trader, [leg()])
    assert answer.status == 200 and answer.body["batch_status"] == "FAILED"
    assert "nothing was sent to the broker" in answer.body["message"]
    assert answer.body["completed_at"]


# ---------- bad input: a clear 400, no record, no execution ----------
def _index_leg(index: int, **overrides):
    orders = iron_condor()
    orders[index] = {**orders[index], **overrides}
    return {k: v for k, v in orders[index].items() if v is not None}, orders


BAD_LEGS = [
    # (what, leg index, overrides, words the message must hold)
    ("unknown instrument", 2, {"tradingsymbol": "NIFTY26DEC99999CE"}, ["orders.2.tradingsymbol", "instrument master"]),
    (
        "an index",
        0,
        {"tradingsymbol": "NIFTY 50", "exchange": "NSE", "product": "MIS"},
        ["orders.0.tradingsymbol", "index"],
    ),
    ("not a lot multiple", 1, {"quantity": 50}, ["orders.1.quantity", "lot size 75"]),
    ("bad exchange", 3, {"exchange": "LSE"}, ["orders.3.exchange", "LSE"]),
    ("bad side", 0, {"transaction_type": "HOLD"}, ["orders.0.transaction_type"]),
    ("bad order type", 1, {"order_type": "STOP"}, ["orders.1.order_type"]),
    ("LIMIT without price", 2, {"order_type": "LIMIT"}, ["orders.2.price", "required for LIMIT"]),
    ("MARKET with a price", 3, {"price": 100}, ["orders.3.price", "only for LIMIT and SL"]),
    ("SL without trigger", 0, {"order_type": "SL", "price": 100}, ["orders.0.trigger_price", "required"]),
    (
        "SL BUY trigger above price",
        0,
        {"order_type": "SL", "price": 100, "trigger_price": 101},
        ["orders.0.trigger_price"],
    ),
    ("SL-M with a price", 0, {"order_type": "SL-M", "price": 100, "trigger_price": 99}, ["orders.0.price"]),
    ("off tick", 2, {"order_type": "LIMIT", "price": 230.03}, ["orders.2.price", "tick size 0.05"]),
    ("CNC on derivatives", 1, {"product": "CNC"}, ["orders.1.product", "NRML"]),
    (
        "NRML on cash equity",
        0,
        {"tradingsymbol": "INFY", "exchange": "NSE", "quantity": 1},
        ["orders.0.product", "CNC"],
    ),
    ("zero quantity", 1, {"quantity": 0}, ["orders.1.quantity"]),
    ("missing product", 2, {"product": None}, ["orders.2.product"]),
    ("unknown field", 3, {"qty": 75}, ["orders.3.qty"]),
    ("negative price", 3, {"order_type": "LIMIT", "price": -5}, ["orders.3.price"]),
]


@pytest.mark.parametrize("what,index,overrides,words", BAD_LEGS, ids=[b[0] for b in BAD_LEGS])
def test_a_malformed_leg_is_a_400_naming_the_leg_and_field_and_records_nothing(
    batch_aws, trader, what, index, overrides, words
):
    # Given an iron condor with one bad leg
    _, orders = _index_leg(index, **overrides)
    # When it is posted
    answer = post_batch(trader, orders)
    # Then a 400 that names the leg and the field, and nothing is written or started
    assert answer.status == 400 and answer.body["status"] == "error", answer.body
    for word in words:
        assert word in answer.body["message"], (what, answer.body["message"])
    assert batch_items(batch_aws) == [] and batch_executions(batch_aws) == []


@pytest.mark.parametrize(
    "body,words",
    [
        ({"orders": [{**iron_condor()[0]} for _ in range(11)]}, ["orders", "at most 10"]),
        ({"orders": []}, ["orders", "at least 1"]),
        ({}, ["orders", "required"]),
        ({"orders": "all of them"}, ["orders"]),
        ({"orders": [leg()], "rollback_on_failure": "maybe"}, ["rollback_on_failure"]),
    ],
    ids=["eleven legs", "empty", "no orders", "orders not a list", "rollback not a bool"],
)
def test_a_batch_of_the_wrong_size_or_shape_is_a_400_with_no_record(batch_aws, trader, body, words):
    answer = call_batch_api("POST", "/api/v1/batchorders", body, headers={"X-API-KEY": trader.api_key})
    assert answer.status == 400 and answer.body["status"] == "error"
    for word in words:
        assert word in answer.body["message"], answer.body["message"]
    assert batch_items(batch_aws) == [] and batch_executions(batch_aws) == []


def test_invalid_json_is_a_400(batch_aws, trader):
    answer = call_batch_api("POST", "/api/v1/batchorders", "{not json", headers={"X-API-KEY": trader.api_key})
    assert answer.status == 400 and "JSON" in answer.body["message"]
    assert batch_items(batch_aws) == []


# ---------- who may place and read ----------
@pytest.mark.parametrize("key", [None, "bfk_wrong"])
def test_placing_needs_a_valid_api_key(batch_aws, key):
    headers = {} if key is None else {"X-API-KEY": key}
    answer = call_batch_api("POST", "/api/v1/batchorders", {"orders": [leg()]}, headers=headers)
    assert answer.status == 401 and batch_items(batch_aws) == []


def test_the_api_key_may_come_in_the_body(batch_aws, trader):
    answer = call_batch_api("POST", "/api/v1/batchorders", {"orders": [leg()], "apikey": trader.api_key})
    assert answer.status == 202


def test_another_accounts_batch_is_not_found(batch_aws, trader, other_trader):
    # Given Asha's batch
    placed = post_batch(trader, [leg()]).body
    # When Ravi reads it, and reads an id that does not exist
    theirs = call_batch_api("GET", f"/api/v1/batches/{placed['batch_id']}", headers={"X-API-KEY": other_trader.api_key})
    missing_id = "bt_00000000000000000000000000"
    missing = call_batch_api("GET", f"/api/v1/batches/{missing_id}", headers={"X-API-KEY": other_trader.api_key})
    # Then both are the same 404 (ids never leak across accounts)
    assert theirs.status == missing.status == 404
    assert theirs.body["message"].replace(placed["batch_id"], "X") == missing.body["message"].replace(missing_id, "X")
    # And reading needs a key at all
    assert call_batch_api("GET", f"/api/v1/batches/{placed['batch_id']}").status == 401


def test_placing_under_another_accounts_path_is_not_found_and_records_nothing(batch_aws, trader, other_trader):
    answer = call_batch_api(
        "POST",
        f"/accounts/{other_trader.account_id}/batch-orders",
        {"orders": [leg()]},
        headers={"X-API-KEY": trader.api_key},
    )
    assert answer.status == 404 and batch_items(batch_aws) == [] and batch_executions(batch_aws) == []


def test_batches_share_the_keys_placement_limit_and_a_refused_one_records_nothing(batch_aws, trader, monkeypatch):
    from bracketflow.services import register_bracket
    from tests.support.intake import bracket_request, call_api

    # Given a clock that does not move (every request in the same instant) and the default 2 placements a second
    monkeypatch.setattr(register_bracket, "now_ms", lambda: 1_775_000_000_000)
    # When Asha places a bracket, then a batch, then another batch with the same API key
    bracket = call_api("POST", "/api/v1/placebracketorder", bracket_request(trader.api_key))
    first = post_batch(trader, iron_condor())
    second = post_batch(trader, iron_condor(), client_batch_id="condor-2")
    # Then the bracket and the first batch go through, and the second batch is a 429 that says why
    assert (bracket.status, first.status, second.status) == (200, 202, 429)
    why = "rate limit exceeded: at most 2 placement requests (brackets or batches) per second for this API key"
    assert second.body == {"status": "error", "message": why}
    # And the refused batch left no record and started no saga
    assert {i["pk"] for i in batch_items(batch_aws)} == {f"BATCH#{first.body['batch_id']}"}
    assert [e["name"] for e in batch_executions(batch_aws)] == [first.body["batch_id"]]
