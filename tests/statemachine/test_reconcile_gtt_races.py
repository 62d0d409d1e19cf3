"""Reconciliation closes a bracket whose GTT fired at the broker at an awkward moment, on the local stack.

The stack relays the paper ticker's order updates to the watcher (as the streamer does), so these are the races as
they happen in production, not updates that never exist:

(a) the streamer's stop exit and the GTT fire together: the exit Lambda claims the bracket (EXITING), finds the GTT
    already triggered and rightly places nothing (ExitSkipped); the GTT child's fill update is lost. Without a repair
    the bracket stays EXITING forever. The next reconcile run closes it from the broker's GTT child order.
(b) the GTT fires before its ProtectionPlaced is recorded (the protection Lambda slow between creating the GTT and
    writing it): the watcher gets the child's fill while the bracket is still ENTRY_FILLED and cannot match it. The
    bracket is then recorded PROTECTED by a GTT that has already closed the position; reconciliation closes it.
(c) the same, but the protection step dies after creating the GTT and is retried with the market beyond the stop:
    the retry adopts the fired GTT instead of flattening (at market) a position the broker had already closed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from bracketflow.domain.ids import order_tag
from local.stack import LocalStack
from tests.support.stack import (
    bracket,
    broker_orders,
    events,
    fresh_strategy,
    gtts,
    market_fixture,
    net_position,
    paper,
    protected_bracket,
    quote,
    run_reconcile,
    stack_fixture,
    token_stored,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "reconcile-races-key"
STATUS_BOUND_S = 90  # a bound for a busy 2-core machine, not a speed claim

stack = stack_fixture(API_KEY, relay=True)


market = market_fixture()


def gtt_child(stack: LocalStack, gtt_id: str) -> dict[str, Any]:
    """The order the GTT placed when it fired, as the broker's order book shows it."""
    (gtt,) = [g for g in gtts(stack) if str(g["id"]) == str(gtt_id)]
    assert gtt["status"] == "triggered", gtt
    placed = [o["result"]["order_result"]["order_id"] for o in gtt["orders"] if o.get("result")]
    (order,) = [o for o in broker_orders(stack, "INFY") if o["order_id"] in placed]
    return order


def reconciled(bracket_id: str) -> list[str]:
    return [e["repair"] for e in events(bracket_id) if e["type"] == "Reconciled"]


def closed_event(bracket_id: str) -> dict[str, Any]:
    return next(e for e in events(bracket_id) if e["type"] == "BracketClosed")


def test_a_gtt_that_fired_as_the_exit_was_claimed_is_closed_from_its_child_order(market):
    # Given a protected BUY 10 INFY at 1500 (stop 1480, target 1550), its workflow waiting for the exit
    b = protected_bracket(market, fresh_strategy("fired-under-claim"), timeout_s=STATUS_BOUND_S)
    wait_for("the exit wait's look at the broker to end", lambda: token_stored(b.id, "exit_task_token"))
    # When the market falls through the stop: the GTT fires and its stop child fills, but the child's order updates
    # are lost on the way to the watcher
    paper(market, "faults", {"rules": [{"kind": "drop_order_update", "match": {"tradingsymbol": "INFY"}, "count": 5}]})
    quote(market, "1479", "1478.95", "1479")
    child = gtt_child(market, b.gtt_id)
    assert child["status"] == "COMPLETE" and int(child["filled_quantity"]) == 10
    # And the streamer's exit for the same crossing reaches the exit Lambda, which finds the GTT triggered
    market.client("sqs").send_message(
        QueueUrl=market.queue_url("ExitQueue"),
        MessageBody=json.dumps(
            {
                "bracket_id": b.id,
                "reason": "STOP",
                "ltp": "1479",
                "stop_price": "1480",
                "detected_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "message_index": 0,
                "packet_index": 0,
            }
        ),
    )
    wait_for("the exit Lambda's ExitSkipped", lambda: "ExitSkipped" in [e["type"] for e in events(b.id)])
    paper(market, "faults", {"rules": []})
    stuck = bracket(b.id)
    assert stuck.status.value == "EXITING" and stuck.exit is None  # nothing else would ever move it
    # And reconciliation runs
    summary = run_reconcile(market)
    # Then the bracket is CLOSED from the GTT's child order: reason STOP, the child's fill, P&L for 10 shares
    assert summary["repairs"] == {"GTT_FIRED_DURING_EXIT": 1}, summary
    done = wait_for_status(b.id, "CLOSED", timeout_s=STATUS_BOUND_S)
    fill = Decimal(str(child["average_price"]))
    assert done.exit_reason.value == "STOP" and done.exit.broker_order_id == child["order_id"]
    assert done.exit.average_price == fill and done.exit.filled_quantity == 10
    closed = closed_event(b.id)
    assert closed["reason"] == "STOP" and Decimal(str(closed["pnl"])) == (fill - Decimal("1500")) * 10
    assert reconciled(b.id) == ["GTT_FIRED_DURING_EXIT"]
    types = [e["type"] for e in events(b.id)]
    assert types.index("ExitSkipped") < types.index("ExitFilled") < types.index("Reconciled")
    # And no exit of ours was ever placed: the GTT alone closed the position
    ours = [o for o in broker_orders(market, "INFY") if o["tag"] == order_tag(b.id, "EXIT")]
    assert ours == [] and net_position(market, "INFY") == 0
    # And the next run finds nothing to repair
    assert run_reconcile(market)["repairs"] == {}


def test_a_gtt_that_fired_before_its_protection_was_recorded_is_closed_by_reconciliation(market, monkeypatch):
    from bracketflow.adapters.dynamo import lifecycle as store
    from bracketflow.services import protect

    # Given a protection step that is slow between creating the GTT and recording it, and a market that falls
    # through the stop in that moment: the GTT fires at once and its stop child fills; the watcher receives the
    # child's fill while the bracket is still ENTRY_FILLED (and can match it to nothing)
    record_protection = protect._record_protection
    seen: dict[str, Any] = {}

    def slow_record(bracket_id: str, gtt_id: str, *args: Any, **kwargs: Any) -> Any:
        quote(market, "1479", "1478.95", "1479")
        child = gtt_child(market, gtt_id)
        key = store.order_update_key(child["order_id"], "COMPLETE", int(child["filled_quantity"]))
        wait_for("the watcher to take the child's fill", lambda: store.table().get_item(Key=key).get("Item"))
        seen.update(child=child, status=bracket(bracket_id).status.value)
        return record_protection(bracket_id, gtt_id, *args, **kwargs)

    monkeypatch.setattr(protect, "_record_protection", slow_record)
    # When a bracket is placed and protected
    b = protected_bracket(market, fresh_strategy("fired-before-record"), timeout_s=STATUS_BOUND_S)
    monkeypatch.undo()
    child = seen["child"]
    assert seen["status"] == "ENTRY_FILLED" and child["status"] == "COMPLETE"
    # Then it is PROTECTED by a GTT that has already closed the position, and no update will come to say so
    assert b.status.value == "PROTECTED" and net_position(market, "INFY") == 0
    assert "ExitFilled" not in [e["type"] for e in events(b.id)]
    # When reconciliation runs
    summary = run_reconcile(market)
    # Then the bracket is CLOSED with the GTT's fill: reason STOP, P&L, the repair audited
    assert summary["repairs"] == {"GTT_TRIGGERED": 1}, summary
    done = wait_for_status(b.id, "CLOSED", timeout_s=STATUS_BOUND_S)
    fill = Decimal(str(child["average_price"]))
    assert done.exit_reason.value == "STOP" and done.exit.broker_order_id == child["order_id"]
    assert done.exit.average_price == fill
    assert Decimal(str(closed_event(b.id)["pnl"])) == (fill - Decimal("1500")) * 10
    assert reconciled(b.id) == ["GTT_TRIGGERED"]


def test_a_retried_protection_adopts_its_fired_gtt_instead_of_exiting_a_position_the_broker_closed(market, monkeypatch):
    from bracketflow.errors import ConcurrentModification
    from bracketflow.services import protect

    # Given a protection attempt that dies after creating the GTT (standing in for a Lambda timeout between the
    # broker's answer and the record), while the market falls through the stop: the GTT fires, its child fills,
    # the position is flat; the workflow retries the step with the market now beyond the stop
    record_protection = protect._record_protection
    attempts: list[str] = []

    def dies_once(bracket_id: str, gtt_id: str, *args: Any, **kwargs: Any) -> Any:
        attempts.append(gtt_id)
        if len(attempts) == 1:
            quote(market, "1479", "1478.95", "1479")
            raise ConcurrentModification("the protection step died before recording its GTT")
        return record_protection(bracket_id, gtt_id, *args, **kwargs)

    monkeypatch.setattr(protect, "_record_protection", dies_once)
    # When the bracket is placed
    b = protected_bracket(market, fresh_strategy("fired-before-retry"), timeout_s=STATUS_BOUND_S)
    monkeypatch.undo()
    # Then the retry adopted the GTT that fired (no second GTT, no emergency exit into a short position)
    assert len(attempts) == 2 and attempts[0] == attempts[1] == b.gtt_id
    assert len(gtts(market)) == 1 and net_position(market, "INFY") == 0
    assert "EmergencyExitPlaced" not in [e["type"] for e in events(b.id)]
    # And reconciliation closes it from the GTT's fill
    child = gtt_child(market, b.gtt_id)
    summary = run_reconcile(market)
    assert summary["repairs"] == {"GTT_TRIGGERED": 1}, summary
    done = wait_for_status(b.id, "CLOSED", timeout_s=STATUS_BOUND_S)
    assert done.exit_reason.value == "STOP" and done.exit.broker_order_id == child["order_id"]
    assert net_position(market, "INFY") == 0
