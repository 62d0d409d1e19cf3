"""statemachine/reconcile.asl.json run for real on the local stack, the paper exchange (manual market) as the broker.

The trader (or a fault) acts directly at the paper exchange — cancels an order or a GTT, closes the position, lets
a GTT fire — while no order update reaches the watcher (this stack runs no streamer and no relay: every update is
"dropped"). After the next reconcile run the bracket says what happened, with a Reconciled audit event.
Also: the MIS square-off exits with reason EOD through the exit path (its ExitQueue and the exit Lambda).
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from bracketflow.adapters.dynamo.reconcile import get_last_run
from local.stack import LocalStack
from tests.support.stack import (
    bracket,
    events,
    market_fixture,
    net_position,
    place,
    protected_bracket,
    quote,
    reset_market,
    run_reconcile,
    stack_fixture,
    token_stored,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "reconcile-key"

# no relay: no order update ever reaches the watcher
stack = stack_fixture(API_KEY, relay=False)


market = market_fixture()


def sell_by_hand(kite, price: float) -> None:
    """The trader sells the bracket's 10 INFY (MIS) at the broker, outside bracketflow."""
    kite.place_order(
        kite.VARIETY_REGULAR,
        exchange="NSE",
        tradingsymbol="INFY",
        transaction_type="SELL",
        quantity=10,
        product="MIS",
        order_type="LIMIT",
        price=price,
    )


def reconciled(bracket_id: str) -> list[str]:
    return [e["repair"] for e in events(bracket_id) if e["type"] == "Reconciled"]


def test_an_entry_fill_whose_update_was_dropped_is_recovered(market, kite):
    # Given an entry resting below the market, its workflow waiting on the fill
    bracket_id = place(market, entry_price="1490", sl_price="1470", target_price="1540")
    wait_for_status(bracket_id, "ENTRY_PENDING")
    wait_for("the entry wait's token", lambda: token_stored(bracket_id, "entry_task_token"))
    # When the market comes down and fills it, but no order update ever reaches the watcher
    quote(market, "1490", "1489.95", "1490")
    order_id = bracket(bracket_id).entry.broker_order_id
    assert kite.order_history(order_id)[-1]["status"] == "COMPLETE"
    assert bracket(bracket_id).status.value == "ENTRY_PENDING"
    summary = run_reconcile(market)
    # Then reconciliation recorded the fill, and the workflow went on to protect the position
    assert summary["repairs"].get("MISSED_ENTRY_UPDATE") == 1
    done = wait_for_status(bracket_id, "PROTECTED")
    assert done.entry.filled_quantity == 10 and done.entry.average_price == Decimal("1490")
    assert "MISSED_ENTRY_UPDATE" in reconciled(bracket_id)
    types = [e["type"] for e in events(bracket_id)]
    assert types.index("EntryFilled") < types.index("Reconciled") < types.index("ProtectionPlaced")


def test_an_entry_cancelled_at_the_broker_cancels_the_bracket(market, kite):
    bracket_id = place(market, entry_price="1490", sl_price="1470", target_price="1540")
    wait_for_status(bracket_id, "ENTRY_PENDING")
    # (once the workflow waits on its token: before that, its own look at the broker would see the cancel)
    wait_for("the entry wait's token", lambda: token_stored(bracket_id, "entry_task_token"))
    kite.cancel_order(kite.VARIETY_REGULAR, bracket(bracket_id).entry.broker_order_id)
    run_reconcile(market)
    done = wait_for_status(bracket_id, "CANCELLED")
    assert done.entry.status.value == "CANCELLED" and "MISSED_ENTRY_UPDATE" in reconciled(bracket_id)


def test_a_gtt_cancelled_at_the_broker_is_replaced_while_the_position_is_open(market, kite):
    # Given a protected bracket
    b = protected_bracket(market)
    old_gtt = int(b.gtt_id)
    # When the trader deletes its GTT at the broker
    kite.delete_gtt(old_gtt)
    summary = run_reconcile(market)
    # Then a new GTT with the same stop and target protects the position, and the bracket says so
    after = bracket(b.id)
    assert after.status.value == "PROTECTED" and after.gtt_id != str(old_gtt)
    gtt = kite.get_gtt(int(after.gtt_id))
    assert gtt["status"] == "active" and gtt["condition"]["trigger_values"] == [1480, 1550]
    assert [o["quantity"] for o in gtt["orders"]] == [10, 10]
    assert summary["repairs"] == {"REPROTECTED": 1} and "REPROTECTED" in reconciled(b.id)
    assert summary["orphan_gtts"] == []
    # And the run is kept for the console's status panel, with the bracket it repaired and whose it is
    kept = get_last_run()
    assert kept["last_run"]["run_id"] == summary["run_id"] == kept["last_repair"]["run_id"]
    assert kept["last_run"]["repaired"] == [{"bracket_id": b.id, "repair": "REPROTECTED", "account_id": b.account_id}]
    # When the next run finds nothing to repair, it is the latest run, and the repair stays the latest repair
    quiet = run_reconcile(market)
    kept = get_last_run()
    assert kept["last_run"]["run_id"] == quiet["run_id"] and kept["last_run"]["repairs"] == {}
    assert kept["last_repair"]["run_id"] == summary["run_id"]


def test_a_position_closed_at_the_broker_closes_the_bracket_and_cancels_its_gtt(market, kite):
    b = protected_bracket(market)
    # When the trader sells the 10 shares by hand at the broker (the GTT is still there)
    sell_by_hand(kite, 1499.95)
    run_reconcile(market)
    # Then the bracket is CLOSED (MANUAL) at the broker's price with its P&L, and the GTT can no longer fire
    done = wait_for_status(b.id, "CLOSED")
    assert done.exit_reason.value == "MANUAL" and done.exit.average_price == Decimal("1499.95")
    closed = [e for e in events(b.id) if e["type"] == "BracketClosed"][-1]
    assert Decimal(closed["pnl"]) == Decimal("-0.5")
    assert kite.get_gtt(int(b.gtt_id))["status"] == "deleted"
    assert "POSITION_CLOSED_AT_BROKER" in reconciled(b.id)


def test_a_gtt_that_fired_at_the_broker_closes_the_bracket_at_its_target(market, kite):
    b = protected_bracket(market)
    # When the market reaches the target: the broker's GTT fires and its order fills (no update reaches us)
    quote(market, "1551", "1550.95", "1551")
    assert kite.get_gtt(int(b.gtt_id))["status"] == "triggered"
    summary = run_reconcile(market)
    done = wait_for_status(b.id, "CLOSED")
    assert done.exit_reason.value == "TARGET" and done.exit.average_price >= Decimal("1550")
    assert summary["repairs"] == {"GTT_TRIGGERED": 1} and "GTT_TRIGGERED" in reconciled(b.id)


def test_gtts_no_bracket_owns_are_reported_not_cancelled_by_default(market, kite):
    legs = [{"transaction_type": "SELL", "quantity": 5, "order_type": "LIMIT", "product": "CNC", "price": 1400}]
    stray = kite.place_gtt(kite.GTT_TYPE_SINGLE, "INFY", "NSE", [1400], 1500, legs)["trigger_id"]
    summary = run_reconcile(market)
    assert summary["orphan_gtts"] == [str(stray)] and summary["orphan_gtts_cancelled"] == []
    assert kite.get_gtt(stray)["status"] == "active"


def test_mis_square_off_exits_with_reason_eod_through_the_exit_path(market, kite):
    # Given an open MIS bracket and a CNC one
    mis = protected_bracket(market)
    cnc = protected_bracket(market, product="CNC", strategy="cnc-keeps")
    # When the square-off runs (forced: the clock is not 15:15 IST in a test)
    result = market.runtime.invoke("SquareOffFunction", {"force": True})
    # Then the MIS bracket's EOD exit was queued, and the exit Lambda (fed by the ExitQueue) cancelled its GTT and
    # placed one MARKET exit; the CNC bracket is untouched
    assert [e["bracket_id"] for e in result["exits"]] == [mis.id] and result["exits"][0]["outcome"] == "QUEUED"
    exiting = wait_for(
        "the queued EOD exit placed", lambda: (lambda b: b if b.exit is not None else None)(bracket(mis.id))
    )
    assert exiting.status.value == "EXITING" and exiting.exit_reason.value == "EOD"
    assert kite.get_gtt(int(mis.gtt_id))["status"] == "deleted"
    assert bracket(cnc.id).status.value == "PROTECTED"
    # And a second square-off the same day places nothing more
    again = market.runtime.invoke("SquareOffFunction", {"force": True})
    assert again["exits"] == []
    # And with the exit's fill update dropped, reconciliation finishes the job: CLOSED, reason EOD
    run_reconcile(market)
    done = wait_for_status(mis.id, "CLOSED")
    assert done.exit_reason.value == "EOD" and "MISSED_EXIT_UPDATE" in reconciled(mis.id)
    exits = [o for o in kite.orders() if o["transaction_type"] == "SELL" and o["tag"] and o["status"] == "COMPLETE"]
    assert len(exits) == 1


def test_square_off_waits_for_its_time_unless_forced(stack):
    from datetime import UTC, datetime

    from bracketflow.services.square_off import square_off_due

    assert square_off_due(datetime(2026, 3, 2, 9, 45, tzinfo=UTC))  # 15:15 IST
    assert square_off_due(datetime(2026, 3, 2, 9, 59, tzinfo=UTC))
    assert not square_off_due(datetime(2026, 3, 2, 9, 44, tzinfo=UTC))
    assert not square_off_due(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))  # 15:30 IST: the market has closed


@pytest.fixture
def setting(monkeypatch):
    """Change one of the in-process functions' settings for this test (they share this process's environment)."""
    from bracketflow.settings import get_settings

    def set_(name: str, value: str) -> None:
        monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield set_
    monkeypatch.undo()
    get_settings.cache_clear()


def test_a_vanished_gtt_with_the_market_through_the_stop_is_exited_at_stop(market, kite):
    # Given a protected bracket (stop 1480) whose GTT the trader deleted, and a market that has since fallen to 1475
    b = protected_bracket(market)
    kite.delete_gtt(int(b.gtt_id))
    quote(market, "1475", "1474.95", "1475")
    summary = run_reconcile(market)
    # Then no GTT is placed (it would fire at once): the position is exited as a stop, through the exit Lambda
    assert summary["repairs"] == {"STOP_EXIT_QUEUED": 1} and "STOP_EXIT_QUEUED" in reconciled(b.id)
    after = wait_for("the exit order", lambda: (x := bracket(b.id)).exit and x.exit.broker_order_id and x)
    assert after.status.value == "EXITING" and after.exit_reason.value == "STOP"
    exit_order = kite.order_history(after.exit.broker_order_id)[-1]
    assert (exit_order["transaction_type"], exit_order["order_type"], exit_order["quantity"]) == ("SELL", "MARKET", 10)
    assert [g for g in kite.get_gtts() if g["status"] == "active"] == []


def test_a_vanished_gtt_with_the_market_beyond_the_target_is_exited_at_target(market, kite):
    # Given the same, but the market has risen past the target (1550): a new GTT would fire its target leg at once
    b = protected_bracket(market)
    kite.delete_gtt(int(b.gtt_id))
    quote(market, "1555", "1554.95", "1555")
    summary = run_reconcile(market)
    # Then no GTT is placed and the position is not left with no stop while it waits for a human: it is exited as
    # the GTT's target leg would have, through the exit Lambda
    assert summary["repairs"] == {"STOP_EXIT_QUEUED": 1} and "STOP_EXIT_QUEUED" in reconciled(b.id)
    after = wait_for("the exit order", lambda: (x := bracket(b.id)).exit and x.exit.broker_order_id and x)
    assert after.exit_reason.value == "TARGET"
    exit_order = kite.order_history(after.exit.broker_order_id)[-1]
    assert (exit_order["transaction_type"], exit_order["order_type"], exit_order["quantity"]) == ("SELL", "MARKET", 10)
    assert exit_order["status"] == "COMPLETE" and net_position(market, "INFY") == 0
    assert [g for g in kite.get_gtts() if g["status"] == "active"] == []


def test_without_reprotect_a_vanished_gtt_flags_the_bracket_for_review(market, kite, setting):
    setting("RECONCILE_REPROTECT", "false")
    b = protected_bracket(market)
    kite.delete_gtt(int(b.gtt_id))
    summary = run_reconcile(market)
    after = bracket(b.id)
    assert after.status.value == "NEEDS_REVIEW" and summary["repairs"] == {"FLAGGED": 1}
    flagged = [e for e in events(b.id) if e["type"] == "FlaggedForReview"][-1]
    assert (
        flagged["by"] == "reconcile" and flagged["previous_status"] == "PROTECTED" and "GTT_GONE" in flagged["reason"]
    )
    assert [g for g in kite.get_gtts() if g["status"] == "active"] == []  # nothing placed behind the trader's back


def _filled_with_its_workflow_stopped(stack: LocalStack) -> str:
    """A bracket whose entry filled after its workflow was stopped by hand: ENTRY_FILLED, nothing left to protect it."""
    bracket_id = place(stack, entry_price="1490", sl_price="1470", target_price="1540")
    wait_for_status(bracket_id, "ENTRY_PENDING")
    wait_for("the entry wait's token", lambda: token_stored(bracket_id, "entry_task_token"))
    machine = stack.state_machine_arn("BracketStateMachine")
    execution = machine.replace(":stateMachine:", ":execution:") + ":" + bracket_id
    stack.client("stepfunctions").stop_execution(executionArn=execution, error="Stopped", cause="by hand")
    quote(stack, "1490", "1489.95", "1490")
    run_reconcile(stack)  # records the missed fill; the stopped workflow cannot go on to protect it
    assert bracket(bracket_id).status.value == "ENTRY_FILLED"
    # (ABORTED, or FAILED when moto's interpreter takes the stop as an error of the waiting task: ended either way)
    sfn = stack.client("stepfunctions")
    wait_for("the workflow to end", lambda: sfn.describe_execution(executionArn=execution)["status"] != "RUNNING")
    return bracket_id


def test_a_filled_entry_whose_workflow_ended_is_protected(market, kite, setting):
    bracket_id = _filled_with_its_workflow_stopped(market)
    # When the next run finds it unprotected for over the limit (zero here) and its workflow no longer running
    setting("RECONCILE_RESUME_AFTER_S", "0")
    summary = run_reconcile(market)
    # Then it is protected exactly as PlaceProtection would have: one GTT OCO for the filled quantity
    after = bracket(bracket_id)
    assert summary["repairs"] == {"PROTECTION_RESUMED": 1} and "PROTECTION_RESUMED" in reconciled(bracket_id)
    assert after.status.value == "PROTECTED" and after.gtt_id
    gtt = kite.get_gtt(int(after.gtt_id))
    assert gtt["status"] == "active" and gtt["condition"]["trigger_values"] == [1470, 1540]
    assert [o["quantity"] for o in gtt["orders"]] == [10, 10]
    # And a further run leaves it alone (protected, its GTT active)
    assert run_reconcile(market)["repairs"] == {}


def test_a_filled_entry_whose_workflow_ended_is_not_protected_too_early(market, kite):
    bracket_id = _filled_with_its_workflow_stopped(market)
    # Within RECONCILE_RESUME_AFTER_S (60 s) of the fill, a workflow may still be placing its GTT: nothing is done
    assert run_reconcile(market)["repairs"] == {}
    assert bracket(bracket_id).status.value == "ENTRY_FILLED" and kite.get_gtts() == []


def test_a_filled_entry_whose_workflow_ended_is_flattened_when_no_gtt_is_possible(market, kite, setting):
    bracket_id = _filled_with_its_workflow_stopped(market)
    # When the market has fallen through the stop (1470) before the run finds it: a GTT would fire at once
    quote(market, "1460", "1459.95", "1460")
    setting("RECONCILE_RESUME_AFTER_S", "0")
    summary = run_reconcile(market)
    # Then the position is flattened at market, as the workflow's EmergencyExit would, and no GTT is placed
    after = bracket(bracket_id)
    assert summary["repairs"] == {"FLATTENED": 1} and "FLATTENED" in reconciled(bracket_id)
    assert after.status.value == "EXITING" and after.exit_reason.value == "EMERGENCY"
    exit_order = kite.order_history(after.exit.broker_order_id)[-1]
    assert (exit_order["transaction_type"], exit_order["quantity"], exit_order["status"]) == ("SELL", 10, "COMPLETE")
    assert kite.get_gtts() == []


def test_a_filled_entry_whose_workflow_ended_and_position_is_gone_is_flagged(market, kite, setting):
    bracket_id = _filled_with_its_workflow_stopped(market)
    # When the trader has sold the 10 shares by hand before the run
    sell_by_hand(kite, 1489.95)
    setting("RECONCILE_RESUME_AFTER_S", "0")
    run_reconcile(market)
    # Then nothing is placed behind the trader's back, and the bracket waits for a human
    assert bracket(bracket_id).status.value == "NEEDS_REVIEW" and kite.get_gtts() == []
    flagged = [e for e in events(bracket_id) if e["type"] == "FlaggedForReview"][-1]
    assert "UNPROTECTED_FILL" in flagged["reason"] and flagged["previous_status"] == "ENTRY_FILLED"


def test_an_entry_missing_from_the_broker_for_over_the_frozen_limit_is_flagged(market, setting):
    setting("RECONCILE_FROZEN_AFTER_S", "0")
    bracket_id = place(market, entry_price="1490", sl_price="1470", target_price="1540")
    wait_for_status(bracket_id, "ENTRY_PENDING")
    # The broker's book no longer lists the entry (the paper exchange forgets every order; a working order, OPEN or
    # TRIGGER PENDING, is never "frozen": see test_reconcile_resting_entry.py)
    reset_market(market)
    quote(market, "1500", "1499.95", "1500")
    time.sleep(1.1)  # the bracket's last change must be older than the (zero) limit
    run_reconcile(market)
    after = bracket(bracket_id)
    assert after.status.value == "NEEDS_REVIEW"
    flagged = [e for e in events(bracket_id) if e["type"] == "FlaggedForReview"][-1]["reason"]
    assert "FROZEN_ORDER" in flagged and "not in the broker's order book" in flagged


def test_orphan_gtts_are_cancelled_when_configured(market, kite, setting, monkeypatch):

    setting("RECONCILE_CANCEL_ORPHAN_GTTS", "true")
    monkeypatch.setattr("bracketflow.services.reconcile.summary.ORPHAN_MIN_AGE_S", 0)
    owned = protected_bracket(market)
    legs = [{"transaction_type": "SELL", "quantity": 5, "order_type": "LIMIT", "product": "CNC", "price": 1400}]
    stray = kite.place_gtt(kite.GTT_TYPE_SINGLE, "INFY", "NSE", [1400], 1500, legs)["trigger_id"]
    summary = run_reconcile(market)
    assert summary["orphan_gtts"] == [str(stray)] and summary["orphan_gtts_cancelled"] == [str(stray)]
    assert kite.get_gtt(stray)["status"] == "deleted"
    assert kite.get_gtt(int(owned.gtt_id))["status"] == "active"  # the bracket's own GTT is never touched


def test_the_broker_view_survives_its_round_trip_through_the_snapshot(market, kite):
    from bracketflow.services.reconcile import BrokerView, load_view, take_snapshot

    protected_bracket(market)
    run = take_snapshot()
    view = load_view(run["run_id"])
    assert BrokerView.from_json(view.to_json()) == view
    (gtt,) = view.gtts.values()
    assert gtt.status == "active" and gtt.trigger_values == (Decimal("1480"), Decimal("1550"))
    assert view.net_quantity("NSE", "INFY", "MIS") == 10


def test_a_live_gtt_of_a_finished_bracket_is_cancelled_by_default_and_a_strays_is_only_reported(
    market, kite, monkeypatch
):
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.domain.enums import BracketStatus
    from bracketflow.domain.events import BracketClosed

    monkeypatch.setattr("bracketflow.services.reconcile.summary.ORPHAN_MIN_AGE_S", 0)
    # Given a protected bracket recorded CLOSED while its GTT is still live at the broker (a close that never
    # removed it: the position is gone, so the GTT could only fire into a flat account and open one)
    owned = protected_bracket(market)
    repo = BracketRepository()
    closed = owned.transition(BracketStatus.CLOSED)
    repo.save(owned, closed, [BracketClosed(owned.id, data={"reason": "MANUAL"}, bracket_version=closed.version)])
    # And a GTT the trader placed by hand, which no bracket claims
    legs = [{"transaction_type": "SELL", "quantity": 5, "order_type": "LIMIT", "product": "CNC", "price": 1400}]
    stray = kite.place_gtt(kite.GTT_TYPE_SINGLE, "INFY", "NSE", [1400], 1500, legs)["trigger_id"]
    # When reconciliation runs with the default settings
    summary = run_reconcile(market)
    # Then the finished bracket's GTT is cancelled, and the stray is reported (alarmed) but left alone
    assert summary["finished_gtts_cancelled"] == [str(owned.gtt_id)]
    assert kite.get_gtt(int(owned.gtt_id))["status"] == "deleted"
    assert summary["orphan_gtts"] == [str(stray)] and summary["orphan_gtts_cancelled"] == []
    assert kite.get_gtt(stray)["status"] == "active"
