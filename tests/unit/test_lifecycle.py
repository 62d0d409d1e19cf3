"""The lifecycle's pure decisions: the GTT's shape per side, the stop child's limit, P&L, entry timeouts, outcomes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bracketflow.domain.bracket import Bracket, BracketSpec
from bracketflow.domain.enums import (
    Action,
    BracketStatus,
    Exchange,
    ExitReason,
    OrderStatus,
    PositionSide,
    Product,
    Validity,
)
from bracketflow.domain.ids import AccountId
from bracketflow.services.finalize import realised_pnl
from bracketflow.services.lifecycle import OrderFact, entry_outcome, entry_timeout_s
from bracketflow.services.order_updates import gtt_exit_reason, postback_checksum
from bracketflow.services.protect import protection_request, stop_limit_price

TICK = Decimal("0.05")


def bracket(action: Action = Action.BUY, validity: Validity = Validity.DAY, **levels: str) -> Bracket:
    buy = action is Action.BUY
    spec = BracketSpec(
        account_id=AccountId("acc"),
        symbol="INFY",
        exchange=Exchange.NSE,
        product=Product.MIS,
        action=action,
        quantity=10,
        entry_price=Decimal(levels.get("entry", "1500")),
        sl_price=Decimal(levels.get("sl", "1480" if buy else "1520")),
        target_price=Decimal(levels.get("target", "1550" if buy else "1450")),
        validity=validity,
    )
    return Bracket.register(spec)


def test_a_long_gtt_has_the_stop_below_and_the_target_above_with_sell_limit_children():
    req = protection_request(bracket(), 10, Decimal("1500"), TICK, Decimal("0.5"))
    assert req.type == "two-leg"
    assert req.trigger_values == (Decimal("1480"), Decimal("1550"))
    assert [(leg.transaction_type, leg.order_type, leg.quantity) for leg in req.orders] == [("SELL", "LIMIT", 10)] * 2
    assert [leg.price for leg in req.orders] == [Decimal("1472.60"), Decimal("1550")]


def test_a_short_gtt_has_the_target_below_and_the_stop_above_with_buy_limit_children():
    req = protection_request(bracket(Action.SELL), 4, Decimal("1500"), TICK, Decimal("0.5"))
    assert req.trigger_values == (Decimal("1450"), Decimal("1520"))
    assert [(leg.transaction_type, leg.quantity) for leg in req.orders] == [("BUY", 4)] * 2
    assert [leg.price for leg in req.orders] == [Decimal("1450"), Decimal("1527.60")]


@pytest.mark.parametrize(
    ("stop", "side", "buffer", "expected"),
    [
        ("1480", PositionSide.LONG, "0.5", "1472.60"),  # 7.40 below, on the tick
        ("100.03", PositionSide.LONG, "0.5", "99.50"),  # 99.5285 rounded down, away from the market
        ("10", PositionSide.LONG, "0", "9.95"),  # never less than one tick beyond the trigger
        ("1520", PositionSide.SHORT, "0.5", "1527.60"),
        ("10", PositionSide.SHORT, "0", "10.05"),
    ],
)
def test_the_stop_child_limit_sits_beyond_its_trigger_on_the_tick(stop, side, buffer, expected):
    assert stop_limit_price(Decimal(stop), side, TICK, Decimal(buffer)) == Decimal(expected)


@pytest.mark.parametrize(
    ("side", "entry", "exit_", "qty", "pnl"),
    [
        (PositionSide.LONG, "1500", "1550", 10, "500"),
        (PositionSide.LONG, "1500", "1499.95", 10, "-0.50"),
        (PositionSide.SHORT, "1500", "1450", 4, "200"),
        (PositionSide.SHORT, "1500", "1520.05", 4, "-80.20"),
    ],
)
def test_pnl_is_exit_minus_entry_for_a_long_and_the_negative_for_a_short(side, entry, exit_, qty, pnl):
    assert realised_pnl(side, Decimal(entry), Decimal(exit_), qty) == Decimal(pnl)


def test_entry_timeouts_follow_the_validity(monkeypatch):
    from bracketflow.settings import get_settings

    monkeypatch.setenv("ENTRY_TIMEOUT_S", "7200")
    monkeypatch.setenv("BROKER", "paper")
    get_settings.cache_clear()
    assert entry_timeout_s(bracket()) == 7200  # the paper market never closes
    assert entry_timeout_s(bracket(validity=Validity.IOC)) == 60
    monkeypatch.setenv("BROKER", "kite")
    get_settings.cache_clear()
    morning = datetime(2026, 1, 5, 4, 0, tzinfo=UTC)  # 09:30 IST
    assert entry_timeout_s(bracket(), now=morning) == 6 * 3600  # until 15:30 IST
    evening = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # 17:30 IST: an AMO works the next session
    assert entry_timeout_s(bracket(), now=evening) == 22 * 3600
    get_settings.cache_clear()


def test_the_entry_outcome_names_what_the_workflow_does_next():
    b = bracket()
    assert entry_outcome(b) is None
    pending = b.transition(BracketStatus.ENTRY_PENDING, entry=b.entry.transition(OrderStatus.SENT_TO_BROKER))
    assert entry_outcome(pending) is None
    leg = pending.entry.transition(OrderStatus.EXECUTED, filled_quantity=4, average_price=Decimal("1500.05"))
    filled = pending.transition(BracketStatus.ENTRY_FILLED, entry=leg)
    assert entry_outcome(filled) == {
        "outcome": "FILLED",
        "filled_quantity": 4,
        "average_price": "1500.05",
        "working": False,
    }
    rejected = pending.transition(
        BracketStatus.FAILED, entry=pending.entry.transition(OrderStatus.FAILED, message="Margin exceeds")
    )
    assert entry_outcome(rejected) == {"outcome": "REJECTED", "message": "Margin exceeds"}


def test_an_entry_still_working_after_its_first_fill_is_told_apart():
    # Given a BUY 10 whose entry order is at the broker
    b = bracket()
    pending = b.transition(
        BracketStatus.ENTRY_PENDING, entry=b.entry.transition(OrderStatus.SENT_TO_BROKER, broker_order_id="1")
    )
    # When 4 filled and the bracket moved on with the order still live / the order ended
    working = pending.transition(BracketStatus.ENTRY_FILLED, entry=replace(pending.entry, filled_quantity=4))
    done = working.update(entry=working.entry.transition(OrderStatus.EXECUTED))
    # Then only the first is working (a pending entry is not: nothing of it is protected yet)
    assert (pending.entry_working, working.entry_working, done.entry_working) == (False, True, False)


def test_a_gtt_fill_is_read_as_target_stop_or_trailed_stop_by_the_nearer_level():
    b = bracket()
    assert gtt_exit_reason(b, Decimal("1549.50")) is ExitReason.TARGET
    assert gtt_exit_reason(b, Decimal("1479")) is ExitReason.STOP
    assert gtt_exit_reason(b.update(stop_price=Decimal("1495")), Decimal("1494")) is ExitReason.TRAIL_STOP


def test_an_order_update_is_read_from_kites_wire_shape():
    fact = OrderFact.from_kite(
        {"order_id": "2611", "status": "complete", "filled_quantity": 10, "quantity": 10, "average_price": 1500.05}
    )
    assert (fact.status, fact.filled_quantity, fact.average_price, fact.is_final) == (
        "COMPLETE",
        10,
        Decimal("1500.05"),
        True,
    )


def test_the_postback_checksum_is_sha256_of_order_id_timestamp_and_secret():
    import hashlib

    expected = hashlib.sha256(b"2611" + b"2026-01-05 09:30:00" + b"s3cret").hexdigest()
    assert postback_checksum("2611", "2026-01-05 09:30:00", "s3cret") == expected
