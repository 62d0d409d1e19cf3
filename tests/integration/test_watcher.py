"""The watcher (functions/watcher) against moto and the paper exchange: order updates from the queue and from Kite
postbacks are recorded once on the bracket, and a waiting workflow task gets its outcome even when the fill
arrived before the task stored its token.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
import requests
from moto import mock_aws

from tests.integration.test_intake_support import REGION, FakeContext, api_event, brackets_table_schema

TABLE = "bracketflow-watcher-test"
KITE_HEADERS = {"Authorization": "token paper:paper-token", "X-Kite-Version": "3"}


@pytest.fixture
def world(monkeypatch, paper_exchange) -> Iterator[Any]:
    """moto (table, a token queue, a state machine that waits on a task token) and the paper exchange as broker."""
    from bracketflow.adapters.aws import reset_clients

    env = {
        "TABLE_NAME": TABLE,
        "BROKER": "paper",
        "BROKER_BASE_URL": paper_exchange.base_url,
        "BROKER_SECRET_NAME": "bracketflow/watcher-test-broker",
        "BROKER_LOOKUP_PAUSE_S": "0.05",
        "BROKER_MAX_ATTEMPTS": "2",
        "STAGE": "local",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        boto3.resource("dynamodb", region_name=REGION).create_table(TableName=TABLE, **brackets_table_schema())
        reset_clients()
        paper_exchange.set_quotes(
            [{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1509.95, "ask": 1510}]
        )
        yield paper_exchange
        reset_clients()


def registered_bracket() -> str:
    """A CREATED BUY 10 INFY at 1500 (stop 1480, target 1550), the way intake leaves one."""
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.domain.bracket import Bracket, BracketSpec
    from bracketflow.domain.enums import Action, Exchange, Product
    from bracketflow.domain.events import BracketRegistered
    from bracketflow.domain.ids import AccountId

    spec = BracketSpec(
        account_id=AccountId("acc_watch"),
        symbol="INFY",
        exchange=Exchange.NSE,
        product=Product.MIS,
        action=Action.BUY,
        quantity=10,
        entry_price=Decimal("1500"),
        sl_price=Decimal("1480"),
        target_price=Decimal("1550"),
    )
    bracket = Bracket.register(spec)
    event = BracketRegistered(bracket_id=bracket.id, data=spec.to_dict(), at=bracket.created_at, bracket_version=1)
    BracketRepository().create(bracket, [event])
    return bracket.id


def broker_order(paper: Any, order_id: str) -> dict[str, Any]:
    rows = requests.get(f"{paper.base_url}/orders/{order_id}", headers=KITE_HEADERS, timeout=5).json()["data"]
    return dict(rows[-1])


def queue_event(order: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"source": "ticker", "received_at": "2026-01-05T04:00:00Z", "order": order}, default=str)
    return {
        "Records": [
            {
                "messageId": f"m-{order['order_id']}-{order['status']}",
                "receiptHandle": "h",
                "body": body,
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:ap-south-1:123456789012:order-events",
                "awsRegion": REGION,
            }
        ]
    }


def watcher(event: dict[str, Any]) -> dict[str, Any]:
    from functions.watcher.app import lambda_handler

    return lambda_handler(event, FakeContext())


def postback(order: dict[str, Any], secret: str = "paper-secret") -> dict[str, Any]:
    body = json.loads(json.dumps(order, default=str))
    digest = hashlib.sha256(f"{body['order_id']}{body['order_timestamp']}{secret}".encode()).hexdigest()
    return watcher(api_event("POST", "/broker/postback", {**body, "checksum": digest}))


def bracket(bracket_id: str) -> Any:
    from bracketflow.adapters.dynamo.brackets import BracketRepository

    return BracketRepository().get(bracket_id)


def test_a_fill_from_the_queue_is_recorded_once(world):
    from bracketflow.services.lifecycle import place_entry

    # Given a bracket whose entry rests at the broker
    bracket_id = registered_bracket()
    placed = place_entry(bracket_id)
    assert placed["outcome"] == "PLACED"
    # When the market comes to it and the COMPLETE update arrives twice
    world.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500}])
    order = broker_order(world, placed["broker_order_id"])
    assert order["status"] == "COMPLETE"
    first = watcher(queue_event(order))
    version = bracket(bracket_id).version
    second = watcher(queue_event(order))
    # Then the bracket is ENTRY_FILLED once, and the repeat changed nothing
    assert first == {"batchItemFailures": []} and second == {"batchItemFailures": []}
    filled = bracket(bracket_id)
    assert (filled.status.value, filled.entry.filled_quantity, filled.entry.average_price) == (
        "ENTRY_FILLED",
        10,
        Decimal("1500"),
    )
    assert filled.version == version
    from bracketflow.adapters.dynamo.brackets import BracketRepository

    assert [e["type"] for e in BracketRepository().events(bracket_id)].count("EntryFilled") == 1


def test_a_postback_with_a_wrong_checksum_is_refused_and_changes_nothing(world):
    from bracketflow.services.lifecycle import place_entry

    # Given a bracket whose entry was rejected at the broker
    world.set_faults([{"kind": "reject", "match": {"tradingsymbol": "INFY"}, "message": "Margin exceeds"}])
    bracket_id = registered_bracket()
    order = broker_order(world, place_entry(bracket_id)["broker_order_id"])
    assert order["status"] == "REJECTED"
    # When a postback signed with the wrong secret arrives
    refused = postback(order, secret="not-the-secret")
    # Then it is refused with 401 and the bracket is untouched
    assert refused["statusCode"] == 401
    assert bracket(bracket_id).status.value == "ENTRY_PENDING"
    # And the genuine postback marks it FAILED with the broker's reason
    accepted = postback(order)
    assert accepted["statusCode"] == 200
    failed = bracket(bracket_id)
    assert (failed.status.value, failed.entry.message) == ("FAILED", "Margin exceeds")


def test_a_postback_that_is_not_json_is_refused(world):
    answer = watcher(api_event("POST", "/broker/postback", "order_id=1", content_type="text/plain"))
    assert answer["statusCode"] == 400
    assert json.loads(answer["body"])["status"] == "error"


def test_a_fill_that_arrives_before_the_token_is_stored_still_completes_the_wait(world):
    from bracketflow.services.lifecycle import place_entry, store_entry_token

    # Given a bracket whose entry filled and was recorded before any task waited on it
    bracket_id = registered_bracket()
    placed = place_entry(bracket_id)
    world.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500}])
    watcher(queue_event(broker_order(world, placed["broker_order_id"])))
    assert bracket(bracket_id).status.value == "ENTRY_FILLED"
    # When a workflow task now waits on a token and stores it
    token, execution_arn = waiting_execution()
    store_entry_token(bracket_id, token)
    # Then the wait completes at once with the fill
    sfn = boto3.client("stepfunctions", region_name=REGION)
    deadline = time.monotonic() + 20
    while (described := sfn.describe_execution(executionArn=execution_arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the waiting task was never completed"
        time.sleep(0.1)
    assert described["status"] == "SUCCEEDED"
    output = json.loads(described["output"])
    assert (output["outcome"], output["filled_quantity"]) == ("FILLED", 10)
    assert Decimal(output["average_price"]) == Decimal("1500")


def waiting_execution() -> tuple[str, str]:
    """A real execution parked on a task token (handed out through a queue), like WaitForEntryFill."""
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="tokens")["QueueUrl"]
    definition = {
        "StartAt": "Wait",
        "States": {
            "Wait": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "Parameters": {"QueueUrl": url, "MessageBody": {"token.$": "$$.Task.Token"}},
                "TimeoutSeconds": 30,
                "End": True,
            }
        },
    }
    sfn = boto3.client("stepfunctions", region_name=REGION)
    role = boto3.client("iam", region_name=REGION).create_role(RoleName="sfn", AssumeRolePolicyDocument="{}")
    arn = sfn.create_state_machine(name="waits", definition=json.dumps(definition), roleArn=role["Role"]["Arn"])[
        "stateMachineArn"
    ]
    execution_arn = sfn.start_execution(stateMachineArn=arn, name="w1", input="{}")["executionArn"]
    deadline = time.monotonic() + 20
    while True:
        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages") or []
        if got:
            return json.loads(got[0]["Body"])["token"], execution_arn
        assert time.monotonic() < deadline, "the execution never handed out its token"
