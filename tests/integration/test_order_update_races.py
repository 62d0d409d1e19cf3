"""Order updates that outrun their order id (issues 5, 6): moto, the paper exchange, and the real watcher.

A MARKET exit can fill, and its COMPLETE reach the watcher, before the Lambda that placed it has recorded the order
id and its BROKERORDER map. The race is staged deterministically: the broker the placing code uses is the real paper
broker, except that the watcher is handed the order's update (read back from the paper exchange, as the ticker would
send it) before place_order returns. Each case runs both orders of arrival and must end in the same state.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.support.exits import exit_message, seed_protected
from tests.support.intake import REGION, brackets_table_schema
from tests.support.order_updates import (
    broker_order,
    finished_output,
    hand_built_update,
    postback_event,
    registered_bracket,
    sqs_records,
    waiting_execution,
    watcher,
)
from tests.support.stack import bracket, event_types

TABLE = "bracketflow-races-test"


@pytest.fixture
def world(monkeypatch, paper_exchange) -> Iterator[Any]:
    """moto (the table, the streamer control queue, Step Functions that run) and the paper exchange as broker."""
    from bracketflow.adapters.aws import reset_clients

    env = {
        "TABLE_NAME": TABLE,
        "BROKER": "paper",
        "BROKER_BASE_URL": paper_exchange.base_url,
        "BROKER_SECRET_NAME": "bracketflow/races-test-broker",
        "BROKER_LOOKUP_PAUSE_S": "0.05",
        "BROKER_TIMEOUT_S": "1",
        "BROKER_MAX_ATTEMPTS": "2",
        "STAGE": "local",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        boto3.resource("dynamodb", region_name=REGION).create_table(TableName=TABLE, **brackets_table_schema())
        control = boto3.client("sqs", region_name=REGION).create_queue(QueueName="bf-control")["QueueUrl"]
        monkeypatch.setenv("STREAMER_CONTROL_QUEUE_URL", control)
        reset_clients()
        yield paper_exchange
        reset_clients()


# ---------- helpers ----------


class UpdateBeforeAnswer:
    """The real broker, but each placed order's update reaches the watcher before place_order returns."""

    def __init__(self, paper: Any) -> None:
        from bracketflow.adapters.broker import get_broker

        self.inner = get_broker()
        self.paper = paper
        self.watcher_answers: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def place_order(self, request: Any) -> Any:
        order_id = self.inner.place_order(request)
        self.watcher_answers.append(watcher(sqs_records(broker_order(self.paper, order_id))))
        return order_id


def fill_entry_at_1500(paper: Any, monkeypatch: Any, *, update_first: bool) -> tuple[str, dict[str, Any]]:
    """Run PlaceEntry on a new bracket in a market that fills its LIMIT 1500 at once; the order's update reaches the
    watcher after PlaceEntry recorded the order (update_first=False) or before (True)."""
    from bracketflow.services import lifecycle

    paper.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500}])
    bracket_id = registered_bracket("acc_race")
    racing = UpdateBeforeAnswer(paper)
    if update_first:
        monkeypatch.setattr(lifecycle, "get_broker", lambda: racing)
    placed = lifecycle.place_entry(bracket_id)
    if update_first:
        assert racing.watcher_answers == [{"batchItemFailures": []}]
    else:
        assert watcher(sqs_records(broker_order(paper, placed["broker_order_id"]))) == {"batchItemFailures": []}
    return bracket_id, placed


# ---------- (a) an update that outruns its order id still completes the bracket ----------


@pytest.mark.parametrize("update_first", [False, True], ids=["recorded-first", "update-first"])
def test_an_entry_fill_that_reaches_the_watcher_before_place_entry_records_it_still_fills_the_bracket(
    world, monkeypatch, update_first
):
    # Given a LIMIT BUY entry the market fills the moment it is placed
    # When PlaceEntry places it and the COMPLETE update reaches the watcher before (or after) the order id is recorded
    bracket_id, placed = fill_entry_at_1500(world, monkeypatch, update_first=update_first)
    # Then PlaceEntry reports the order placed, and the bracket is ENTRY_FILLED with that order's fill
    filled = bracket(bracket_id)
    assert placed["outcome"] == "PLACED"
    assert filled.status.value == "ENTRY_FILLED"
    assert (filled.entry.broker_order_id, filled.entry.filled_quantity, filled.entry.average_price) == (
        placed["broker_order_id"],
        10,
        Decimal("1500"),
    )
    # And the audit trail is the same in both orders of arrival: placed once, filled once
    assert event_types(bracket_id) == ["BracketRegistered", "EntryPlaced", "EntryFilled"]
    # And the waiting task, storing its token afterwards, gets the fill at once
    from bracketflow.services.lifecycle import store_entry_token

    token, execution_arn = waiting_execution("entry")
    store_entry_token(bracket_id, token)
    output = finished_output(execution_arn)
    assert (output["outcome"], output["filled_quantity"], Decimal(output["average_price"])) == (
        "FILLED",
        10,
        Decimal("1500"),
    )


@pytest.mark.parametrize("update_first", [False, True], ids=["recorded-first", "update-first"])
def test_an_exit_fill_that_reaches_the_watcher_before_the_exit_lambda_records_it_still_closes_the_bracket(
    world, monkeypatch, update_first
):
    from bracketflow.contracts import ExitRequest
    from bracketflow.services import execute_exit as exit_service
    from bracketflow.services.finalize import finalize
    from bracketflow.services.lifecycle import store_exit_token

    # Given a PROTECTED bracket whose workflow waits for its exit, and a trailed stop (1495, above the GTT's 1480)
    # the streamer saw crossed
    protected = seed_protected(world, ltp=Decimal("1500"))
    token, execution_arn = waiting_execution("exit")
    assert store_exit_token(protected.id, token)["waiting"] is True
    world.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1494, "bid": 1494, "ask": 1494.05}])
    racing = UpdateBeforeAnswer(world)
    if update_first:
        monkeypatch.setattr(exit_service, "get_broker", lambda: racing)
    intent = ExitRequest.from_json(json.dumps(exit_message(protected.id, stop="1495", ltp="1494")))
    # When the exit Lambda places the MARKET exit and its COMPLETE reaches the watcher before (or after) the order
    # id is recorded
    result = exit_service.execute_exit(intent, claim_id="msg-1")
    if update_first:
        assert racing.watcher_answers == [{"batchItemFailures": []}]
    else:
        assert watcher(sqs_records(broker_order(world, str(result.broker_order_id)))) == {"batchItemFailures": []}
    # Then the exit Lambda placed one order, and the bracket's exit leg is that order, filled
    assert result.outcome.value == "PLACED"
    exiting = bracket(protected.id)
    assert exiting.status.value == "EXITING"
    assert (exiting.exit.broker_order_id, exiting.exit.status.value, exiting.exit.filled_quantity) == (
        result.broker_order_id,
        "EXECUTED",
        10,
    )
    assert len([o for o in world.state()["orders"] if (o.get("tag") or "").endswith("X")]) == 1
    # And WaitForExit was completed with the exit, and Finalize closes the bracket with it
    output = finished_output(execution_arn)
    assert (output["exit"]["order_id"], output["exit"]["reason"], output["exit"]["quantity"]) == (
        result.broker_order_id,
        "TRAIL_STOP",
        10,
    )
    assert finalize(protected.id, output["exit"])["status"] == "CLOSED"
    # And the trail is the same in both orders of arrival
    assert event_types(protected.id) == [
        "ProtectionPlaced",
        "ExitRequested",
        "ExitPlaced",
        "ExitFilled",
        "BracketClosed",
    ]


@pytest.mark.parametrize("update_first", [False, True], ids=["recorded-first", "update-first"])
def test_a_cancel_path_flatten_that_fills_before_it_is_recorded_still_exits_the_bracket(
    world, monkeypatch, update_first
):
    from bracketflow.domain.enums import ExitReason
    from bracketflow.services import emergency_exit as flatten

    # Given a bracket whose entry filled, and a trader who cancelled it (the workflow flattens what filled)
    bracket_id, _ = fill_entry_at_1500(world, monkeypatch, update_first=False)
    racing = UpdateBeforeAnswer(world)
    if update_first:
        monkeypatch.setattr(flatten, "get_broker", lambda: racing)
    # When the flatten's MARKET SELL fills and its update reaches the watcher before (or after) it is recorded
    result = flatten.emergency_exit(bracket_id, "cancelled by the trader", ExitReason.MANUAL)
    if update_first:
        assert racing.watcher_answers == [{"batchItemFailures": []}]
    else:
        assert watcher(sqs_records(broker_order(world, result["broker_order_id"]))) == {"batchItemFailures": []}
    # Then the bracket is EXITING for MANUAL with that order filled, recorded once with the flatten's own events
    exiting = bracket(bracket_id)
    assert (exiting.status.value, exiting.exit_reason.value) == ("EXITING", "MANUAL")
    assert (exiting.exit.broker_order_id, exiting.exit.status.value, exiting.exit.quantity) == (
        result["broker_order_id"],
        "EXECUTED",
        10,
    )
    assert event_types(bracket_id)[-3:] == ["ExitRequested", "ExitPlaced", "ExitFilled"]
    assert result["status"] == "EXITING"


# ---------- (b) ours and not yet matched: retried; not ours: acknowledged ----------


def test_an_update_of_our_order_that_nothing_maps_yet_is_handed_back_and_a_foreign_one_is_not(world):
    from bracketflow.adapters.dynamo import lifecycle as store
    from bracketflow.domain.ids import order_tag
    from bracketflow.services.batch import leg_tag

    # Given a bracket whose entry has no TAG or BROKERORDER map yet, and updates of three orders in one batch:
    # that entry (our tag), one the trader placed by hand (a foreign tag), and a batch leg (its own, longer tag)
    bracket_id = registered_bracket("acc_race")
    ours = hand_built_update("260401000000001", order_tag(bracket_id, "ENTRY"))
    foreign = hand_built_update("260401000000002", "myscalp1")
    batch_leg = hand_built_update("260401000000003", leg_tag("bt_01JQ0000000000000000000000", 1))
    event = sqs_records(ours, foreign, batch_leg)
    # When the watcher gets the batch
    answer = watcher(event)
    # Then only our order's record is reported failed, so SQS delivers it again; the others are acknowledged
    assert answer == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert bracket(bracket_id).status.value == "CREATED"
    # And when PlaceEntry's map appears and the record comes back, it is acted on (its claim was released)
    store.put_order_tag_map(order_tag(bracket_id, "ENTRY"), bracket(bracket_id), "ENTRY")
    assert watcher(sqs_records(ours)) == {"batchItemFailures": []}
    filled = bracket(bracket_id)
    assert (filled.status.value, filled.entry.broker_order_id, filled.entry.filled_quantity) == (
        "ENTRY_FILLED",
        "260401000000001",
        10,
    )


def test_a_postback_of_our_unmapped_order_is_answered_retry_and_leaves_the_queue_copy_to_act(world):
    from bracketflow.domain.ids import order_tag

    # Given an update of our entry that nothing maps yet, arriving as a genuine postback
    bracket_id = registered_bracket("acc_race")
    order = hand_built_update("260401000000009", order_tag(bracket_id, "ENTRY"))
    # When the watcher gets it
    answer = watcher(postback_event(order))
    # Then it answers 200 "retry" (Kite never resends a postback) and the same update from the queue is not
    # swallowed as a duplicate: it is handed back too
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"])["data"]["outcome"] == "retry"
    event = sqs_records(order)
    assert watcher(event) == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}


# ---------- (c) the same update twice changes nothing ----------


def test_the_same_update_twice_changes_nothing_even_once_its_dedupe_key_is_gone(world, monkeypatch):
    from bracketflow.adapters.dynamo import lifecycle as store
    from bracketflow.services import lifecycle

    # Given an entry fill the watcher recorded by its tag before PlaceEntry recorded the order
    world.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500}])
    bracket_id = registered_bracket("acc_race")
    racing = UpdateBeforeAnswer(world)
    monkeypatch.setattr(lifecycle, "get_broker", lambda: racing)
    placed = lifecycle.place_entry(bracket_id)
    order = broker_order(world, placed["broker_order_id"])
    before = bracket(bracket_id)
    assert before.status.value == "ENTRY_FILLED"
    # When the same update arrives again (the postback after the ticker), and again after its dedupe key expired
    from bracketflow.services.order_updates import ingest

    again = ingest(order, "postback")
    store.release_order_update(order["order_id"], order["status"], int(order["filled_quantity"]))
    once_more = ingest(order, "ticker")
    # Then the first repeat is a duplicate and the last finds nothing left to do: the bracket is unchanged
    assert again == "duplicate"
    assert once_more == "entry:ENTRY_FILLED"
    assert bracket(bracket_id).version == before.version
    assert event_types(bracket_id).count("EntryFilled") == 1
    assert event_types(bracket_id).count("EntryPlaced") == 1


# ---------- GTT children: the GTT fires while the exit Lambda holds its claim ----------


@pytest.mark.parametrize("update_during_claim", [False, True], ids=["after-exit-skipped", "during-the-claim"])
def test_a_gtt_that_fires_under_the_exit_lambdas_claim_still_closes_the_bracket_from_its_order(
    world, monkeypatch, update_during_claim
):
    from bracketflow.contracts import ExitRequest
    from bracketflow.services import execute_exit as exit_service
    from bracketflow.services.finalize import finalize
    from bracketflow.services.lifecycle import store_exit_token

    # Given a PROTECTED bracket whose workflow waits for its exit, and a market that falls through the GTT's stop
    # (1480): the GTT fires its LIMIT SELL and the streamer sends its exit intent at the same moment
    protected = seed_protected(world, ltp=Decimal("1500"))
    token, execution_arn = waiting_execution("gtt")
    store_exit_token(protected.id, token)
    world.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1479, "bid": 1479, "ask": 1479.05}])
    child = next(o for o in world.state()["orders"] if not o.get("tag"))
    update = broker_order(world, str(child["order_id"]))
    assert (update["status"], update.get("tag")) == ("COMPLETE", None)
    intent = ExitRequest.from_json(json.dumps(exit_message(protected.id, stop="1480", ltp="1479")))
    # When the exit Lambda claims the bracket (finding the GTT triggered, it places nothing) and the GTT order's
    # COMPLETE reaches the watcher after that, or while the Lambda holds the claim but has not decided yet
    during: list[dict[str, Any]] = []
    if update_during_claim:
        from bracketflow.adapters.broker import get_broker

        real = get_broker()

        class DeletesAfterTheWatcherRan:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def delete_gtt(self, gtt_id: int) -> Any:
                during.append(watcher(sqs_records(update)))
                return real.delete_gtt(gtt_id)

        monkeypatch.setattr(exit_service, "get_broker", DeletesAfterTheWatcherRan)
    result = exit_service.execute_exit(intent, claim_id="msg-gtt")
    assert result.outcome.value == "BROKER_CLOSED"
    if update_during_claim:
        # (the undecided claim hands the update back; SQS delivers it again later)
        assert [len(answer["batchItemFailures"]) for answer in during] == [1]
    assert watcher(sqs_records(update)) == {"batchItemFailures": []}
    # Then the GTT's order is the bracket's exit, WaitForExit gets it and Finalize closes the bracket with it
    exiting = bracket(protected.id)
    assert (exiting.exit.broker_order_id, exiting.exit.status.value, exiting.exit_reason.value) == (
        str(child["order_id"]),
        "EXECUTED",
        "STOP",
    )
    output = finished_output(execution_arn)
    assert output["exit"]["order_id"] == str(child["order_id"])
    assert finalize(protected.id, output["exit"])["status"] == "CLOSED"
    assert not [o for o in world.state()["orders"] if (o.get("tag") or "").endswith("X")]


# ---------- an emergency flatten that races a GTT an earlier attempt left ----------


def test_an_emergency_exit_adopts_a_gtt_of_an_earlier_attempt_that_already_fired_instead_of_flattening(
    world, monkeypatch
):
    import time

    from bracketflow.adapters.broker import get_broker
    from bracketflow.domain.ids import order_tag
    from bracketflow.services import emergency_exit as flatten
    from bracketflow.services.protect import protection_request

    # Given a filled BUY 10 INFY (stop 1480) whose protection step created its GTT at the broker but never recorded
    # it (the answer was lost and the step gave up, so the workflow flattens)
    monkeypatch.setenv("BROKER_LOOKUP_WINDOW_S", "0")
    bracket_id, _ = fill_entry_at_1500(world, monkeypatch, update_first=False)
    filled = bracket(bracket_id)
    request = protection_request(filled, 10, Decimal("1500"), Decimal("0.05"), Decimal("0.5"))
    gtt_id = get_broker().create_gtt(request)
    # And the market fell through the stop before the flatten: that GTT fired and its SELL filled
    world.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1475, "bid": 1474.95, "ask": 1475}])
    deadline = time.monotonic() + 10
    while next(g for g in world.state()["gtts"] if g["id"] == gtt_id)["status"] != "triggered":
        assert time.monotonic() < deadline, "the GTT never fired"
        time.sleep(0.05)
    # When the emergency exit runs
    result = flatten.emergency_exit(bracket_id, "protection failed")
    # Then it places no second SELL (that would leave the account short 10): the fired GTT is the exit, and the
    # bracket is recorded PROTECTED by it, for its fill to close it
    assert [o for o in world.state()["orders"] if o.get("tag") == order_tag(bracket_id, "EXIT")] == []
    adopted = bracket(bracket_id)
    assert (adopted.status.value, adopted.gtt_id, result["status"]) == ("PROTECTED", str(gtt_id), "PROTECTED")
    positions = [p for p in world.state()["positions"] if p["tradingsymbol"] == "INFY"]
    assert sum(int(p["quantity"]) for p in positions) == 0


def test_a_bracket_flagged_while_its_entrys_outcome_was_unknown_gets_its_filled_entry_back_from_the_broker(world):
    from bracketflow.adapters.broker import get_broker
    from bracketflow.adapters.broker.port import OrderRequest
    from bracketflow.domain.ids import order_tag
    from bracketflow.services.lifecycle import record_failure
    from bracketflow.services.reconcile import reconcile_bracket, take_snapshot

    # Given PlaceEntry's order reached the broker and filled, but its answers were lost until the step gave up for
    # good (a broker down for longer than its retries): the bracket is under review, with no order recorded
    world.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500}])
    bracket_id = registered_bracket("acc_flagged")
    entry = OrderRequest(
        "NSE", "INFY", "BUY", 10, "MIS", "LIMIT", price=Decimal("1500"), tag=order_tag(bracket_id, "ENTRY")
    )
    get_broker().place_order(entry)
    record_failure(bracket_id, "BrokerTimeout", "the broker's answer was lost", "entry")
    assert bracket(bracket_id).status.value == "NEEDS_REVIEW"
    # When reconciliation runs
    result = reconcile_bracket(take_snapshot()["run_id"], bracket_id)
    # Then it finds the entry by its tag and records it and its fill: ENTRY_FILLED, to be protected like any fill
    # (before, a flagged bracket with no order recorded was never looked at again: a filled position with no stop)
    assert result["repair"] == "ENTRY_FOUND_BY_TAG", result
    after = bracket(bracket_id)
    assert (after.status.value, after.entry.filled_quantity) == ("ENTRY_FILLED", 10)
    assert "EntryPlaced" in event_types(bracket_id) and "EntryFilled" in event_types(bracket_id)


def test_a_filled_entry_whose_workflow_fails_for_good_stays_filled_for_reconciliation_to_protect(world, monkeypatch):
    from bracketflow.services.lifecycle import record_failure

    # Given a filled entry whose protection and flatten both failed past their retries (a broker down for long)
    bracket_id, _ = fill_entry_at_1500(world, monkeypatch, update_first=False)
    # When the workflow records its failure
    record_failure(bracket_id, "BrokerUnavailable", "the broker is unavailable", "exit")
    # Then the bracket is still ENTRY_FILLED, with the failure in its trail: reconciliation protects or flattens an
    # ENTRY_FILLED bracket whose workflow has ended, while under review nothing would act on the open position
    after = bracket(bracket_id)
    assert after.status.value == "ENTRY_FILLED"
    assert event_types(bracket_id)[-1] == "WorkflowFailed"


@pytest.mark.parametrize("error", ["BrokerRateLimited", "RateLimited"])
def test_an_entry_refused_for_rate_until_its_retries_ran_out_fails_as_never_placed(world, error):
    from bracketflow.services.lifecycle import record_failure

    # Given an entry the broker (429) or our own order limiter refused each time PlaceEntry tried: no order was sent
    bracket_id = registered_bracket("acc_rate")
    # When the workflow records its failure
    record_failure(bracket_id, error, "Too many requests", "entry")
    # Then the bracket fails, nothing to review: a refusal for rate comes before the broker acts
    after = bracket(bracket_id)
    assert (after.status.value, after.entry.status.value) == ("FAILED", "FAILED")
    assert world.state()["orders"] == []
