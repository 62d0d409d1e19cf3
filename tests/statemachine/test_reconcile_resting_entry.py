"""An entry that rests at the broker for a long time, and a fill that lands on a bracket under review, on the local
stack against the paper exchange (the relay carries the paper ticker's order updates to the watcher).

A DAY limit below the market, or a stop-entry (SL) waiting for its breakout, may rest all session. Reconciliation
must not call such an order "frozen": flagged NEEDS_REVIEW, its later fill was dropped by the watcher, the waiting
workflow was handed FILLED with a quantity of 0, and PlaceProtection and EmergencyExit both refused the bracket's
status: a filled position with no GTT and no flatten. And whatever flagged a bracket while its entry still worked,
that entry's fill is recorded, then protected (or flattened), never ignored: by the watcher, or, when its update
is lost, by the next reconcile run.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from local.stack import LocalStack
from tests.support.stack import (
    bracket,
    events,
    gtts,
    market_fixture,
    net_position,
    paper,
    place,
    quote,
    run_reconcile,
    stack_fixture,
    token_stored,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "reconcile-resting-key"
STATUS_BOUND_S = 90  # a bound for a busy 2-core machine, not a speed claim

stack = stack_fixture(API_KEY, relay=True)


market = market_fixture()


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


# A BUY 10 INFY MIS: a DAY limit resting below the market (OPEN), or a stop-entry above it (TRIGGER PENDING).
RESTING = {
    "limit": (
        {"entry_price": "1490", "sl_price": "1470", "target_price": "1540"},
        "OPEN",
        ("1490", "1489.95", "1490"),
    ),
    "stop-entry": (
        {"pricetype": "SL", "trigger_price": "1510", "entry_price": "1512", "sl_price": "1490", "target_price": "1560"},
        "TRIGGER PENDING",
        ("1511", "1510.95", "1511"),
    ),
}


def resting_entry(stack: LocalStack, fields: dict[str, str]) -> str:
    bracket_id = place(stack, **fields)
    wait_for_status(bracket_id, "ENTRY_PENDING", timeout_s=STATUS_BOUND_S)
    wait_for("the entry wait's token", lambda: token_stored(bracket_id, "entry_task_token"))
    return bracket_id


def protected_for(kite: Any, bracket_id: str, quantity: int) -> Any:
    """The bracket once PROTECTED, asserting its GTT at the broker is active for `quantity` on both legs."""
    done = wait_for_status(bracket_id, "PROTECTED", timeout_s=STATUS_BOUND_S)
    assert done.entry.filled_quantity == quantity
    gtt = kite.get_gtt(int(done.gtt_id))
    assert gtt["status"] == "active" and [o["quantity"] for o in gtt["orders"]] == [quantity, quantity]
    return done


def flag_as_reconciliation_would(bracket_id: str, reason: str) -> None:
    """ENTRY_PENDING -> NEEDS_REVIEW with reconciliation's FlaggedForReview event (as it flags an entry missing from
    the broker's order book for RECONCILE_FROZEN_AFTER_S): the state a fill may find a bracket in."""
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.domain.enums import BracketStatus

    repo = BracketRepository()
    current = repo.get(bracket_id)
    assert current is not None and current.status is BracketStatus.ENTRY_PENDING
    flagged = {"type": "FlaggedForReview", "reason": reason, "by": "reconcile", "previous_status": "ENTRY_PENDING"}
    repo.transition(current, BracketStatus.NEEDS_REVIEW, flagged)


@pytest.mark.parametrize("kind", list(RESTING))
def test_an_entry_resting_past_the_frozen_limit_is_not_flagged_and_its_fill_is_protected(market, kite, setting, kind):
    fields, working, fill_quote = RESTING[kind]
    # Given an entry resting at the broker for longer than RECONCILE_FROZEN_AFTER_S (zero here)
    setting("RECONCILE_FROZEN_AFTER_S", "0")
    bracket_id = resting_entry(market, fields)
    order_id = bracket(bracket_id).entry.broker_order_id
    assert kite.order_history(order_id)[-1]["status"] == working
    time.sleep(1.1)  # older than the (zero) limit on the broker's whole-second stamps
    # When reconciliation runs
    summary = run_reconcile(market)
    # Then the bracket is left waiting: the broker shows its entry working, which is not "frozen"
    assert summary["repairs"] == {}, summary
    assert bracket(bracket_id).status.value == "ENTRY_PENDING"
    # And when the market reaches it and it fills, the fill is protected by one GTT for the 10 filled
    quote(market, *fill_quote)
    protected_for(kite, bracket_id, 10)
    assert net_position(market, "INFY") == 10 and len(gtts(market)) == 1
    assert "FlaggedForReview" not in [e["type"] for e in events(bracket_id)]


def test_a_fill_on_a_bracket_flagged_while_its_entry_worked_is_protected(market, kite):
    # Given a resting entry, its workflow waiting for the fill, and the bracket flagged for review meanwhile
    bracket_id = resting_entry(market, RESTING["limit"][0])
    flag_as_reconciliation_would(bracket_id, "FROZEN_ORDER: entry not in the broker's order book")
    # When the entry fills (its update reaches the watcher)
    quote(market, "1490", "1489.95", "1490")
    # Then the fill is recorded (NEEDS_REVIEW -> ENTRY_FILLED) and protected for the whole 10, not "FILLED 0"
    protected_for(kite, bracket_id, 10)
    filled = [e for e in events(bracket_id) if e["type"] == "EntryFilled"][-1]
    assert filled["previous_status"] == "NEEDS_REVIEW" and filled["filled_quantity"] == 10
    assert "EmergencyExitPlaced" not in [e["type"] for e in events(bracket_id)]


def test_a_lost_fill_on_a_bracket_flagged_while_its_entry_worked_is_recovered_by_reconciliation(market, kite):
    # Given a bracket flagged for review while its entry rests
    bracket_id = resting_entry(market, RESTING["limit"][0])
    time.sleep(1.5)  # (the waiting task's own look at the broker, right after storing its token, finishes first)
    flag_as_reconciliation_would(bracket_id, "FROZEN_ORDER: entry not in the broker's order book")
    # When the entry fills but its order update is lost
    paper(market, "faults", {"rules": [{"kind": "drop_order_update", "match": {"tradingsymbol": "INFY"}, "count": 5}]})
    quote(market, "1490", "1489.95", "1490")
    assert kite.order_history(bracket(bracket_id).entry.broker_order_id)[-1]["status"] == "COMPLETE"
    paper(market, "faults", {"rules": []})
    assert bracket(bracket_id).status.value == "NEEDS_REVIEW"
    # And reconciliation runs
    summary = run_reconcile(market)
    # Then it records the fill, and the waiting workflow protects it
    assert summary["repairs"] == {"MISSED_ENTRY_UPDATE": 1}, summary
    protected_for(kite, bracket_id, 10)
