"""The trailing calculator (docs/trailing.md): worked examples, then properties over random tick streams."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bracketflow.domain.enums import PositionSide, TrailType
from bracketflow.domain.trailing import (
    TrailingBracket,
    advance,
    candidate_stop,
    compile_bracket,
    evaluate,
    is_triggered,
    ratchet,
    reference_price,
    round_away,
    to_paise,
    to_rupees,
)


def _bracket(side="LONG", product="CNC", stop="1480", tick="0.05", trail=None, activation=None) -> TrailingBracket:
    return compile_bracket(
        side=side, product=product, stop_price=stop, tick_size=tick, trail=trail, activation_price=activation
    )


# --- paise ---------------------------------------------------------------------------------------


def test_paise_are_exact_for_prices_that_float_cannot_hold():
    # Given prices whose binary float is a hair below the decimal (1.005 is 1.00499999... as a float)
    # When converted to paise
    # Then the decimal text is what counts, ties going to even like Python's round()
    assert to_paise("1500.05") == 150005
    assert to_paise(1.005) == 100
    assert to_paise(Decimal("1.015")) == 102
    assert to_paise(0.29) == 29
    assert to_rupees(150005) == Decimal("1500.05")


# --- step 1: the trigger ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "ltp", "stop", "hit"),
    [("LONG", 148000, 148000, True), ("LONG", 148005, 148000, False), ("LONG", 1, 148000, True),
     ("SHORT", 152000, 152000, True), ("SHORT", 151995, 152000, False), ("SHORT", 200000, 152000, True)],
)  # fmt: skip
def test_trigger_is_inclusive_of_the_stop(side, ltp, stop, hit):
    # Given a stop, When the LTP touches or crosses it, Then the bracket exits; one paisa short, it does not
    assert is_triggered(side, ltp, stop) is hit


def test_an_exit_reports_the_stop_it_hit_and_does_not_trail_on_that_tick():
    # Given a LONG with a 1% trail, stop 1480
    bracket = _bracket(trail={"type": "percent", "value": "1"})
    # When a tick trades through the stop
    result = evaluate(bracket, ltp=147500)
    # Then it exits at the old stop
    assert result == (True, 148000, True)


# --- step 2: the reference price -----------------------------------------------------------------


def test_mis_long_trails_on_the_best_bid_of_a_full_packet():
    # Given an MIS LONG with a 10-point trail
    bracket = _bracket(product="MIS", trail={"type": "points", "value": "10"})
    # When a full packet says LTP 1520, bid 1515, ask 1525
    result = evaluate(bracket, ltp=152000, best_bid=151500, best_ask=152500, has_depth=True)
    # Then the stop trails 10 below the bid, not the LTP
    assert result.stop == 150500


def test_mis_short_trails_on_the_best_ask_of_a_full_packet():
    bracket = _bracket(side="SHORT", product="MIS", stop="1520", trail={"type": "points", "value": "10"})
    result = evaluate(bracket, ltp=148000, best_bid=147500, best_ask=148500, has_depth=True)
    assert result.stop == 149500


@pytest.mark.parametrize(
    ("product", "bid", "ask", "has_depth", "expected"),
    [
        ("MIS", 151500, 152500, True, 151500),  # full packet: the bid
        ("MIS", 0, 152500, True, 152000),  # empty bid side: LTP
        ("MIS", 151500, 152500, False, 152000),  # ltp/quote packet: LTP
        ("CNC", 151500, 152500, True, 152000),  # delivery: always LTP
        ("NRML", 151500, 152500, True, 152000),
    ],
)
def test_reference_price_for_a_long(product, bid, ask, has_depth, expected):
    is_mis = product == "MIS"
    assert reference_price("LONG", is_mis, 152000, bid, ask, has_depth) == expected


def test_reference_price_for_a_short_with_no_asks_falls_back_to_ltp():
    assert reference_price("SHORT", True, 152000, 151500, 0, True) == 152000
    assert reference_price("SHORT", True, 152000, 151500, 152500, True) == 152500


# --- steps 3-6 ----------------------------------------------------------------------------------


def test_percent_long_trail_rounds_down_to_the_tick():
    # Given LONG, 0.7% trail, tick 0.05. When the price is 1234.56
    bracket = _bracket(stop="1000", trail={"type": "percent", "value": "0.7"})
    # Then 123456 * 9930 // 10000 = 122591, rounded down to the tick = 122590
    assert candidate_stop("LONG", 123456, TrailType.PERCENT, 70) == 122591
    assert evaluate(bracket, ltp=123456).stop == 122590


def test_percent_short_trail_rounds_up_to_the_tick():
    # Given SHORT, 0.7% trail: ceil(123456 * 10070 / 10000) = 124321, rounded up to the tick = 124325
    bracket = _bracket(side="SHORT", stop="1300", trail={"type": "percent", "value": "0.7"})
    assert candidate_stop("SHORT", 123456, TrailType.PERCENT, 70) == 124321
    assert evaluate(bracket, ltp=123456).stop == 124325


def test_points_trail_both_sides():
    assert evaluate(_bracket(trail={"type": "points", "value": "12.5"}), ltp=152000).stop == 150750
    short = _bracket(side="SHORT", stop="1520", trail={"type": "points", "value": "12.5"})
    assert evaluate(short, ltp=148000).stop == 149250


def test_round_away_from_the_market():
    assert round_away("LONG", 150754, 5) == 150750
    assert round_away("SHORT", 150751, 5) == 150755
    assert round_away("LONG", 150750, 5) == round_away("SHORT", 150750, 5) == 150750


def test_ratchet_never_loosens():
    assert ratchet("LONG", 150000, 149000) == 150000
    assert ratchet("LONG", 150000, 151000) == 151000
    assert ratchet("SHORT", 150000, 151000) == 150000
    assert ratchet("SHORT", 150000, 149000) == 149000


def test_activation_holds_the_trail_until_reached_then_stays_on():
    # Given LONG stop 1480, 1% trail, activation at 1510
    bracket = _bracket(trail={"type": "percent", "value": "1"}, activation="1510")
    assert bracket.activated is False
    # When the price rises to 1509.95, below the activation: nothing moves
    exited, bracket = advance(bracket, 150995)
    assert (exited, bracket.stop, bracket.activated) == (False, 148000, False)
    # When it reaches 1510: trailing starts (1510 * 0.99 = 1494.90)
    exited, bracket = advance(bracket, 151000)
    assert (exited, bracket.stop, bracket.activated) == (False, 149490, True)
    # When it falls back to 1505 and rises to 1509 (below the activation again): trailing stays on
    _, bracket = advance(bracket, 150500)
    exited, bracket = advance(bracket, 150900)
    assert bracket.activated is True
    assert bracket.stop == 149490  # 1509 * 0.99 = 1493.91 is looser than 1494.90: kept
    _, bracket = advance(bracket, 152000)
    assert bracket.stop == 150480


def test_short_activation_is_reached_from_above():
    bracket = _bracket(side="SHORT", stop="1520", trail={"type": "points", "value": "5"}, activation="1490")
    _, bracket = advance(bracket, 149005)
    assert (bracket.stop, bracket.activated) == (152000, False)
    _, bracket = advance(bracket, 149000)
    assert (bracket.stop, bracket.activated) == (149500, True)


def test_mis_activation_is_judged_on_the_reference_price_not_ltp():
    # Given MIS LONG activation at 1510; When LTP is 1511 but the bid is 1509: not activated yet
    bracket = _bracket(product="MIS", trail={"type": "points", "value": "5"}, activation="1510")
    result = evaluate(bracket, ltp=151100, best_bid=150900, best_ask=151200, has_depth=True)
    assert (result.stop, result.activated) == (148000, False)


def test_a_bracket_without_trail_only_exits():
    bracket = _bracket()
    assert evaluate(bracket, ltp=200000) == (False, 148000, True)
    assert evaluate(bracket, ltp=148000).exited is True


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stop": "0"}, "stop_price"),
        ({"tick": "0"}, "tick_size"),
        ({"trail": {"type": "percent", "value": "0"}}, "trail percent"),
        ({"trail": {"type": "percent", "value": "100"}}, "trail percent"),
        ({"trail": {"type": "points", "value": "-1"}}, "trail points"),
        ({"trail": {"type": "ticks", "value": "1"}}, "percent, points"),
        ({"side": "FLAT"}, "LONG, SHORT"),
        ({"trail": {"type": "points", "value": "1"}, "activation": "0"}, "activation_price"),
    ],
)
def test_compile_refuses_a_bracket_it_cannot_trail(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _bracket(**kwargs)


# --- properties ------------------------------------------------------------------------------------

_ticks = st.lists(
    st.tuples(st.integers(1, 400_000), st.integers(0, 400_000), st.integers(0, 400_000), st.booleans()),
    min_size=1,
    max_size=60,
)
_trails = st.one_of(
    st.none(),
    st.builds(lambda v: {"type": "percent", "value": Decimal(v) / 100}, st.integers(1, 2500)),
    st.builds(lambda v: {"type": "points", "value": Decimal(v) / 100}, st.integers(1, 5000)),
)


@st.composite
def _brackets(draw, trailing_only=False):
    side = draw(st.sampled_from(["LONG", "SHORT"]))
    trail = draw(_trails.filter(bool) if trailing_only else _trails)
    activation = draw(st.one_of(st.none(), st.integers(1, 400_000))) if trail else None
    return compile_bracket(
        side=side,
        product=draw(st.sampled_from(["MIS", "CNC", "NRML"])),
        stop_price=Decimal(draw(st.integers(1, 400_000))) / 100,
        tick_size=Decimal(draw(st.sampled_from([1, 5, 10, 25]))) / 100,
        trail=trail,
        activation_price=None if activation is None else Decimal(activation) / 100,
    )


@settings(max_examples=300, deadline=None)
@given(_brackets(), _ticks)
def test_a_stop_never_loosens_and_exits_exactly_when_ltp_crosses_it(bracket, ticks):
    # Given any bracket and any stream of ticks (LTP, bid, ask, full?)
    long = bracket.side is PositionSide.LONG
    for ltp, bid, ask, full in ticks:
        before = bracket.stop
        # When one tick is evaluated
        exited, after = advance(bracket, ltp, bid, ask, full)
        # Then it exits exactly when the LTP is at or through the stop it had
        assert exited == (ltp <= before if long else ltp >= before)
        if exited:
            assert after.stop == before
            break
        # And otherwise the stop only tightens, and a moved stop sits on the tick
        assert (after.stop >= before) if long else (after.stop <= before)
        if after.stop != before:
            assert after.stop % bracket.tick == 0
            assert after.activated
        # And once activated, trailing stays on
        assert after.activated or not bracket.activated
        bracket = after


@settings(max_examples=200, deadline=None)
@given(_brackets(trailing_only=True), st.integers(1, 400_000))
def test_a_trailed_stop_stays_on_the_safe_side_of_the_reference(bracket, ref):
    # Given a trail; When the candidate is computed and rounded away from the market
    raw = candidate_stop(bracket.side, ref, bracket.trail_type, bracket.trail_amount)
    c = round_away(bracket.side, raw, bracket.tick)
    # Then a LONG stop is strictly below the reference and a SHORT stop strictly above
    if bracket.side is PositionSide.LONG:
        assert c < ref
    else:
        assert c > ref
