"""A watcher that dies after claiming an order update (Lambda timeout, out of memory, the sandbox torn down) never
releases its claim. The claim is a lease: the update's redelivery is a duplicate while the lease runs, and is acted on
once it has lapsed. Moto for AWS, the paper exchange as the broker, the real watcher.

The death is staged at AWS's edge: right after the claim, the watcher's next DynamoDB read ends the invocation with a
BaseException, which (like a killed process) runs none of the watcher's own clean-up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.support.intake import REGION, brackets_table_schema
from tests.support.order_updates import broker_order, registered_bracket, sqs_records, watcher
from tests.support.stack import bracket, event_types, wait_for

TABLE = "bracketflow-claim-lease-test"
LEASE_S = 1


class SandboxKilled(BaseException):
    """The invocation's end from outside: nothing in the function catches it, nothing after it runs."""


@pytest.fixture
def world(monkeypatch, paper_exchange) -> Iterator[Any]:
    from bracketflow.adapters.aws import reset_clients

    env = {
        "TABLE_NAME": TABLE,
        "BROKER": "paper",
        "BROKER_BASE_URL": paper_exchange.base_url,
        "BROKER_SECRET_NAME": "bracketflow/claim-lease-test-broker",
        "BROKER_LOOKUP_PAUSE_S": "0.05",
        "BROKER_TIMEOUT_S": "1",
        "BROKER_MAX_ATTEMPTS": "2",
        "STAGE": "local",
        "ORDER_UPDATE_LEASE_SECONDS": str(LEASE_S),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        boto3.resource("dynamodb", region_name=REGION).create_table(TableName=TABLE, **brackets_table_schema())
        reset_clients()
        yield paper_exchange
        reset_clients()


def die_after_the_claim() -> Any:
    """Kill the next watcher invocation at its first DynamoDB read (the claim is a write, and comes first)."""
    from bracketflow.adapters.dynamo.table import table

    events = table().meta.client.meta.events
    armed = [True]

    def kill(**_: Any) -> None:
        if armed[0]:
            armed[0] = False
            raise SandboxKilled("the watcher's sandbox is gone")

    events.register("before-call.dynamodb.GetItem", kill)
    return lambda: events.unregister("before-call.dynamodb.GetItem", kill)


def test_an_update_whose_watcher_died_after_claiming_it_is_acted_on_after_the_lease(world):
    from bracketflow.services import lifecycle

    # Given a BUY 10 INFY entry that filled at the broker, its COMPLETE not yet recorded
    world.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500}])
    bracket_id = registered_bracket("acc_lease")
    placed = lifecycle.place_entry(bracket_id)
    order = broker_order(world, placed["broker_order_id"])
    assert order["status"] == "COMPLETE"
    assert bracket(bracket_id).status.value == "ENTRY_PENDING"
    # When the watcher claims the fill and dies before acting on it
    undo = die_after_the_claim()
    try:
        with pytest.raises(SandboxKilled):
            watcher(sqs_records(order))
    finally:
        undo()
    assert bracket(bracket_id).status.value == "ENTRY_PENDING"
    # Then a delivery while the dead watcher's lease runs is still taken as the copy in flight
    early = watcher(sqs_records(order))
    assert early == {"batchItemFailures": []}
    assert bracket(bracket_id).status.value == "ENTRY_PENDING"
    # And the redelivery after the lease is acted on: the entry is recorded filled, once
    time.sleep(LEASE_S + 1.1)  # past the lease (the claim's clock has whole seconds)
    watcher(sqs_records(order))
    filled = wait_for("the fill recorded", lambda: bracket(bracket_id).status.value == "ENTRY_FILLED", 5)
    assert filled
    assert bracket(bracket_id).entry.filled_quantity == 10
    assert event_types(bracket_id).count("EntryFilled") == 1
    # And a later copy of the same update is a duplicate again (the claim is done, not leased)
    time.sleep(LEASE_S + 1.1)
    version = bracket(bracket_id).version
    watcher(sqs_records(order))
    assert bracket(bracket_id).version == version


def test_a_finished_claim_keeps_deduplicating_after_the_lease(world):
    from bracketflow.adapters.dynamo import lifecycle as store

    # Given an update claimed and acted on
    assert store.claim_order_update("ord-1", "COMPLETE", 10, 3600, LEASE_S)
    store.finish_order_update("ord-1", "COMPLETE", 10)
    # When its lease would have lapsed
    time.sleep(LEASE_S + 1.1)
    # Then the same update is still a duplicate, while an unfinished claim of another is taken over
    assert not store.claim_order_update("ord-1", "COMPLETE", 10, 3600, LEASE_S)
    assert store.claim_order_update("ord-2", "COMPLETE", 10, 3600, LEASE_S)
    time.sleep(LEASE_S + 1.1)
    assert store.claim_order_update("ord-2", "COMPLETE", 10, 3600, LEASE_S)
