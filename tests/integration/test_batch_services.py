"""The batch saga's steps, called directly as Step Functions would (moto for AWS, the paper exchange as the broker).

What must hold (issue 7): placing a leg twice places one order; compensations are idempotent (running one twice
changes nothing, at the broker or in the table) and retryable (a transient broker failure leaves the leg as it was,
the next run finishes it); a square-off whose record was lost is found by its tag, never placed twice; a
compensation that gives up leaves the batch FAILED for review.
"""

# ruff: noqa: F811  (pytest fixtures imported from the support modules are redefined as test parameters)
from __future__ import annotations

from typing import Any

import pytest

from bracketflow.adapters.dynamo.batches import BatchRepository
from bracketflow.domain.accounts import Caller
from bracketflow.errors import BrokerUnavailable
from bracketflow.services import batch
from tests.support.batch import (  # noqa: F401
    LONG_CALL,
    LONG_PUT,
    SHORT_CALL,
    SHORT_PUT,
    batch_aws,
    iron_condor,
    leg,
    quote_condor,
)
from tests.support.intake import aws, trader  # noqa: F401

REJECT_THIRD_LEG = {"kind": "reject", "match": {"tradingsymbol": SHORT_CALL}, "count": 1}


@pytest.fixture
def broker(batch_aws, paper_exchange, monkeypatch):
    """The paper exchange as the broker, one attempt per broker call so a single 500 surfaces to the saga."""
    from bracketflow.adapters.aws import reset_clients

    monkeypatch.setenv("BROKER", "paper")
    monkeypatch.setenv("BROKER_BASE_URL", paper_exchange.base_url)
    monkeypatch.setenv("BROKER_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("BROKER_LOOKUP_PAUSE_S", "0.01")
    reset_clients()
    quote_condor(paper_exchange)
    return paper_exchange


def register(trader, orders, rollback=True) -> str:
    caller = Caller(account_id=trader.account_id, key_hash="test")
    return batch.register_batch(caller, orders, rollback)["batch_id"]


def broker_orders(paper) -> list[dict[str, Any]]:
    return paper.state()["orders"]


def snapshot(paper, batch_id: str) -> tuple[Any, ...]:
    repo = BatchRepository()
    orders = sorted((o["order_id"], o["status"], o["filled_quantity"]) for o in broker_orders(paper))
    return orders, repo.legs(batch_id), [e["type"] for e in repo.events(batch_id)], repo.get(batch_id)


def condor_with_a_rejected_third_leg(trader, paper) -> str:
    """Legs 1-2 filled (MARKET), leg 3 rejected by the broker, leg 4 resting (LIMIT far below); now rolling back."""
    paper.set_faults([REJECT_THIRD_LEG])
    orders = iron_condor()
    orders[3] = leg(LONG_CALL, "BUY", order_type="LIMIT", price=50)
    batch_id = register(trader, orders)
    results = [batch.place_leg(batch_id, n) for n in (1, 2, 3, 4)]
    assert [r["status"] for r in results] == ["PLACED", "PLACED", "FAILED", "PLACED"]
    settled = batch.settle_placements(batch_id, results)
    assert settled == {"rollback": True, "rollback_legs": [4, 3, 2, 1]}
    return batch_id


def test_placing_a_leg_twice_places_one_order(broker, trader):
    # Given a one-leg batch
    batch_id = register(trader, [leg()])
    # When its placement runs twice (a Step Functions retry after a lost answer)
    first = batch.place_leg(batch_id, 1)
    second = batch.place_leg(batch_id, 1)
    # Then one order exists at the broker, tagged for the leg, and both runs report it
    orders = broker_orders(broker)
    assert len(orders) == 1 and orders[0]["tag"] == batch.leg_tag(batch_id, 1)
    assert first == second and first["order_id"] == orders[0]["order_id"] and first["status"] == "PLACED"
    assert [e["type"] for e in BatchRepository().events(batch_id)] == ["BatchRegistered", "BatchLegPlaced"]


def test_a_leg_placed_but_not_recorded_is_adopted_by_its_tag_on_the_rerun(broker, trader, monkeypatch):
    # Given the table failing once right after the broker accepted the order
    batch_id = register(trader, [leg()])
    real_update = BatchRepository.update_leg
    calls = []

    def failing_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("DynamoDB unreachable")
        return real_update(self, *args, **kwargs)

    monkeypatch.setattr(BatchRepository, "update_leg", failing_once)
    with pytest.raises(ConnectionError):
        batch.place_leg(batch_id, 1)
    assert BatchRepository().leg(batch_id, 1)["status"] == "CREATED"
    # When the saga retries the placement
    result = batch.place_leg(batch_id, 1)
    # Then it records the order already at the broker instead of placing another
    orders = broker_orders(broker)
    assert len(orders) == 1 and result["order_id"] == orders[0]["order_id"] and result["status"] == "PLACED"


def test_a_rejected_leg_is_failed_with_the_brokers_reason(broker, trader):
    broker.set_faults([REJECT_THIRD_LEG])
    batch_id = register(trader, [leg(SHORT_CALL, "SELL")])
    result = batch.place_leg(batch_id, 1)
    recorded = BatchRepository().leg(batch_id, 1)
    assert result["status"] == "FAILED" and result["placed"] is False
    assert recorded["broker_status"] == "REJECTED" and recorded["message"]


def test_running_every_compensation_twice_changes_nothing(broker, trader):
    # Given a condor rolled back in full
    batch_id = condor_with_a_rejected_third_leg(trader, broker)
    for n in (4, 3, 2, 1):
        batch.rollback_leg(batch_id, n)
    done = snapshot(broker, batch_id)
    legs = {leg["leg"]: leg for leg in done[1]}
    assert [legs[n]["status"] for n in (1, 2, 3, 4)] == ["SQUARED_OFF", "SQUARED_OFF", "FAILED", "CANCELLED"]
    assert {p["tradingsymbol"]: p["quantity"] for p in broker.state()["positions"]} == {LONG_PUT: 0, SHORT_PUT: 0}
    # When every compensation runs again
    again = [batch.rollback_leg(batch_id, n) for n in (4, 3, 2, 1)]
    # Then nothing changed: no new broker order, no leg change, no new audit event
    assert snapshot(broker, batch_id) == done
    assert [r["rollback"] for r in again] == ["DONE", "NOT_NEEDED", "DONE", "DONE"]
    # And finishing twice leaves one BatchCompleted
    assert batch.finish_batch(batch_id)["status"] == "ROLLED_BACK"
    assert batch.finish_batch(batch_id)["status"] == "ROLLED_BACK"
    assert [e["type"] for e in BatchRepository().events(batch_id)].count("BatchCompleted") == 1


def test_a_transient_broker_failure_leaves_the_leg_for_the_retry_to_finish(broker, trader):
    # Given the resting leg to cancel, and the broker failing the next two cancel calls
    batch_id = condor_with_a_rejected_third_leg(trader, broker)
    broker.set_faults([{"kind": "http_500", "match": {"path": "/orders/regular", "method": "DELETE"}, "count": 2}])
    before = BatchRepository().leg(batch_id, 4)
    # When the compensation runs and fails, twice
    for _ in range(2):
        with pytest.raises(BrokerUnavailable):
            batch.rollback_leg(batch_id, 4)
        # Then the leg is untouched and the order still rests at the broker
        assert BatchRepository().leg(batch_id, 4) == before
    assert [o["status"] for o in broker_orders(broker) if o["tradingsymbol"] == LONG_CALL] == ["OPEN"]
    # When the retry runs once the broker is back
    result = batch.rollback_leg(batch_id, 4)
    # Then the order is cancelled and recorded, once
    assert result["status"] == "CANCELLED" and result["rollback"] == "DONE"
    assert [o["status"] for o in broker_orders(broker) if o["tradingsymbol"] == LONG_CALL] == ["CANCELLED"]
    assert [e["type"] for e in BatchRepository().events(batch_id)].count("BatchLegCancelled") == 1


def test_a_square_off_whose_record_was_lost_is_found_by_its_tag(broker, trader, monkeypatch):
    # Given a filled leg, and the table failing once right after the square-off reached the broker
    batch_id = condor_with_a_rejected_third_leg(trader, broker)
    real_update = BatchRepository.update_leg
    calls = []

    def failing_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("DynamoDB unreachable")
        return real_update(self, *args, **kwargs)

    monkeypatch.setattr(BatchRepository, "update_leg", failing_once)
    with pytest.raises(ConnectionError):
        batch.rollback_leg(batch_id, 1)
    # When the compensation is retried
    result = batch.rollback_leg(batch_id, 1)
    # Then exactly one square-off exists, and it is the one recorded
    tag = batch.square_off_tag(batch_id, 1)
    square_offs = [o for o in broker_orders(broker) if o["tag"] == tag]
    assert len(square_offs) == 1 and square_offs[0]["transaction_type"] == "SELL"
    assert square_offs[0]["quantity"] == 75 and square_offs[0]["status"] == "COMPLETE"
    recorded = BatchRepository().leg(batch_id, 1)
    assert result["status"] == "SQUARED_OFF" and recorded["rollback_order_id"] == square_offs[0]["order_id"]


def test_a_compensation_that_gave_up_leaves_the_batch_failed_for_review(broker, trader):
    # Given legs 1-3 compensated but leg 4's compensation exhausted its retries
    batch_id = condor_with_a_rejected_third_leg(trader, broker)
    for n in (3, 2, 1):
        batch.rollback_leg(batch_id, n)
    gave_up = {"leg": 4, "error": {"Error": "BrokerUnavailable", "Cause": "broker down"}}
    # When the batch finishes
    assert batch.finish_batch(batch_id, [gave_up])["status"] == "FAILED"
    # Then the batch says which leg needs review, and the leg says why
    view = batch.get_batch(Caller(account_id=trader.account_id, key_hash="t"), batch_id, with_events=True)
    assert "legs [4]" in view["message"] and "needs review" in view["message"] and view["completed_at"]
    assert view["legs"][3]["rollback"]["status"] == "GAVE_UP" and "BrokerUnavailable" in view["legs"][3]["message"]
    assert "BatchLegRollbackGaveUp" in [e["type"] for e in view["events"]]
    # And a later manual rerun of that compensation still completes it
    assert batch.rollback_leg(batch_id, 4)["rollback"] == "DONE"


def test_a_batch_without_failures_is_placed_and_one_that_placed_nothing_is_failed(broker, trader):
    placed = register(trader, [leg(), leg(SHORT_PUT, "SELL")])
    results = [batch.place_leg(placed, n) for n in (1, 2)]
    assert batch.settle_placements(placed, results) == {"rollback": False, "rollback_legs": []}
    assert BatchRepository().get(placed)["status"] == "PLACED"
    # A leg the Map gave up on (no placement recorded) is FAILED with the saga's error; nothing placed -> FAILED
    broker.set_faults([REJECT_THIRD_LEG])
    nothing = register(trader, [leg(SHORT_CALL, "SELL")], rollback=False)
    batch.place_leg(nothing, 1)
    assert batch.settle_placements(nothing)["rollback"] is False
    assert BatchRepository().get(nothing)["status"] == "FAILED"
    lost = register(trader, [leg()], rollback=False)
    error = {"leg": 1, "error": {"Error": "RateLimited", "Cause": "order rate limit"}}
    batch.settle_placements(lost, [error])
    recorded = BatchRepository().leg(lost, 1)
    assert recorded["status"] == "FAILED" and "RateLimited" in recorded["message"]


def test_a_late_placement_for_a_batch_that_is_no_longer_placing_places_nothing(broker, trader, monkeypatch):
    # Given a batch that ended FAILED before any leg ran (its saga could not be started), legs still CREATED
    from bracketflow.adapters.aws import reset_clients

    monkeypatch.setenv("BATCH_STATE_MACHINE_ARN", "")
    reset_clients()
    batch_id = register(trader, [leg()])
    assert BatchRepository().get(batch_id)["status"] == "FAILED"
    assert BatchRepository().leg(batch_id, 1)["status"] == "CREATED"
    # When a stray placement of its leg arrives anyway
    result = batch.place_leg(batch_id, 1)
    # Then nothing reaches the broker and the leg is FAILED, saying why
    assert broker_orders(broker) == []
    assert result["status"] == "FAILED" and "already settled" in BatchRepository().leg(batch_id, 1)["message"]
