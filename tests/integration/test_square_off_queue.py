"""The MIS square-off sends its EOD exits through the ExitQueue (moto), so they get the exit Lambda's claim, SQS
retries and DLQ; the exit Lambda (functions/exit) places them at the paper exchange like any other exit."""
# ruff: noqa: F811  (the `world` fixture imported from tests.support.exits is redefined as test parameters)

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from bracketflow.settings import get_settings
from tests.support.exits import seed_protected, sqs_event, world  # noqa: F401
from tests.support.intake import FakeContext


def take_messages(w: Any) -> list[tuple[str, dict[str, Any]]]:
    """Everything on the ExitQueue as (message id, body), deleted as the exit Lambda's poller would."""
    out: list[tuple[str, dict[str, Any]]] = []
    while True:
        got = w.sqs.receive_message(QueueUrl=w.queues["exits"], MaxNumberOfMessages=10).get("Messages") or []
        if not got:
            return out
        for m in got:
            out.append((m["MessageId"], json.loads(m["Body"])))
            w.sqs.delete_message(QueueUrl=w.queues["exits"], ReceiptHandle=m["ReceiptHandle"])


def run_exit_lambda(*bodies: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

    from functions.exit.app import lambda_handler

    try:
        return lambda_handler(sqs_event(*bodies), FakeContext())
    except BatchProcessingError:  # every record failed: Lambda would return the whole batch to the queue
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id, _ in bodies]}


def sells(w: Any) -> list[dict[str, Any]]:
    return [o for o in w.orders() if o["transaction_type"] == "SELL" and o["order_type"] == "MARKET"]


def test_square_off_queues_one_eod_intent_in_the_exit_queue_shape(world):
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.services.square_off import square_off_mis

    # Given a PROTECTED MIS bracket
    b = seed_protected(world.paper)
    # When the square-off runs
    result = square_off_mis(force=True)
    # Then it placed nothing itself: one EOD intent waits on the ExitQueue, in the queue's agreed shape
    assert [(e["bracket_id"], e["outcome"]) for e in result["exits"]] == [(b.id, "QUEUED")]
    assert sells(world) == []
    assert BracketRepository().get(b.id).status.value == "PROTECTED"
    ((message_id, body),) = take_messages(world)
    assert message_id == result["exits"][0]["message_id"]
    assert body["bracket_id"] == b.id and body["reason"] == "EOD" and body["ltp"] is None
    assert body["stop_price"] == "1480" and body["detected_at"].endswith("Z")
    assert set(body) == {"bracket_id", "reason", "ltp", "stop_price", "detected_at", "message_index", "packet_index"}


def test_the_exit_lambda_places_a_queued_eod_exit_once_even_when_two_runs_queued_it(world):
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.services.square_off import square_off_mis

    # Given a PROTECTED MIS bracket and two square-off runs before the exit Lambda read its queue
    b = seed_protected(world.paper)
    square_off_mis(force=True)
    square_off_mis(force=True)
    queued = take_messages(world)
    assert len(queued) == 2
    # When the exit Lambda gets both intents
    response = run_exit_lambda(*queued)
    # Then both are acknowledged, the GTT is cancelled and exactly one MARKET SELL exit exists, reason EOD
    assert response["batchItemFailures"] == []
    (exit_order,) = sells(world)
    assert exit_order["quantity"] == 10 and exit_order["tradingsymbol"] == "INFY"
    after = BracketRepository().get(b.id)
    assert after.status.value == "EXITING" and after.exit_reason.value == "EOD"
    assert after.exit.broker_order_id == exit_order["order_id"]
    assert world.gtt(b.gtt_id)["status"] == "deleted"
    # And a square-off run after the claim queues nothing more
    assert square_off_mis(force=True)["exits"] == [] and take_messages(world) == []


def test_an_eod_exit_the_broker_could_not_take_goes_back_to_the_queue_for_its_retry(world):
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.services.square_off import square_off_mis

    # Given a PROTECTED MIS bracket queued for EOD, and a broker answering every order placement with a 500
    b = seed_protected(world.paper)
    square_off_mis(force=True)
    ((message_id, body),) = take_messages(world)
    world.paper.set_faults([{"kind": "http_500", "match": {"path": "/orders", "method": "POST"}, "count": 5}])
    # When the exit Lambda handles it
    response = run_exit_lambda((message_id, body))
    # Then the message is reported failed (SQS redelivers it; after maxReceiveCount it reaches the DLQ and its alarm)
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [message_id]
    assert BracketRepository().get(b.id).status.value == "EXITING" and sells(world) == []
    # And its redelivery, the broker well again and the unknown placement's hold (EXIT_UNKNOWN_HOLD_S) past, resumes
    # the claim and places the one exit
    world.paper.set_faults([])
    time.sleep(get_settings().exit_unknown_hold_s)
    assert run_exit_lambda((message_id, body))["batchItemFailures"] == []
    after = BracketRepository().get(b.id)
    assert after.exit_reason.value == "EOD" and len(sells(world)) == 1


@pytest.mark.parametrize("reason", ["EOD", "MANUAL"])
def test_exit_intents_without_a_price_are_accepted_for_eod_and_manual(reason):
    from bracketflow.contracts import ExitRequest

    body = {"bracket_id": "b1", "reason": reason, "ltp": None, "stop_price": "1480", "detected_at": None}
    intent = ExitRequest.from_json(json.dumps(body))
    assert intent.reason.value == reason and intent.ltp is None


@pytest.mark.parametrize("reason", ["STOP", "TRAIL_STOP"])
def test_a_stop_exit_intent_must_carry_its_ltp(reason):
    from bracketflow.contracts import ExitRequest
    from bracketflow.errors import ValidationFailed

    with pytest.raises(ValidationFailed, match="ltp"):
        ExitRequest.from_json(json.dumps({"bracket_id": "b1", "reason": reason, "stop_price": "1480"}))


def test_square_off_without_an_exit_queue_fails_before_touching_any_bracket(world, monkeypatch):
    from bracketflow.adapters.aws import reset_clients
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.services.square_off import square_off_mis

    b = seed_protected(world.paper)
    monkeypatch.setenv("EXIT_QUEUE_URL", "")  # (restored with the rest of the world's settings after the test)
    reset_clients()
    with pytest.raises(RuntimeError, match="EXIT_QUEUE_URL"):
        square_off_mis(force=True)
    assert BracketRepository().get(b.id).status.value == "PROTECTED" and sells(world) == []
