"""DELETE /api/v1/brackets/{id} routed by the bracket's status (services/cancel_bracket.py), against moto (table, exit
queue, a real execution parked on a task token) and the paper exchange as the broker.

Per status: CREATED -> PlaceEntry ends it CANCELLED without sending anything; ENTRY_PENDING -> the waiting
WaitForEntryFill gets CANCEL_REQUESTED (or finds the request itself when its token is stored later) and CancelEntry
cancels at the broker; PROTECTED -> a MANUAL exit intent the exit Lambda takes (GTT deleted first, one MARKET exit);
ENTRY_FILLED / EXITING / finished -> 409 naming why. The request itself never calls the broker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
import requests
from moto import mock_aws

from tests.support.exits import sqs_event
from tests.support.intake import REGION, FakeContext, brackets_table_schema, call_api
from tests.support.order_updates import KITE_HEADERS, broker_order, finished_output, waiting_execution
from tests.support.stack import bracket, events

TABLE = "bracketflow-cancel-test"


class World:
    def __init__(self, paper: Any, exit_queue_url: str, api_key: str) -> None:
        self.paper = paper
        self.exit_queue_url = exit_queue_url
        self.api_key = api_key

    def delete(self, bracket_id: str) -> Any:
        return call_api("DELETE", f"/api/v1/brackets/{bracket_id}", headers={"X-API-KEY": self.api_key})

    def place(self, **overrides: Any) -> str:
        body = {
            "symbol": "INFY",
            "exchange": "NSE",
            "product": "MIS",
            "action": "BUY",
            "quantity": 10,
            "entry_price": 1500,
            "sl_price": 1480,
            "target_price": 1550,
            **overrides,
        }
        answer = call_api("POST", "/api/v1/placebracketorder", body, headers={"X-API-KEY": self.api_key})
        assert answer.status == 200, answer.body
        return str(answer.body["bracket_id"])

    def broker_orders(self) -> list[dict[str, Any]]:
        return list(requests.get(f"{self.paper.base_url}/orders", headers=KITE_HEADERS, timeout=5).json()["data"])

    def gtts(self) -> list[dict[str, Any]]:
        return list(requests.get(f"{self.paper.base_url}/gtt/triggers", headers=KITE_HEADERS, timeout=5).json()["data"])

    def exit_messages(self) -> list[dict[str, Any]]:
        sqs = boto3.client("sqs", region_name=REGION)
        got = sqs.receive_message(QueueUrl=self.exit_queue_url, MaxNumberOfMessages=10).get("Messages") or []
        return [{"id": m["MessageId"], "body": m["Body"]} for m in got]


@pytest.fixture
def world(monkeypatch, paper_exchange) -> Iterator[World]:
    from bracketflow.adapters.aws import reset_clients
    from bracketflow.adapters.secrets import reset_pepper_cache

    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        boto3.resource("dynamodb", region_name=REGION).create_table(TableName=TABLE, **brackets_table_schema())
        exit_queue = boto3.client("sqs", region_name=REGION).create_queue(QueueName="exits")["QueueUrl"]
        # intake starts a stand-in workflow; the real steps are driven by hand below
        role = boto3.client("iam", region_name=REGION).create_role(RoleName="stand-in", AssumeRolePolicyDocument="{}")
        stand_in = boto3.client("stepfunctions", region_name=REGION).create_state_machine(
            name="bracket",
            definition=json.dumps({"StartAt": "Noop", "States": {"Noop": {"Type": "Pass", "End": True}}}),
            roleArn=role["Role"]["Arn"],
        )
        env = {
            "TABLE_NAME": TABLE,
            "BROKER": "paper",
            "BROKER_BASE_URL": paper_exchange.base_url,
            "BROKER_SECRET_NAME": "bracketflow/cancel-test-broker",
            "BROKER_LOOKUP_PAUSE_S": "0.05",
            "BROKER_MAX_ATTEMPTS": "2",
            "STAGE": "local",
            "EXIT_QUEUE_URL": exit_queue,
            "BRACKET_STATE_MACHINE_ARN": stand_in["stateMachineArn"],
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        reset_clients()
        reset_pepper_cache()
        from bracketflow.services.accounts import create_account

        _account, key = create_account("Asha", account_id="acc_cancel")
        paper_exchange.set_quotes(
            [{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1510, "bid": 1509.95, "ask": 1510}]
        )
        yield World(paper_exchange, exit_queue, key)
        reset_pepper_cache()
        reset_clients()


# ---------- CREATED: the entry is never sent ----------


def test_a_bracket_cancelled_before_its_entry_is_sent_ends_cancelled_with_nothing_at_the_broker(world):
    from bracketflow.services.lifecycle import place_entry

    # Given a registered bracket whose workflow has not placed the entry yet
    bracket_id = world.place()
    # When the trader deletes it
    answer = world.delete(bracket_id)
    # Then the answer is 202 saying the entry will not be placed
    assert answer.status == 202
    data = answer.body["data"]
    assert (data["status"], data["action"], data["cancel_requested"]) == ("CREATED", "ENTRY_NOT_SENT", True)
    # And when PlaceEntry runs, it sends nothing and ends the bracket CANCELLED
    outcome = place_entry(bracket_id)
    assert outcome["outcome"] == "DONE" and outcome["entry"]["outcome"] == "CANCELLED"
    done = bracket(bracket_id)
    assert done.status.value == "CANCELLED" and done.entry.status.value == "CANCELLED"
    assert world.broker_orders() == []
    types = [e["type"] for e in events(bracket_id)]
    assert types == ["BracketRegistered", "CancelRequested", "EntryCancelled"]
    assert events(bracket_id)[-1]["by"] == "user"


# ---------- ENTRY_PENDING: the waiting task is told, CancelEntry cancels ----------


def test_deleting_a_waiting_entry_completes_its_wait_and_the_entry_is_cancelled_at_the_broker(world):
    from bracketflow.services.lifecycle import cancel_entry, place_entry, store_entry_token

    # Given a BUY limit at 1500 resting at the broker (offered at 1510) and WaitForEntryFill parked on its token
    bracket_id = world.place()
    assert place_entry(bracket_id)["outcome"] == "PLACED"
    token, execution_arn = waiting_execution("entry-wait")
    assert store_entry_token(bracket_id, token)["waiting"] is True
    # When the trader deletes it
    answer = world.delete(bracket_id)
    # Then the answer is 202 and the waiting task completes with CANCEL_REQUESTED
    assert answer.status == 202 and answer.body["data"]["action"] == "CANCEL_ENTRY"
    assert answer.body["data"]["status"] == "ENTRY_PENDING"
    assert finished_output(execution_arn) == {"outcome": "CANCEL_REQUESTED"}
    # And the request changed nothing at the broker by itself
    entry_id = bracket(bracket_id).entry.broker_order_id
    assert [o["status"] for o in world.broker_orders() if o["order_id"] == entry_id] == ["OPEN"]
    # And when the workflow's CancelEntryForTrader runs, the entry is cancelled at the broker, by the trader
    assert cancel_entry(bracket_id, by="user")["outcome"] == "CANCELLED"
    assert [o["status"] for o in world.broker_orders() if o["order_id"] == entry_id] == ["CANCELLED"]
    done = bracket(bracket_id)
    assert done.status.value == "CANCELLED" and done.entry.message == "cancelled by the trader"
    cancelled = [e for e in events(bracket_id) if e["type"] == "EntryCancelled"]
    assert [e["by"] for e in cancelled] == ["user"]


def test_the_brokers_cancel_update_arriving_first_is_still_the_traders_cancel(world):
    from bracketflow.services.lifecycle import OrderFact, apply_entry_fact, cancel_entry, place_entry

    # Given a resting entry the trader has asked to cancel
    bracket_id = world.place()
    assert place_entry(bracket_id)["outcome"] == "PLACED"
    assert world.delete(bracket_id).status == 202
    entry_id = bracket(bracket_id).entry.broker_order_id
    # When the broker's CANCELLED update reaches the watcher before CancelEntry records the cancel
    apply_entry_fact(bracket_id, OrderFact(order_id=entry_id, status="CANCELLED", filled_quantity=0))
    cancel_entry(bracket_id, by="user")
    # Then the bracket is CANCELLED once, and the trail says the trader cancelled it
    cancelled = [e for e in events(bracket_id) if e["type"] == "EntryCancelled"]
    assert [e["by"] for e in cancelled] == ["user"]
    assert bracket(bracket_id).status.value == "CANCELLED"


def test_a_cancel_recorded_before_the_wait_stored_its_token_is_found_by_the_wait(world):
    from bracketflow.services.lifecycle import place_entry, store_entry_token

    # Given an entry resting at the broker, its WaitForEntryFill not yet holding a token
    bracket_id = world.place()
    assert place_entry(bracket_id)["outcome"] == "PLACED"
    # When the trader deletes it, and only then the wait stores its token
    assert world.delete(bracket_id).status == 202
    token, execution_arn = waiting_execution("late-token")
    stored = store_entry_token(bracket_id, token)
    # Then the wait completes at once with CANCEL_REQUESTED instead of waiting for a fill
    assert stored["waiting"] is False
    assert finished_output(execution_arn) == {"outcome": "CANCEL_REQUESTED"}


def test_a_partial_fill_cancelled_by_the_trader_is_exited_with_reason_manual_not_protected(world):
    from bracketflow.services.emergency_exit import emergency_exit
    from bracketflow.services.lifecycle import cancel_entry, place_entry

    # Given only 4 INFY offered at 1500 and a BUY 10 at 1500 that filled 4
    world.paper.configure(partial_fills=True)
    world.paper.set_quotes(
        [{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500, "ask_qty": 4}]
    )
    bracket_id = world.place()
    assert place_entry(bracket_id)["outcome"] == "PLACED"
    # When the trader deletes it and CancelEntryForTrader runs
    assert world.delete(bracket_id).status == 202
    outcome = cancel_entry(bracket_id, by="user")
    # Then the 4 are reported filled (the workflow's IsCancelledEntryFilled routes them to ExitCancelledFill)
    assert (outcome["outcome"], outcome["filled_quantity"]) == ("FILLED", 4)
    filled = next(e for e in events(bracket_id) if e["type"] == "EntryFilled")
    assert (filled["cancelled_by"], filled["cancelled_quantity"]) == ("user", 6)
    # And ExitCancelledFill sells the 4 at market with reason MANUAL, without the emergency's events
    result = emergency_exit(bracket_id, "CancelRequested: the trader cancelled", exit_reason=_manual())
    exiting = bracket(bracket_id)
    assert (exiting.status.value, exiting.exit_reason.value, result["quantity"]) == ("EXITING", "MANUAL", 4)
    order = next(o for o in world.broker_orders() if o["order_id"] == result["broker_order_id"])
    assert (order["transaction_type"], order["order_type"], int(order["quantity"])) == ("SELL", "MARKET", 4)
    types = [e["type"] for e in events(bracket_id)]
    assert "ExitRequested" in types and "ExitPlaced" in types
    assert "ProtectionFailed" not in types and "EmergencyExitPlaced" not in types


def _manual() -> Any:
    from bracketflow.domain.enums import ExitReason

    return ExitReason.MANUAL


# ---------- PROTECTED: a MANUAL exit through the exit Lambda ----------


def protected_bracket(world: World) -> str:
    from bracketflow.services.lifecycle import apply_entry_fact, place_entry
    from bracketflow.services.protect import place_protection

    bracket_id = world.place(entry_price=1510, sl_price=1490, target_price=1560)
    assert place_entry(bracket_id)["outcome"] == "PLACED"
    entry_id = bracket(bracket_id).entry.broker_order_id
    from bracketflow.services.lifecycle import OrderFact

    apply_entry_fact(bracket_id, OrderFact.from_kite(broker_order(world.paper, entry_id)))
    place_protection(bracket_id)
    assert bracket(bracket_id).status.value == "PROTECTED"
    return bracket_id


def test_deleting_a_protected_bracket_queues_one_manual_exit_that_the_exit_lambda_places(world):
    from functions.exit.app import lambda_handler as exit_handler

    # Given a bracket PROTECTED by a GTT at the paper exchange
    bracket_id = protected_bracket(world)
    gtt_id = bracket(bracket_id).gtt_id
    orders_before = len(world.broker_orders())
    # When the trader deletes it
    answer = world.delete(bracket_id)
    # Then the answer is 202 (exit), nothing happened at the broker yet, and one MANUAL exit intent is queued
    assert answer.status == 202
    assert (answer.body["data"]["status"], answer.body["data"]["action"]) == ("PROTECTED", "EXIT_POSITION")
    assert len(world.broker_orders()) == orders_before
    messages = world.exit_messages()
    assert len(messages) == 1
    intent = json.loads(messages[0]["body"])
    assert (intent["bracket_id"], intent["reason"], intent["ltp"]) == (bracket_id, "MANUAL", None)
    assert Decimal(intent["stop_price"]) == Decimal("1490") and intent["detected_at"]
    # And when the exit Lambda takes it, the GTT is deleted and one MARKET SELL exits the position
    out = exit_handler(sqs_event((messages[0]["id"], messages[0]["body"])), FakeContext())
    assert out == {"batchItemFailures": []}
    exiting = bracket(bracket_id)
    assert (exiting.status.value, exiting.exit_reason.value) == ("EXITING", "MANUAL")
    assert [g["status"] for g in world.gtts() if str(g["id"]) == str(gtt_id)] in ([], ["deleted"])
    exits = [o for o in world.broker_orders() if o["order_id"] == exiting.exit.broker_order_id]
    assert [(o["transaction_type"], o["order_type"]) for o in exits] == [("SELL", "MARKET")]
    # And a second DELETE is refused: it is already exiting
    again = world.delete(bracket_id)
    assert again.status == 409 and "EXITING" in again.body["message"]


# ---------- statuses where a DELETE can do nothing ----------


def test_a_bracket_whose_protection_is_being_placed_answers_409_saying_to_retry(world):
    from bracketflow.services.lifecycle import OrderFact, apply_entry_fact, place_entry

    # Given an entry that just filled (ENTRY_FILLED, protection not placed yet)
    bracket_id = world.place(entry_price=1510, sl_price=1490, target_price=1560)
    place_entry(bracket_id)
    entry_id = bracket(bracket_id).entry.broker_order_id
    apply_entry_fact(bracket_id, OrderFact.from_kite(broker_order(world.paper, entry_id)))
    version = bracket(bracket_id).version
    # When the trader deletes it
    answer = world.delete(bracket_id)
    # Then 409 says protection is being placed and to send it again; nothing is recorded or queued
    assert answer.status == 409 and "again in a few seconds" in answer.body["message"]
    assert bracket(bracket_id).version == version
    assert world.exit_messages() == []


def test_a_finished_bracket_answers_409_and_records_nothing(world):
    from bracketflow.services.lifecycle import place_entry

    # Given a bracket cancelled before its entry was sent
    bracket_id = world.place()
    world.delete(bracket_id)
    place_entry(bracket_id)
    before = len(events(bracket_id))
    # When it is deleted again
    answer = world.delete(bracket_id)
    # Then 409 names its status and nothing new is recorded
    assert answer.status == 409 and "CANCELLED" in answer.body["message"]
    assert len(events(bracket_id)) == before


def test_another_accounts_bracket_cannot_be_cancelled(world):
    from bracketflow.services.accounts import create_account

    # Given Asha's bracket and Ravi's key
    bracket_id = world.place()
    _ravi, ravi_key = create_account("Ravi", account_id="acc_ravi_cancel")
    # When Ravi deletes it
    answer = call_api("DELETE", f"/api/v1/brackets/{bracket_id}", headers={"X-API-KEY": ravi_key})
    # Then it is 404 and Asha's bracket is untouched
    assert answer.status == 404
    assert [e["type"] for e in events(bracket_id)] == ["BracketRegistered"]


# ---------- the exit intent's reasons ----------


def test_the_exit_queue_takes_manual_without_a_price_but_still_needs_one_for_a_stop():
    from bracketflow.contracts import ExitRequest
    from bracketflow.errors import ValidationFailed

    manual = ExitRequest.from_json(
        json.dumps({"bracket_id": "b1", "reason": "MANUAL", "ltp": None, "stop_price": "1490"})
    )
    assert (manual.reason.value, manual.ltp, manual.stop_price) == ("MANUAL", None, Decimal("1490"))
    with pytest.raises(ValidationFailed, match="ltp"):
        ExitRequest.from_json(json.dumps({"bracket_id": "b1", "reason": "STOP", "stop_price": "1490"}))
    with pytest.raises(ValidationFailed, match="reason must be"):
        ExitRequest.from_json(json.dumps({"bracket_id": "b1", "reason": "ROLLBACK", "ltp": "1", "stop_price": "1490"}))


# ---------- a bracket whose workflow never started ----------


def test_a_cancelled_bracket_whose_workflow_start_failed_is_resumed_by_reconciliation_and_ends_cancelled(
    world, monkeypatch
):
    from bracketflow.services import reconcile
    from bracketflow.services.lifecycle import place_entry
    from bracketflow.settings import get_settings

    # Given a bracket registered while its workflow could not be started (it stays CREATED for resume)
    arn = get_settings().bracket_state_machine_arn
    monkeypatch.setenv("BRACKET_STATE_MACHINE_ARN", "")
    get_settings.cache_clear()
    bracket_id = world.place()
    monkeypatch.setenv("BRACKET_STATE_MACHINE_ARN", arn)
    monkeypatch.setenv("RECONCILE_RESUME_AFTER_S", "0")
    get_settings.cache_clear()
    # And the trader deletes it
    assert world.delete(bracket_id).body["data"]["action"] == "ENTRY_NOT_SENT"
    # When the scheduled reconciliation runs, it starts the workflow (whose PlaceEntry is run by hand here)
    snapshot = reconcile.take_snapshot()
    result = reconcile.reconcile_bracket(snapshot["run_id"], bracket_id)
    assert result["repair"] == "WORKFLOW_RESUMED"
    place_entry(bracket_id)
    # Then the bracket ends CANCELLED and nothing ever reached the broker
    assert bracket(bracket_id).status.value == "CANCELLED"
    assert world.broker_orders() == []
    types = [e["type"] for e in events(bracket_id)]
    assert types[:3] == ["BracketRegistered", "WorkflowStartFailed", "CancelRequested"]
    assert types[-1] == "EntryCancelled"
