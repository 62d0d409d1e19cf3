"""functions/exit against moto and the paper exchange: claim, GTT cancelled first, one MARKET exit with
market_protection, redeliveries and duplicates placing nothing, a triggered GTT meaning no exit, ambiguous and
failed placements resolved without a second order."""
# ruff: noqa: F811  (the `world` fixture imported from tests.support.exits is redefined as test parameters)

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest

from bracketflow.settings import get_settings
from tests.support.exits import exit_message, seed_protected, sqs_event, world  # noqa: F401
from tests.support.intake import FakeContext


def invoke(*bodies):
    """Run the handler like Lambda: when every record fails Powertools raises, and the whole batch comes back."""
    from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

    from functions.exit.app import lambda_handler

    try:
        return lambda_handler(sqs_event(*bodies), FakeContext())
    except BatchProcessingError:
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id, _ in bodies]}


def failed_ids(response) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def bracket_of(bracket_id):
    from bracketflow.adapters.dynamo.brackets import BracketRepository

    return BracketRepository().get(bracket_id)


def events_of(bracket_id) -> list[str]:
    from bracketflow.adapters.dynamo.brackets import BracketRepository

    return [e["type"] for e in BracketRepository().events(bracket_id)]


def exit_tag(bracket_id: str) -> str:
    from bracketflow.domain.ids import order_tag

    return order_tag(bracket_id, "EXIT")


def test_an_exit_intent_cancels_the_gtt_first_then_places_one_market_exit(world):
    # Given a PROTECTED long bracket whose stop trailed to 1490.50, and the market falling through it
    bracket = seed_protected(world.paper)
    world.paper.set_quotes(
        [{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": "1490", "bid": "1489.95", "ask": "1490"}]
    )
    # When the exit intent arrives
    response = invoke(("m-1", exit_message(bracket.id, stop="1490.50", ltp="1490.00")))
    # Then the batch succeeded, the GTT is gone, and exactly one SELL MARKET with market protection carries our tag
    assert failed_ids(response) == []
    assert world.gtt(bracket.gtt_id)["status"] == "deleted"
    exits = world.orders(exit_tag(bracket.id))
    assert len(exits) == 1
    order = exits[0]
    assert (order["transaction_type"], order["order_type"], order["quantity"]) == ("SELL", "MARKET", 10)
    assert Decimal(str(order["market_protection"])) == Decimal("5")
    # And the bracket is EXITING for TRAIL_STOP with the trailed stop, the exit leg and the watcher's map recorded
    stored = bracket_of(bracket.id)
    assert stored.status.value == "EXITING"
    assert stored.exit_reason.value == "TRAIL_STOP"
    assert stored.stop_price == Decimal("1490.50")
    assert stored.exit.broker_order_id == order["order_id"]
    assert stored.exit.status.value == "SENT_TO_BROKER"
    assert events_of(bracket.id)[-2:] == ["ExitRequested", "ExitPlaced"]
    mapping = world.table.get_item(Key={"pk": f"BROKERORDER#{order['order_id']}", "sk": "MAP"})["Item"]
    assert (mapping["bracket_id"], mapping["role"]) == (bracket.id, "EXIT")


def test_a_redelivered_or_duplicate_exit_message_places_nothing(world):
    # Given a bracket already exited by message m-1
    bracket = seed_protected(world.paper)
    invoke(("m-1", exit_message(bracket.id, stop="1480", ltp="1479", reason="STOP")))
    version = bracket_of(bracket.id).version
    # When the same message is redelivered and a second intent for the same bracket arrives (in one batch)
    response = invoke(
        ("m-1", exit_message(bracket.id, stop="1480", ltp="1479", reason="STOP")),
        ("m-2", exit_message(bracket.id, stop="1480", ltp="1478", reason="STOP")),
    )
    # Then both are acknowledged, there is still one exit order, and the bracket was not written again
    assert failed_ids(response) == []
    assert len(world.orders(exit_tag(bracket.id))) == 1
    assert bracket_of(bracket.id).version == version


def test_a_triggered_gtt_means_the_broker_closed_the_position_and_no_exit_is_placed(world):
    # Given the market crossed the GTT's stop trigger before the exit intent was handled, and its child (a LIMIT sell
    # at 1475) filled
    bracket = seed_protected(world.paper)
    world.paper.set_quotes(
        [{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": "1478", "bid": "1477.95", "ask": "1478"}]
    )
    assert world.gtt(bracket.gtt_id)["status"] == "triggered"
    # When the exit intent arrives
    response = invoke(("m-1", exit_message(bracket.id, stop="1480", ltp="1478", reason="STOP")))
    # Then it is acknowledged, no exit order exists, and the skip is on the audit trail
    assert failed_ids(response) == []
    assert world.orders(exit_tag(bracket.id)) == []
    assert bracket_of(bracket.id).status.value == "EXITING"
    assert events_of(bracket.id)[-1] == "ExitSkipped"


def _delete_by_hand(world, gtt_id: int, monkeypatch) -> None:
    from bracketflow.adapters.broker import get_broker

    get_broker().delete_gtt(gtt_id)


def _let_a_year_pass(world, gtt_id: int, monkeypatch) -> None:
    engine = world.paper.exchange.engine  # the session's exchange: its clock is put back after the test
    now = engine._clock()
    monkeypatch.setattr(engine, "_clock", lambda: now + timedelta(days=366))  # Kite GTTs live a year


@pytest.mark.parametrize(("gone", "status"), [(_delete_by_hand, "deleted"), (_let_a_year_pass, "expired")])
def test_a_gtt_that_can_no_longer_fire_does_not_stop_the_exit(world, gone, status, monkeypatch):
    # Given a protected bracket whose GTT was deleted by hand at the broker, or expired there
    bracket = seed_protected(world.paper)
    gone(world, int(bracket.gtt_id), monkeypatch)
    assert world.gtt(bracket.gtt_id)["status"] == status
    world.paper.set_quotes(
        [{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": "1479", "bid": "1478.95", "ask": "1479"}]
    )
    # When the stop is hit (nothing at the broker protects the position any more)
    response = invoke(("m-1", exit_message(bracket.id, stop="1480", ltp="1479", reason="STOP")))
    # Then the exit is placed all the same: a GTT that cannot fire has nothing left to cancel
    assert failed_ids(response) == []
    exits = world.orders(exit_tag(bracket.id))
    assert [(o["transaction_type"], o["order_type"], o["quantity"]) for o in exits] == [("SELL", "MARKET", 10)]
    assert bracket_of(bracket.id).exit.broker_order_id == exits[0]["order_id"]


def test_a_bracket_someone_else_is_exiting_is_left_alone(world):
    # Given a bracket that is no longer PROTECTED (the trader's DELETE claimed it first)
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.domain.enums import BracketStatus, ExitReason

    bracket = seed_protected(world.paper)
    repo = BracketRepository()
    manual = {"type": "ExitRequested", "reason": "MANUAL", "claim_id": "api"}
    repo.transition(repo.get(bracket.id), BracketStatus.EXITING, manual, exit_reason=ExitReason.MANUAL)
    # When a streamer exit intent arrives
    response = invoke(("m-9", exit_message(bracket.id, stop="1480", ltp="1479", reason="STOP")))
    # Then nothing is placed and the GTT is untouched
    assert failed_ids(response) == []
    assert world.orders(exit_tag(bracket.id)) == []
    assert world.gtt(bracket.gtt_id)["status"] == "active"


def test_a_placement_that_failed_after_the_claim_resumes_on_redelivery_with_exactly_one_order(world):
    # Given every placement attempt answered 500 (the Lambda gives up after its attempts, message fails)
    bracket = seed_protected(world.paper)
    world.paper.set_faults([{"kind": "http_500", "match": {"path": "/orders", "method": "POST"}, "count": 5}])
    first = invoke(("m-1", exit_message(bracket.id, stop="1485", ltp="1484")))
    assert failed_ids(first) == ["m-1"]
    assert bracket_of(bracket.id).status.value == "EXITING"
    assert world.orders(exit_tag(bracket.id)) == []
    # And a redelivery at once places nothing: the failed placement's outcome was unknown (a 500 may come after the
    # broker acted, and a broker may list a new order late), so no attempt places again within EXIT_UNKNOWN_HOLD_S
    world.paper.set_faults([])
    early = invoke(("m-1", exit_message(bracket.id, stop="1485", ltp="1484")))
    assert failed_ids(early) == ["m-1"] and world.orders(exit_tag(bracket.id)) == []
    # When, after that hold, SQS redelivers the same message, and another intent for the bracket arrives
    time.sleep(get_settings().exit_unknown_hold_s)
    second = invoke(
        ("m-1", exit_message(bracket.id, stop="1485", ltp="1484")),
        ("m-2", exit_message(bracket.id, stop="1485", ltp="1483")),
    )
    # Then the redelivery finished its own claim: exactly one exit order, recorded on the bracket
    assert failed_ids(second) == []
    exits = world.orders(exit_tag(bracket.id))
    assert len(exits) == 1
    assert bracket_of(bracket.id).exit.broker_order_id == exits[0]["order_id"]


def test_a_lost_placement_answer_is_found_by_tag_not_placed_twice(world):
    # Given the paper exchange places the exit but holds its answer past our read timeout
    bracket = seed_protected(world.paper)
    world.paper.set_faults([{"kind": "timeout", "match": {"path": "/orders", "method": "POST"}, "seconds": 3}])
    # When the exit intent is handled
    response = invoke(("m-1", exit_message(bracket.id, stop="1485", ltp="1484")))
    # Then the order found by its tag is the one recorded, and there is only one
    assert failed_ids(response) == []
    exits = world.orders(exit_tag(bracket.id))
    assert len(exits) == 1
    assert bracket_of(bracket.id).exit.broker_order_id == exits[0]["order_id"]


def test_a_rejected_exit_marks_exit_failed_and_the_retry_places_it(world, monkeypatch):
    # Given the broker refuses the exit outright (here: a market protection it does not accept)
    from bracketflow.adapters.aws import reset_clients

    bracket = seed_protected(world.paper)
    monkeypatch.setenv("BROKER_MARKET_PROTECTION", "250")
    reset_clients()
    # When the intent is handled
    first = invoke(("m-1", exit_message(bracket.id, stop="1485", ltp="1484")))
    # Then the message fails (SQS will retry it) and the bracket says EXIT_FAILED with the broker's reason
    assert failed_ids(first) == ["m-1"]
    assert bracket_of(bracket.id).status.value == "EXIT_FAILED"
    assert events_of(bracket.id)[-1] == "ExitFailed"
    # When the retry comes with the setting fixed
    monkeypatch.setenv("BROKER_MARKET_PROTECTION", "5")
    reset_clients()
    second = invoke(("m-1", exit_message(bracket.id, stop="1485", ltp="1484")))
    # Then the bracket is EXITING again with exactly one live exit order
    assert failed_ids(second) == []
    live = [o for o in world.orders(exit_tag(bracket.id)) if o["status"] not in ("REJECTED", "CANCELLED")]
    assert len(live) == 1
    assert bracket_of(bracket.id).status.value == "EXITING"


@pytest.mark.parametrize(
    "body",
    ["not json", '{"bracket_id": "b1"}', '{"bracket_id": "b1", "reason": "ROLLBACK", "ltp": "1", "stop_price": "1"}'],
)
def test_a_malformed_exit_message_fails_so_it_reaches_the_dead_letter_queue(world, body):
    # When a message that is not a valid exit intent arrives
    response = invoke(("bad", body))
    # Then it is reported failed (after maxReceiveCount, SQS moves it to the DLQ) and nothing was placed
    assert failed_ids(response) == ["bad"]
    assert world.orders() == []


def test_an_exit_cancelled_in_part_at_the_broker_is_retried_for_the_unfilled_quantity_only(world):
    # Given a protected BUY 10 INFY whose exit order the broker fills 3 of, then cancels (market protection)
    from bracketflow.services.order_updates import ingest

    bracket = seed_protected(world.paper)
    world.paper.set_faults([{"kind": "partial_cancel", "match": {"tradingsymbol": "INFY"}, "fill_ratio": 0.3}])
    assert failed_ids(invoke(("m-1", exit_message(bracket.id, stop="1480", ltp="1479", reason="STOP")))) == []
    (first,) = world.orders(exit_tag(bracket.id))
    assert (first["status"], first["filled_quantity"]) == ("CANCELLED", 3)
    # When the watcher gets the cancel
    ingest(first, "ticker")
    # Then the bracket is EXIT_FAILED with what filled kept, and a retry is queued for the exit Lambda
    failed = bracket_of(bracket.id)
    assert failed.status.value == "EXIT_FAILED"
    assert (failed.exit.filled_quantity, failed.exit.status.value) == (3, "CANCELLED")
    (retry,) = world.messages("exits")
    assert retry["bracket_id"] == bracket.id and retry["reason"] == "STOP"
    # And the retry exits the 7 still open, not 10 (which would open a short of 3)
    assert failed_ids(invoke(("m-2", retry))) == []
    second = [o for o in world.orders(exit_tag(bracket.id)) if o["order_id"] != first["order_id"]]
    assert [(o["quantity"], o["status"]) for o in second] == [(7, "COMPLETE")]
    ingest(second[0], "ticker")
    done = bracket_of(bracket.id)
    assert done.exit.filled_quantity == 7 and [leg.filled_quantity for leg in done.earlier_exits] == [3]
    assert sum(p["quantity"] for p in world.paper.state()["positions"] if p["tradingsymbol"] == "INFY") == 0
