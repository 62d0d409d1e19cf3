"""The batch saga (statemachine/batch.asl.json) run for real: moto's Step Functions interpreter, our task Lambdas
in-process, the paper exchange as the broker, all through the local stack and its API on 127.0.0.1.

What must hold (issue 7): a 4-leg NIFTY iron condor is placed in full; when the broker rejects the third leg, every
other leg ends cancelled (if open) or squared off (if filled) and the batch is ROLLED_BACK; with rollback off the
partial result is reported as it is; a compensation that fails transiently is retried until it succeeds.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from local.stack import LocalStack
from tests.support.iron_condor import LONG_CALL, LONG_PUT, SHORT_CALL, SHORT_PUT, condor_quotes, iron_condor
from tests.support.stack import broker_orders, paper, positions, stack_fixture

# One module-scoped stack per module, and moto's backends are process-wide: share the bracket workflow's xdist group
# so the statemachine stacks run one after another in one worker.
pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "batch-saga-key"

# The whole stack on free ports; compensation retries made short (1 s, 4 attempts) so a test can see them.
stack = stack_fixture(
    API_KEY,
    relay=False,
    parameter_overrides={"BatchRollbackRetryIntervalSeconds": "1", "BatchRollbackMaxAttempts": "4"},
    extra_env={"BATCH_WAIT_SECONDS": "20", "BROKER_MAX_ATTEMPTS": "2", "BROKER_LOOKUP_PAUSE_S": "0.05"},
)


@pytest.fixture
def market(stack: LocalStack) -> LocalStack:
    """A clean paper exchange with the condor's strikes quoted (a 0.05 spread around the master's price)."""
    paper(stack, "reset")
    paper(stack, "quotes", {"quotes": condor_quotes()})
    return stack


def post_batch(stack: LocalStack, orders: list[dict[str, Any]], rollback: bool = True) -> requests.Response:
    return requests.post(
        f"{stack.api_url}/api/v1/batchorders",
        json={"orders": orders, "rollback_on_failure": rollback, "wait": True},
        headers={"X-API-KEY": API_KEY},
        timeout=60,
    )


def net_positions(stack: LocalStack) -> dict[str, int]:
    return {row["tradingsymbol"]: int(row["quantity"]) for row in positions(stack)}


def test_a_four_leg_iron_condor_is_placed_in_full(market):
    # Given a quoted market for the four strikes
    # When the trader sends the iron condor as one batch and waits for it
    answer = post_batch(market, iron_condor())
    # Then it is final and PLACED, every leg accepted and filled at the broker
    body = answer.json()
    assert answer.status_code == 200, body
    assert body["batch_status"] == "PLACED" and body["total_orders"] == 4
    assert body["succeeded"] == 4 and body["failed"] == 0 and len(body["order_ids"]) == 4
    assert body["completed_at"] and body["created_at"] <= body["completed_at"]
    assert [leg["status"] for leg in body["legs"]] == ["PLACED"] * 4
    # And the broker holds exactly those four orders, long the wings and short the body
    orders = {o["order_id"]: o for o in broker_orders(market)}
    assert set(orders) == set(body["order_ids"])
    assert net_positions(market) == {LONG_PUT: 75, SHORT_PUT: -75, SHORT_CALL: -75, LONG_CALL: 75}


def compensation_events(stack: LocalStack, batch_id: str) -> list[tuple[str, int]]:
    response = requests.get(f"{stack.api_url}/api/v1/batches/{batch_id}", headers={"X-API-KEY": API_KEY}, timeout=10)
    assert response.status_code == 200, response.text
    kinds = ("BatchLegCancelled", "BatchLegSquaredOff", "BatchLegNeedsNoRollback")
    return [(e["type"], e["leg"]) for e in response.json()["events"] if e["type"] in kinds]


# Legs 1 and 2 fill at once (MARKET), leg 3 is the one the broker rejects, leg 4 rests unfilled (LIMIT far below).
RESTING_LIMIT = {LONG_CALL: {"order_type": "LIMIT", "price": "50.00"}}
REJECT_THIRD_LEG = {"kind": "reject", "match": {"tradingsymbol": SHORT_CALL}, "count": 1}


def test_a_rejected_third_leg_rolls_the_others_back_in_reverse(market):
    # Given the broker will reject the third leg
    paper(market, "faults", {"rules": [REJECT_THIRD_LEG]})
    # When the condor is sent with rollback on
    answer = post_batch(market, iron_condor(RESTING_LIMIT), rollback=True)
    body = answer.json()
    # Then the batch is ROLLED_BACK: the resting leg cancelled, the filled legs squared off, the rejected one untouched
    assert answer.status_code == 200, body
    assert body["batch_status"] == "ROLLED_BACK", body
    legs = {leg["leg"]: leg for leg in body["legs"]}
    assert [legs[n]["status"] for n in (1, 2, 3, 4)] == ["SQUARED_OFF", "SQUARED_OFF", "FAILED", "CANCELLED"]
    assert legs[3]["broker_status"] == "REJECTED" and legs[3]["message"]
    assert legs[4]["rollback"]["action"] == "CANCEL" and legs[4]["filled_quantity"] == 0
    for n in (1, 2):
        assert legs[n]["rollback"]["action"] == "SQUARE_OFF" and legs[n]["rollback"]["quantity"] == 75
    assert body["succeeded"] == 3 and body["failed"] == 1
    # And the compensations ran newest leg first, each audited once
    assert compensation_events(market, body["batch_id"]) == [
        ("BatchLegCancelled", 4), ("BatchLegNeedsNoRollback", 3), ("BatchLegSquaredOff", 2), ("BatchLegSquaredOff", 1),
    ]  # fmt: skip
    # And the account is flat at the broker: no position left, no order left open
    assert set(net_positions(market).values()) <= {0}
    orders = broker_orders(market)
    assert not [o for o in orders if o["status"] in ("OPEN", "TRIGGER PENDING")]
    square_offs = [
        o for o in orders if o["order_id"] in {legs[1]["rollback"]["order_id"], legs[2]["rollback"]["order_id"]}
    ]
    assert {(o["tradingsymbol"], o["transaction_type"], o["order_type"], o["status"]) for o in square_offs} == {
        (LONG_PUT, "SELL", "MARKET", "COMPLETE"), (SHORT_PUT, "BUY", "MARKET", "COMPLETE"),
    }  # fmt: skip


def test_with_rollback_off_the_partial_result_is_reported_as_it_is(market):
    # Given the same rejection
    paper(market, "faults", {"rules": [REJECT_THIRD_LEG]})
    # When the condor is sent with rollback off
    body = post_batch(market, iron_condor(RESTING_LIMIT), rollback=False).json()
    # Then the batch is PARTIAL, and the placed legs stay as they are at the broker
    assert body["batch_status"] == "PARTIAL", body
    assert [leg["status"] for leg in body["legs"]] == ["PLACED", "PLACED", "FAILED", "PLACED"]
    assert all(leg["rollback"] is None for leg in body["legs"])
    assert body["succeeded"] == 3 and body["failed"] == 1 and len(body["order_ids"]) == 3
    assert net_positions(market) == {LONG_PUT: 75, SHORT_PUT: -75}
    resting = [o for o in broker_orders(market) if o["tradingsymbol"] == LONG_CALL]
    assert [o["status"] for o in resting] == ["OPEN"]
    assert compensation_events(market, body["batch_id"]) == []


def test_a_compensation_that_fails_transiently_is_retried_until_it_succeeds(market):
    # Given the rejection, and the broker failing the next three cancel calls with a 500
    # (the adapter tries twice per run here, so the first RollbackLeg run fails and the saga must retry it)
    flaky_cancel = {"kind": "http_500", "match": {"path": "/orders/regular", "method": "DELETE"}, "count": 3}
    paper(market, "faults", {"rules": [REJECT_THIRD_LEG, flaky_cancel]})
    # When the condor is sent with rollback on
    body = post_batch(market, iron_condor(RESTING_LIMIT), rollback=True).json()
    # Then the cancel went through in the end and the batch is ROLLED_BACK
    assert body["batch_status"] == "ROLLED_BACK", body
    assert [leg["status"] for leg in body["legs"]] == ["SQUARED_OFF", "SQUARED_OFF", "FAILED", "CANCELLED"]
    # And every injected failure was used up: the compensation really failed before it succeeded
    rules = {r["kind"]: r for r in paper(market, "faults", method="GET")["rules"]}
    assert rules["http_500"]["fired"] == 3
    # And the Step Functions history shows the failed attempt being retried
    sfn = market.client("stepfunctions")
    execution = sfn.describe_execution(executionArn=execution_arn(market, body["batch_id"]))
    history = sfn.get_execution_history(executionArn=execution["executionArn"], maxResults=1000)["events"]
    failures = [e for e in history if e["type"] == "LambdaFunctionFailed"]
    assert failures and "BrokerUnavailable" in failures[0]["lambdaFunctionFailedEventDetails"]["error"]
    assert execution["status"] == "SUCCEEDED"
    # And the one cancel is audited once
    assert compensation_events(market, body["batch_id"]).count(("BatchLegCancelled", 4)) == 1


def execution_arn(stack: LocalStack, batch_id: str) -> str:
    machine = stack.state_machine_arn("BatchStateMachine")
    return machine.replace(":stateMachine:", ":execution:") + f":{batch_id}"
