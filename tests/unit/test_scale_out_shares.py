"""Scale-out requests: targets with their shares, split into one bracket spec per share, and the breakeven stop."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from bracketflow.domain.bracket import BracketSpec, ScaleTarget
from bracketflow.domain.enums import Action, PositionSide
from bracketflow.domain.scale_out import breakeven_stop, share_quantities, share_specs, tightened
from bracketflow.domain.validation import validate_bracket
from bracketflow.errors import ValidationFailed
from bracketflow.schemas.bracket import PlaceBracketOrderRequest, alert_to_spec, request_to_spec

TICK = Decimal("0.05")


def alert(**fields: Any) -> dict[str, Any]:
    return {
        "symbol": "NSE:INFY",
        "product": "MIS",
        "action": "buy",
        "quantity": 10,
        "price": "1500",
        "sl_price": "1480",
        "targets": [{"price": "1520", "share": 50}, {"points": "40", "share": 50}],
        **fields,
    }


def shares_of(data: dict[str, Any], lot: int = 1) -> list[BracketSpec]:
    checked = validate_bracket(alert_to_spec(data, "acct"), tick_size=TICK, lot_size=lot, round_to_tick=True)
    return share_specs(checked, tick_size=TICK, lot_size=lot, round_to_tick=True)


def test_an_alert_with_two_targets_becomes_two_shares_under_one_stop():
    # Given a BUY 10 alert with targets 1520 (half) and +40 points (half), breakeven after target 1 with 1.5 points
    data = alert(breakeven_after="T1", breakeven_buffer="1.5")
    # When it is split
    shares = shares_of(data)
    # Then each share has its own quantity and target, the common stop, its index and the breakeven rule
    assert [(s.share_index, s.quantity, s.target_price, s.sl_price) for s in shares] == [
        (1, 5, Decimal("1520"), Decimal("1480")),
        (2, 5, Decimal("1540"), Decimal("1480")),
    ]
    assert {(s.breakeven_after, s.breakeven_buffer, s.targets) for s in shares} == {(1, Decimal("1.5"), ())}
    # And a share's spec survives the trip through its stored form
    assert BracketSpec.from_dict(shares[1].to_dict()) == shares[1]


def test_percent_shares_round_down_to_the_lot_and_the_last_share_takes_the_rest():
    # Given 7 lots of 25 split 50/30/20
    targets = tuple(ScaleTarget(Decimal(price), Decimal(share)) for price, share in (("1", 50), ("2", 30), ("3", 20)))
    # Then 3 lots, 2 lots, and the rest (2 lots): every unit is in one share, each a whole number of lots
    assert share_quantities(175, targets, 25) == [75, 50, 50]


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"targets": [{"price": "1520", "share": 60}, {"price": "1540", "share": 30}]}, "add up to 100"),
        ({"targets": [{"price": "1520", "share": 5}, {"price": "1540", "share": 95}]}, "target 1's share of 10 is 0"),
        ({"targets": [{"price": "1520", "share": 50}, {"price": "1540", "quantity": 5}]}, "not both"),
        ({"targets": [{"price": "1520", "quantity": 4}, {"price": "1540", "quantity": 5}]}, "add up to the quantity"),
        ({"targets": [{"price": "1520"}, {"price": "1540", "share": 100}]}, "target 1: give its share"),
        ({"targets": [{"price": str(1510 + i), "share": 25} for i in range(4)]}, "1 to 3 targets"),
        ({"targets": [{"price": "1470", "share": 50}, {"price": "1540", "share": 50}]}, "target 1:"),
        ({"targets": [{"share": 50}, {"price": "1540", "share": 50}]}, "target 1: give exactly one of"),
        ({"target_price": "1530"}, "not both"),
        ({"breakeven_after": 2}, "breakeven_after must name a target from 1 to 1"),
        ({"breakeven_after": "four"}, "breakeven_after must name a target"),
        ({"breakeven_buffer": "-1"}, "must not be negative"),
        ({"targets": [{"price": "1520", "share": 50, "stop": 1}, {"price": "1540", "share": 50}]}, "unknown fields"),
    ],
)
def test_a_scale_out_that_cannot_be_split_is_a_400_that_says_why(fields, says):
    # Given a scale-out alert with one thing wrong
    data = alert(**fields)
    # When it is read and split
    with pytest.raises(ValidationFailed) as refused:
        shares_of(data)
    # Then the refusal names what is wrong
    assert says in refused.value.message


def test_a_share_that_rounds_to_no_lot_is_refused():
    # Given shares of 90 and 10 percent
    targets = (ScaleTarget(Decimal("1"), Decimal("90")), ScaleTarget(Decimal("2"), Decimal("10")))
    # Then 2 lots of 75 split as 1 lot (90 percent, rounded down) and the 1 lot left
    assert share_quantities(150, targets, 75) == [75, 75]
    # And 1 lot cannot be split in two: the first share rounds down to nothing
    with pytest.raises(ValidationFailed, match="target 1's share of 75 is 0"):
        share_quantities(75, targets, 75)


def test_breakeven_after_needs_targets():
    with pytest.raises(ValidationFailed, match="breakeven_after needs targets"):
        alert_to_spec({**alert(breakeven_after=1), "targets": None, "target_price": "1530"}, "acct")


def test_the_rest_request_takes_targets_and_breakeven_too():
    # Given a REST request with two targets by quantity, SELL, breakeven after target 1
    req = PlaceBracketOrderRequest(
        symbol="INFY",
        exchange="NSE",
        product="MIS",
        action="SELL",
        quantity=10,
        entry_price=Decimal("1500"),
        sl_price=Decimal("1520"),
        targets=[{"percent": Decimal("1"), "quantity": 6}, {"price": Decimal("1470"), "quantity": 4}],
        breakeven_after=1,
    )
    # When it becomes a spec and is split
    checked = validate_bracket(request_to_spec(req, "acct"), tick_size=TICK)
    shares = share_specs(checked, tick_size=TICK, lot_size=1, round_to_tick=False)
    # Then a SELL's percent target is below the entry
    assert [(s.quantity, s.target_price) for s in shares] == [(6, Decimal("1485")), (4, Decimal("1470"))]
    # And target_price and targets together are refused
    with pytest.raises(ValidationFailed, match="not both"):
        request_to_spec(req.model_copy(update={"target_price": Decimal("1480")}), "acct")


def test_the_breakeven_stop_covers_the_buffer_on_the_tick():
    # A LONG's breakeven is at or above entry + buffer, a SHORT's at or below entry - buffer
    assert breakeven_stop(Action.BUY, Decimal("1500.10"), Decimal("1.32"), TICK) == Decimal("1501.45")
    assert breakeven_stop(Action.SELL, Decimal("1500.10"), Decimal("1.32"), TICK) == Decimal("1498.75")
    assert breakeven_stop(Action.BUY, Decimal("1500"), None, TICK) == Decimal("1500.00")


def test_a_breakeven_never_loosens_a_stop():
    # A LONG stop trailed to 1505 stays; one at 1480 moves up to 1500
    assert not tightened(PositionSide.LONG, Decimal("1505"), Decimal("1500"))
    assert tightened(PositionSide.LONG, Decimal("1480"), Decimal("1500"))
    # A SHORT stop trailed to 1495 stays; one at 1520 moves down to 1500
    assert not tightened(PositionSide.SHORT, Decimal("1495"), Decimal("1500"))
    assert tightened(PositionSide.SHORT, Decimal("1520"), Decimal("1500"))
    # And a breakeven equal to the stop is no move
    assert not tightened(PositionSide.LONG, Decimal("1500"), Decimal("1500"))


def single(**fields: Any) -> dict[str, Any]:
    """A plain BUY 10 INFY alert at 1500, stop 1480, target 1550, 1% trail."""
    data = {k: v for k, v in alert().items() if k != "targets"}
    return {**data, "target_price": "1550", "trail": "1%", **fields}


def checked(data: dict[str, Any]) -> BracketSpec:
    return validate_bracket(alert_to_spec(data, "acct"), tick_size=TICK, round_to_tick=True)


def test_a_single_target_bracket_takes_a_price_breakeven_with_a_buffer():
    # Given a plain bracket with a trail: move the stop to entry plus 0.5 once INFY reaches 1520.5
    spec = checked(single(breakeven_at="1520.5", breakeven_buffer="0.5"))
    # Then the spec carries the trigger and the buffer, and keeps them through its stored form
    assert (spec.breakeven_at, spec.breakeven_buffer, spec.breakeven_after) == (Decimal("1520.5"), Decimal("0.5"), None)
    assert BracketSpec.from_dict(spec.to_dict()) == spec
    # And a SELL takes one below its entry
    short = checked(single(action="sell", sl_price="1520", target_price="1450", breakeven_at="1480"))
    assert short.breakeven_at == Decimal("1480")


def test_every_share_of_a_scale_out_carries_the_price_breakeven():
    shares = shares_of(alert(breakeven_at="1530", breakeven_buffer="1"))
    assert {(s.breakeven_at, s.breakeven_buffer, s.breakeven_after) for s in shares} == {(Decimal("1530"), 1, None)}


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"breakeven_at": "1490"}, "For BUY orders, breakeven_at 1490 must be greater than entry price"),
        ({"breakeven_at": "1500"}, "must be greater than entry price"),
        ({"breakeven_at": "1501", "breakeven_buffer": "1"}, "greater than entry price plus breakeven_buffer 1"),
        ({"breakeven_at": "1550"}, "For BUY orders, breakeven_at 1550 must be less than the target 1550"),
        ({"breakeven_at": "1600"}, "must be less than the target"),
        ({"breakeven_at": "1520", "breakeven_after": 1}, "give breakeven_after (a target) or breakeven_at (a price)"),
        ({"breakeven_buffer": "1"}, "breakeven_buffer needs breakeven_after (a target) or breakeven_at (a price)"),
        ({"breakeven_after": 1}, "use breakeven_at for a price"),
        ({"breakeven_at": "abc"}, "breakeven_at"),
        (
            {"action": "sell", "sl_price": "1520", "target_price": "1450", "breakeven_at": "1510"},
            "For SELL orders, breakeven_at 1510 must be less than entry price",
        ),
        (
            {"action": "sell", "sl_price": "1520", "target_price": "1450", "breakeven_at": "1440"},
            "For SELL orders, breakeven_at 1440 must be greater than the target 1450",
        ),
    ],
)
def test_a_price_breakeven_on_the_wrong_side_or_beyond_the_target_is_a_400_that_says_why(fields, says):
    with pytest.raises(ValidationFailed) as refused:
        checked(single(**fields))
    assert says in refused.value.message


def test_a_scale_out_price_breakeven_may_lie_beyond_a_near_target_but_not_the_last():
    # Targets 1520 and 1540: a trigger at 1530 is fine, one at 1540 is refused
    assert {s.breakeven_at for s in shares_of(alert(breakeven_at="1530"))} == {Decimal("1530")}
    with pytest.raises(ValidationFailed, match="must be less than the target 1540"):
        shares_of(alert(breakeven_at="1540"))


def test_the_rest_request_takes_a_price_breakeven():
    req = PlaceBracketOrderRequest(
        symbol="INFY",
        exchange="NSE",
        product="MIS",
        action="BUY",
        quantity=10,
        entry_price=Decimal("1500"),
        sl_price=Decimal("1480"),
        target_price=Decimal("1550"),
        trail={"type": "points", "value": Decimal("5")},
        breakeven_at=Decimal("1520.5"),
        breakeven_buffer=Decimal("0.5"),
    )
    spec = validate_bracket(request_to_spec(req, "acct"), tick_size=TICK)
    assert (spec.breakeven_at, spec.breakeven_buffer) == (Decimal("1520.5"), Decimal("0.5"))
    with pytest.raises(ValidationFailed, match="must be less than the target 1550"):
        validate_bracket(request_to_spec(req.model_copy(update={"breakeven_at": Decimal("1551")}), "acct"))
    with pytest.raises(ValidationFailed, match="not both"):
        request_to_spec(req.model_copy(update={"breakeven_after": 1}), "acct")
