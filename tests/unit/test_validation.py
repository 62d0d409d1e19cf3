"""Bracket validation: every rule of the API's field rules, with the message the trader sees."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bracketflow.domain.bracket import BracketSpec, TrailSpec
from bracketflow.domain.enums import Action, Exchange, PriceType, Product, TrailType, Validity
from bracketflow.domain.ids import AccountId
from bracketflow.domain.validation import (
    RoundMode,
    check_levels,
    parse_action,
    parse_exchange,
    parse_price,
    parse_price_type,
    parse_product,
    parse_quantity,
    parse_validity,
    round_to_tick,
    split_symbol,
    validate_bracket,
)
from bracketflow.errors import ValidationFailed

D = Decimal


def spec(**overrides) -> BracketSpec:
    fields = dict(
        account_id=AccountId("acc_1"),
        symbol="INFY",
        exchange=Exchange.NSE,
        product=Product.MIS,
        action=Action.BUY,
        quantity=10,
        entry_price=D("1500"),
        sl_price=D("1480"),
        target_price=D("1550"),
    )
    fields.update(overrides)
    return BracketSpec(**fields)


def sell(**overrides) -> BracketSpec:
    base = dict(action=Action.SELL, entry_price=D("1500"), sl_price=D("1520"), target_price=D("1480"))
    base.update(overrides)
    return spec(**base)


def refused(s: BracketSpec, **kw) -> str:
    with pytest.raises(ValidationFailed) as err:
        validate_bracket(s, **kw)
    assert err.value.status_code == 400
    return err.value.message


# ---- the API's examples ------------------------------------------------------------------------------------


def test_the_notes_buy_example_passes_unchanged():
    # Given "BUY 10 INFY at 1500, stop 1480, target 1550" / When validated / Then it passes as it is
    out = validate_bracket(spec())
    assert out == spec()


def test_the_notes_sell_example_passes():
    assert validate_bracket(sell()).action is Action.SELL


@pytest.mark.parametrize(
    ("s", "message"),
    [
        (spec(sl_price=D("1500")), "For BUY orders, SL price must be less than entry price"),
        (spec(sl_price=D("1510")), "For BUY orders, SL price must be less than entry price"),
        (spec(target_price=D("1500")), "For BUY orders, target price must be greater than entry price"),
        (spec(target_price=D("1490")), "For BUY orders, target price must be greater than entry price"),
        (sell(sl_price=D("1500")), "For SELL orders, SL price must be greater than entry price"),
        (sell(sl_price=D("1490")), "For SELL orders, SL price must be greater than entry price"),
        (sell(target_price=D("1500")), "For SELL orders, target price must be less than entry price"),
        (sell(target_price=D("1510")), "For SELL orders, target price must be less than entry price"),
    ],
)
def test_price_relations_use_the_notes_wording(s, message):
    assert refused(s) == message


# ---- fields ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "raw", "fragment"),
    [
        ("action", "HOLD", "Invalid action 'HOLD': must be one of BUY, SELL"),
        ("exchange", "FOREX", "Invalid exchange 'FOREX': must be one of NSE, BSE, NFO, MCX, NCDEX, CDS"),
        ("product", "BO", "Invalid product 'BO': must be one of MIS, CNC, NRML"),
        ("price_type", "STOP", "Invalid pricetype 'STOP': must be one of LIMIT, MARKET, SL, SL-M"),
        ("validity", "GTC", "Invalid validity 'GTC': must be one of DAY, IOC, TTL"),
    ],
)
def test_an_unknown_enum_value_is_named_with_the_allowed_ones(field, raw, fragment):
    assert refused(spec(**{field: raw})) == fragment


def test_wire_strings_are_normalised_to_enums_case_insensitively():
    # Given a spec built straight from a lowercase TradingView alert
    raw = spec(action="buy", exchange="nse", product="mis", price_type="limit", validity="day", symbol="nse:infy")
    # When validated / Then enums and a bare uppercase symbol come back
    out = validate_bracket(raw)
    assert (out.action, out.exchange, out.product, out.price_type, out.validity, out.symbol) == (
        Action.BUY, Exchange.NSE, Product.MIS, PriceType.LIMIT, Validity.DAY, "INFY",
    )  # fmt: skip


def test_price_type_and_validity_default_to_limit_and_day():
    out = validate_bracket(spec(price_type=None, validity=""))
    assert out.price_type is PriceType.LIMIT and out.validity is Validity.DAY


def test_a_symbol_prefixed_with_another_exchange_is_refused():
    assert refused(spec(symbol="BSE:INFY")) == "symbol 'BSE:INFY' names exchange BSE but exchange is NSE"


@pytest.mark.parametrize(("raw", "message"), [("", "symbol is required"), ("IN FY", "a tradingsymbol has no spaces")])
def test_a_bad_symbol_is_refused(raw, message):
    assert message in refused(spec(symbol=raw))


def test_an_account_is_required():
    assert refused(spec(account_id="")) == "account_id is required"


# ---- quantity -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("qty", [0, -5])
def test_quantity_must_be_positive(qty):
    assert refused(spec(quantity=qty)) == f"quantity must be greater than 0, got {qty}"


@pytest.mark.parametrize("qty", [2.5, "ten", True])
def test_quantity_must_be_a_whole_number(qty):
    assert "quantity must be" in refused(spec(quantity=qty))


def test_quantity_must_be_a_multiple_of_the_lot_size():
    message = refused(spec(symbol="NIFTY26MARFUT", exchange=Exchange.NFO, quantity=30), lot_size=25)
    assert message.startswith("quantity 30 is not a multiple of the lot size 25 for NIFTY26MARFUT")


def test_a_whole_number_of_lots_passes():
    assert validate_bracket(spec(quantity=75), lot_size=25).quantity == 75


def test_quantity_as_text_is_accepted():
    assert validate_bracket(spec(quantity="10")).quantity == 10


def test_disclosed_quantity_cannot_exceed_quantity():
    assert refused(spec(disclosed_quantity=11)) == "disclosed_quantity 11 must not exceed quantity 10"
    assert "must not be negative" in refused(spec(disclosed_quantity=-1))
    assert validate_bracket(spec(disclosed_quantity=10)).disclosed_quantity == 10


# ---- prices ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "label"), [("entry_price", "entry price"), ("sl_price", "SL price"), ("target_price", "target price")]
)
@pytest.mark.parametrize("value", [D("0"), D("-1")])
def test_prices_must_be_positive(field, label, value):
    assert refused(spec(**{field: value})) == f"{label} must be greater than 0, got {value}"


@pytest.mark.parametrize("value", ["abc", True, float("nan"), "Infinity"])
def test_a_price_that_is_not_a_number_is_refused(value):
    assert refused(spec(sl_price=value)).startswith("sl_price must be a number")


def test_a_limit_entry_needs_an_entry_price():
    assert refused(spec(entry_price=None)) == "entry_price is required"


def test_prices_as_text_and_floats_become_exact_decimals():
    out = validate_bracket(spec(entry_price="1500.05", sl_price=1480.1, target_price=1550))
    assert (out.entry_price, out.sl_price, out.target_price) == (D("1500.05"), D("1480.1"), D("1550"))
    assert all(isinstance(p, Decimal) for p in (out.entry_price, out.sl_price, out.target_price))


@pytest.mark.parametrize(
    ("field", "value"),
    [("entry_price", D("1500.02")), ("sl_price", D("1480.03")), ("target_price", D("1550.01"))],
)
def test_an_off_tick_price_is_refused(field, value):
    assert refused(spec(**{field: value})) == f"{field} {value} is not a multiple of the tick size 0.05 for INFY"


def test_the_instruments_own_tick_size_applies():
    # Given a tick of 0.25 (e.g. a future) / Then 1500.05 is off-tick and 1500.25 is on it
    assert "tick size 0.25" in refused(spec(entry_price=D("1500.05")), tick_size=D("0.25"))
    assert validate_bracket(spec(entry_price=D("1500.25")), tick_size=D("0.25")).entry_price == D("1500.25")


def test_rounding_mode_rounds_each_price_to_the_nearest_tick():
    # Given off-tick prices and round_to_tick / When validated / Then each goes to the nearest tick
    out = validate_bracket(
        spec(entry_price=D("1500.02"), sl_price=D("1480.04"), target_price=D("1550.06")), round_to_tick=True
    )
    assert (out.entry_price, out.sl_price, out.target_price) == (D("1500.00"), D("1480.05"), D("1550.05"))


def test_rounding_ties_never_add_risk_for_a_buy():
    # Given prices exactly half a tick off
    out = validate_bracket(
        spec(entry_price=D("1500.025"), sl_price=D("1480.025"), target_price=D("1550.025")), round_to_tick=True
    )
    # Then the entry goes down (pay less), the stop up toward the entry, the target down toward the entry
    assert (out.entry_price, out.sl_price, out.target_price) == (D("1500.00"), D("1480.05"), D("1550.00"))


def test_rounding_ties_never_add_risk_for_a_sell():
    out = validate_bracket(
        sell(entry_price=D("1500.025"), sl_price=D("1520.025"), target_price=D("1480.025")), round_to_tick=True
    )
    assert (out.entry_price, out.sl_price, out.target_price) == (D("1500.05"), D("1520.00"), D("1480.05"))


def test_rounding_that_collapses_the_stop_onto_the_entry_is_refused():
    # Given a stop 0.02 under the entry / When rounded to 0.05 / Then it lands on the entry and the rule refuses it
    s = spec(entry_price=D("1500"), sl_price=D("1499.98"))
    assert refused(s, round_to_tick=True) == "For BUY orders, SL price must be less than entry price"


def test_a_price_that_rounds_to_zero_is_refused():
    s = spec(entry_price=D("0.10"), sl_price=D("0.01"), target_price=D("0.20"))
    assert refused(s, round_to_tick=True) == "SL price rounds to 0 on the tick size 0.05"


# ---- MARKET, SL and SL-M entries ------------------------------------------------------------------------------


def test_a_market_entry_needs_no_entry_price_and_is_checked_against_the_last_price():
    s = spec(price_type=PriceType.MARKET, entry_price=None)
    assert validate_bracket(s, reference_price=D("1500")).entry_price is None
    message = refused(s, reference_price=D("1479"))
    assert message == "For BUY orders, SL price must be less than entry price (the last price 1479, for a MARKET entry)"


def test_a_market_entry_without_any_reference_still_needs_sl_below_target():
    s = spec(price_type=PriceType.MARKET, entry_price=None)
    assert validate_bracket(s).price_type is PriceType.MARKET
    assert refused(spec(price_type=PriceType.MARKET, entry_price=None, sl_price=D("1560"))) == (
        "For BUY orders, SL price must be less than target price"
    )
    assert refused(sell(price_type=PriceType.MARKET, entry_price=None, sl_price=D("1470"))) == (
        "For SELL orders, SL price must be greater than target price"
    )


def test_sl_entries_need_a_trigger_on_the_right_side_of_the_limit():
    assert refused(spec(price_type=PriceType.SL)) == "trigger_price is required"
    assert refused(spec(price_type=PriceType.SL, trigger_price=D("1501"))) == (
        "For BUY SL orders, trigger price must not be greater than entry price"
    )
    assert refused(sell(price_type=PriceType.SL, trigger_price=D("1499"))) == (
        "For SELL SL orders, trigger price must not be less than entry price"
    )
    ok = validate_bracket(spec(price_type=PriceType.SL, trigger_price=D("1499.50")))
    assert ok.trigger_price == D("1499.50")


def test_an_sl_m_entry_measures_its_levels_from_the_trigger():
    s = spec(price_type="SL-M", entry_price=None, trigger_price=D("1500"))
    assert validate_bracket(s).price_type is PriceType.SL_M
    assert "(the trigger price 1540, for an SL-M entry)" in refused(
        spec(price_type="SL-M", entry_price=None, trigger_price=D("1540"), target_price=D("1530"))
    )


def test_a_trigger_on_a_limit_entry_is_refused_rather_than_ignored():
    assert refused(spec(trigger_price=D("1499"))) == "trigger_price is only for SL and SL-M entries, not LIMIT"


# ---- trail ----------------------------------------------------------------------------------------------------


def test_a_percent_or_points_trail_passes():
    assert validate_bracket(spec(trail=TrailSpec(TrailType.PERCENT, D("1")))).trail == TrailSpec(
        TrailType.PERCENT, D("1")
    )
    assert validate_bracket(spec(trail={"type": "points", "value": "5"})).trail == TrailSpec(TrailType.POINTS, D("5"))


@pytest.mark.parametrize("value", [D("0"), D("-1")])
def test_a_trail_must_be_positive(value):
    assert refused(spec(trail=TrailSpec(TrailType.POINTS, value))) == f"trail value must be greater than 0, got {value}"


def test_a_percent_trail_must_be_under_100():
    assert refused(spec(trail=TrailSpec(TrailType.PERCENT, D("100")))) == "trail percent must be less than 100, got 100"
    # points have no such cap
    assert validate_bracket(spec(trail=TrailSpec(TrailType.POINTS, D("100")))).trail is not None


def test_an_unknown_trail_type_is_refused():
    assert refused(spec(trail={"type": "atr", "value": "2"})) == (
        "Invalid trail type 'atr': must be one of percent, points"
    )


def test_the_activation_price_must_be_on_the_profit_side():
    trail = TrailSpec(TrailType.PERCENT, D("1"))
    assert refused(spec(trail=trail, trail_activation_price=D("1500"))) == (
        "For BUY orders, trail activation price must be greater than entry price"
    )
    assert refused(sell(trail=trail, trail_activation_price=D("1500"))) == (
        "For SELL orders, trail activation price must be less than entry price"
    )
    assert validate_bracket(spec(trail=trail, trail_activation_price=D("1510"))).trail_activation_price == D("1510")
    assert validate_bracket(sell(trail=trail, trail_activation_price=D("1490"))).trail_activation_price == D("1490")


def test_an_activation_price_without_a_trail_is_refused():
    assert refused(spec(trail_activation_price=D("1510"))) == "trail_activation_price needs a trail"


# ---- labels ---------------------------------------------------------------------------------------------------


def test_tag_is_at_most_20_characters():
    assert refused(spec(tag="x" * 21)) == "tag must be at most 20 characters, got 21"
    assert validate_bracket(spec(tag="x" * 20)).tag == "x" * 20
    assert validate_bracket(spec(tag="  ")).tag is None


def test_strategy_and_client_order_id_are_trimmed_text():
    out = validate_bracket(spec(strategy=" orb ", client_order_id=" alert-1 "))
    assert (out.strategy, out.client_order_id) == ("orb", "alert-1")
    assert "client_order_id must be at most 128" in refused(spec(client_order_id="k" * 129))


# ---- helpers ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "mode", "expected"),
    [
        (D("100.02"), RoundMode.NEAREST_TIES_UP, D("100.00")),
        (D("100.03"), RoundMode.NEAREST_TIES_UP, D("100.05")),
        (D("100.025"), RoundMode.NEAREST_TIES_UP, D("100.05")),
        (D("100.025"), RoundMode.NEAREST_TIES_DOWN, D("100.00")),
        (D("100.04"), RoundMode.DOWN, D("100.00")),
        (D("100.01"), RoundMode.UP, D("100.05")),
        (D("100.05"), RoundMode.UP, D("100.05")),
        (D("100"), "down", D("100.00")),
    ],
)
def test_round_to_tick(price, mode, expected):
    assert round_to_tick(price, D("0.05"), mode) == expected


def test_the_parsers_turn_wire_input_into_enums_with_clear_errors():
    assert parse_action("sell") is Action.SELL
    assert parse_exchange(" mcx ") is Exchange.MCX
    assert parse_product("cnc") is Product.CNC
    assert parse_price_type(None) is PriceType.LIMIT
    assert parse_price_type("sl_m") is PriceType.SL_M
    assert parse_validity(None) is Validity.DAY
    with pytest.raises(ValidationFailed, match="entry_price must be a number"):
        parse_price("1,500", "entry_price")
    assert parse_price(None, "x", required=False) is None
    assert parse_quantity("25") == 25 and parse_quantity(25.0) == 25
    with pytest.raises(ValidationFailed, match="action is required"):
        parse_action("")


def test_split_symbol():
    assert split_symbol("NSE:INFY") == (Exchange.NSE, "INFY")
    assert split_symbol("infy") == (None, "INFY")
    with pytest.raises(ValidationFailed, match="Invalid exchange 'NASDAQ'"):
        split_symbol("NASDAQ:AAPL")
    with pytest.raises(ValidationFailed, match="nothing after the exchange prefix"):
        split_symbol("NSE:")


def test_check_levels_against_a_fill_price():
    # Given a MARKET BUY that filled at 1485 with sl 1480 / Then fine; filled at 1479 / Then refused
    check_levels(Action.BUY, D("1485"), D("1480"), D("1550"))
    with pytest.raises(ValidationFailed, match="SL price must be less than entry price"):
        check_levels(Action.BUY, D("1479"), D("1480"), D("1550"))


# ---- properties -------------------------------------------------------------------------------------------------

TICK = D("0.05")
ticks = st.integers(min_value=1, max_value=2_000_000)  # prices from 0.05 up to 100000.00, in ticks


@settings(max_examples=200, deadline=None)
@given(a=ticks, b=ticks, c=ticks, action=st.sampled_from([Action.BUY, Action.SELL]))
def test_any_on_tick_spec_with_levels_on_the_right_sides_passes_and_swapping_them_fails(a, b, c, action):
    # Given three distinct on-tick prices, ordered low < mid < high
    low, mid, high = sorted({a, b, c}) if len({a, b, c}) == 3 else (1, 2, 3)
    lo, md, hi = (D(x) * TICK for x in (low, mid, high))
    sl, target = (lo, hi) if action is Action.BUY else (hi, lo)
    good = spec(action=action, entry_price=md, sl_price=sl, target_price=target)
    # When validated / Then it passes unchanged
    assert validate_bracket(good) == good
    # And with the stop and target swapped it always fails on the stop
    bad = spec(action=action, entry_price=md, sl_price=target, target_price=sl)
    assert (
        refused(bad)
        == f"For {action} orders, SL price must be {'less' if action is Action.BUY else 'greater'} than entry price"
    )


@settings(max_examples=200, deadline=None)
@given(
    cents=st.integers(min_value=1, max_value=10_000_000),
    tick=st.sampled_from([D("0.05"), D("0.01"), D("0.25"), D("1"), D("0.0025")]),
    mode=st.sampled_from(list(RoundMode)),
)
def test_rounding_always_lands_on_the_tick_within_one_tick(cents, tick, mode):
    price = D(cents) / 100
    rounded = round_to_tick(price, tick, mode)
    assert rounded % tick == 0
    assert abs(rounded - price) < tick
    if mode in (RoundMode.NEAREST_TIES_UP, RoundMode.NEAREST_TIES_DOWN):
        assert abs(rounded - price) <= tick / 2
    if mode is RoundMode.DOWN:
        assert rounded <= price
    if mode is RoundMode.UP:
        assert rounded >= price


@settings(max_examples=100, deadline=None)
@given(
    lots=st.integers(min_value=1, max_value=100),
    lot=st.integers(min_value=1, max_value=1800),
    extra=st.integers(1, 1799),
)
def test_quantity_passes_exactly_when_it_is_whole_lots(lots, lot, extra):
    assert validate_bracket(spec(quantity=lots * lot), lot_size=lot).quantity == lots * lot
    q = lots * lot + (extra % lot)
    if q % lot:
        assert "is not a multiple of the lot size" in refused(spec(quantity=q), lot_size=lot)
