"""Kite order updates as the watcher receives them, and the moto pieces the watcher's tests need (tests/integration:
the watcher, order-update races, cancel). No tests here.

Each helper runs inside the test's own moto mock (`mock_aws`) with the paper exchange as the broker.
"""

from __future__ import annotations

import hashlib
import json
import time
from decimal import Decimal
from typing import Any

import boto3
import requests

from tests.support.exits import sqs_event
from tests.support.intake import REGION, FakeContext, api_event

# Requests to the paper exchange's Kite API, as the broker adapter makes them.
KITE_HEADERS = {"Authorization": "token paper:paper-token", "X-Kite-Version": "3"}


# ---------- order updates ----------


def broker_order(paper: Any, order_id: str) -> dict[str, Any]:
    """The order's latest state as the paper exchange reports it (the fields a Kite order update carries)."""
    rows = requests.get(f"{paper.base_url}/orders/{order_id}", headers=KITE_HEADERS, timeout=5).json()["data"]
    return dict(rows[-1])


def hand_built_update(order_id: str, tag: str | None, status: str = "COMPLETE") -> dict[str, Any]:
    """A Kite order update's `data` as the ticker sends it: BUY 10 INFY MIS LIMIT, filled at 1500 if COMPLETE."""
    return {
        "order_id": order_id,
        "status": status,
        "tag": tag,
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "transaction_type": "BUY",
        "product": "MIS",
        "order_type": "LIMIT",
        "quantity": 10,
        "filled_quantity": 10 if status == "COMPLETE" else 0,
        "pending_quantity": 0,
        "average_price": 1500,
        "order_timestamp": "2026-04-01 09:30:00",
    }


def sqs_records(*orders: dict[str, Any]) -> dict[str, Any]:
    """An order-events queue batch as the watcher receives it, one record per order update, in the streamer's
    format; a message id names its order and status, so the same update sent again is a redelivery."""
    return sqs_event(
        *(
            (
                f"m{n}-{order['order_id']}-{order['status']}",
                json.dumps({"source": "ticker", "received_at": "2026-04-01T04:00:00Z", "order": order}, default=str),
            )
            for n, order in enumerate(orders)
        )
    )


def postback_event(order: dict[str, Any], secret: str = "paper-secret") -> dict[str, Any]:
    """The order update as Kite POSTs it to /broker/postback, with its checksum signed by `secret`."""
    body = json.loads(json.dumps(order, default=str))
    digest = hashlib.sha256(f"{body['order_id']}{body['order_timestamp']}{secret}".encode()).hexdigest()
    return api_event("POST", "/broker/postback", {**body, "checksum": digest})


def watcher(event: dict[str, Any]) -> dict[str, Any]:
    """The watcher Lambda's answer to one event (an SQS batch or an API Gateway postback)."""
    from functions.watcher.app import lambda_handler

    return lambda_handler(event, FakeContext())


# ---------- brackets and waiting workflows ----------


def registered_bracket(account_id: str) -> str:
    """A CREATED BUY 10 INFY LIMIT 1500 (stop 1480, target 1550) of `account_id`, the way intake leaves one."""
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.domain.bracket import Bracket, BracketSpec
    from bracketflow.domain.enums import Action, Exchange, Product
    from bracketflow.domain.events import BracketRegistered
    from bracketflow.domain.ids import AccountId

    spec = BracketSpec(
        account_id=AccountId(account_id),
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


def waiting_execution(name: str) -> tuple[str, str]:
    """A real execution parked on a task token handed out through a queue, like WaitForEntryFill or WaitForExit:
    (the token, the execution's arn). `name` keeps several in one test apart."""
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName=f"tokens-{name}")["QueueUrl"]
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
    role = boto3.client("iam", region_name=REGION).create_role(RoleName=f"sfn-{name}", AssumeRolePolicyDocument="{}")
    arn = sfn.create_state_machine(name=f"waits-{name}", definition=json.dumps(definition), roleArn=role["Role"]["Arn"])
    execution_arn = sfn.start_execution(stateMachineArn=arn["stateMachineArn"], name=name, input="{}")["executionArn"]
    deadline = time.monotonic() + 20
    while True:
        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages") or []
        if got:
            return json.loads(got[0]["Body"])["token"], execution_arn
        assert time.monotonic() < deadline, "the execution never handed out its token"


def finished_output(execution_arn: str) -> dict[str, Any]:
    """The output of a waiting execution once its task was completed (it must have SUCCEEDED)."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    deadline = time.monotonic() + 20
    while (described := sfn.describe_execution(executionArn=execution_arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the waiting task was never completed"
        time.sleep(0.1)
    assert described["status"] == "SUCCEEDED", described
    return dict(json.loads(described["output"]))
