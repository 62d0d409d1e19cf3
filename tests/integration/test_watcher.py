"""The watcher (functions/watcher) against moto and the paper exchange: order updates from the queue and from Kite
postbacks are recorded once on the bracket, and a waiting workflow task gets its outcome even when the fill
arrived before the task stored its token.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.support.intake import REGION, api_event, brackets_table_schema
from tests.support.order_updates import (
    broker_order,
    finished_output,
    postback_event,
    registered_bracket,
    sqs_records,
    waiting_execution,
    watcher,
)
from tests.support.stack import bracket

TABLE = "bracketflow-watcher-test"


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


def test_a_fill_from_the_queue_is_recorded_once(world):
    from bracketflow.services.lifecycle import place_entry

    # Given a bracket whose entry rests at the broker
    bracket_id = registered_bracket("acc_watch")
    placed = place_entry(bracket_id)
    assert placed["outcome"] == "PLACED"
    # When the market comes to it and the COMPLETE update arrives twice
    world.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500}])
    order = broker_order(world, placed["broker_order_id"])
    assert order["status"] == "COMPLETE"
    first = watcher(sqs_records(order))
    version = bracket(bracket_id).version
    second = watcher(sqs_records(order))
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
    bracket_id = registered_bracket("acc_watch")
    order = broker_order(world, place_entry(bracket_id)["broker_order_id"])
    assert order["status"] == "REJECTED"
    # When a postback signed with the wrong secret arrives
    refused = watcher(postback_event(order, secret="not-the-secret"))
    # Then it is refused with 401 and the bracket is untouched
    assert refused["statusCode"] == 401
    assert bracket(bracket_id).status.value == "ENTRY_PENDING"
    # And the genuine postback marks it FAILED with the broker's reason
    accepted = watcher(postback_event(order))
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
    bracket_id = registered_bracket("acc_watch")
    placed = place_entry(bracket_id)
    world.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500}])
    watcher(sqs_records(broker_order(world, placed["broker_order_id"])))
    assert bracket(bracket_id).status.value == "ENTRY_FILLED"
    # When a workflow task now waits on a token and stores it
    token, execution_arn = waiting_execution("entry")
    store_entry_token(bracket_id, token)
    # Then the wait completes at once with the fill
    output = finished_output(execution_arn)
    assert (output["outcome"], output["filled_quantity"]) == ("FILLED", 10)
    assert Decimal(output["average_price"]) == Decimal("1500")
