"""The paper exchange's matching engine on its own: Kite's rules for orders, stops, GTTs and positions."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal as D

import pytest

from bracketflow.domain.instruments import default_master
from paper.engine import IST, MAX_MODIFICATIONS, Engine, KiteError

MASTER = default_master()
INFY = MASTER.get("NSE", "INFY")
NIFTY_FUT = MASTER.get("NFO", "NIFTY26DECFUT")


class FakeClock:
    def __init__(self) -> None:
        self.seconds = 1000.0

    def monotonic(self) -> float:
        return self.seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(clock: FakeClock) -> Engine:
    e = Engine(MASTER, clock=lambda: datetime(2026, 11, 20, 10, 0, tzinfo=IST), monotonic=clock.monotonic)
    e.updates = []  # type: ignore[attr-defined]
    e.listeners.append(e.updates.append)  # type: ignore[attr-defined]
    return e


def order(**overrides):
    params = {
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "transaction_type": "BUY",
        "quantity": "10",
        "product": "MIS",
        "order_type": "LIMIT",
        "price": "1499",
    }
    params.update({k: str(v) for k, v in overrides.items()})
    return params


def quote(engine: Engine, ltp, bid=None, ask=None, instrument=INFY, **extra):
    engine.set_quote(instrument, D(str(ltp)), D(str(bid)) if bid else None, D(str(ask)) if ask else None, **extra)


def two_leg(lower="1480", upper="1550", last_price="1500", stop_price="1478", target_price="1550"):
    return {
        "type": "two-leg",
        "condition": json.dumps(
            {"exchange": "NSE", "tradingsymbol": "INFY", "trigger_values": [lower, upper], "last_price": last_price}
        ),
        "orders": json.dumps(
            [
                {
                    "transaction_type": "SELL",
                    "quantity": 10,
                    "order_type": "LIMIT",
                    "product": "MIS",
                    "price": stop_price,
                },
                {
                    "transaction_type": "SELL",
                    "quantity": 10,
                    "order_type": "LIMIT",
                    "product": "MIS",
                    "price": target_price,
                },
            ]
        ),
    }


# ---- LIMIT ----------------------------------------------------------------------------------------------


def test_limit_buy_rests_until_the_ask_crosses_then_fills_at_its_own_price(engine: Engine) -> None:
    # Given a book above our bid
    quote(engine, 1500, 1499.95, 1500.05)
    placed = engine.place_order("regular", order(price="1499"))
    assert placed.status == "OPEN" and placed.filled_quantity == 0

    # When the ask drops through our limit
    quote(engine, 1498.5, 1498.45, 1498.55)

    # Then it fills completely at the limit (a resting order is hit at its own price)
    assert placed.status == "COMPLETE"
    assert placed.filled_quantity == 10 and placed.pending_quantity == 0
    assert placed.average_price == D("1499")
    assert [u["status"] for u in engine.updates] == ["OPEN", "COMPLETE"]  # type: ignore[attr-defined]


def test_marketable_limit_fills_at_the_touch_on_arrival(engine: Engine) -> None:
    quote(engine, 1500, 1499.95, 1500.05)

    placed = engine.place_order("regular", order(transaction_type="SELL", price="1490"))

    assert placed.status == "COMPLETE"
    assert placed.average_price == D("1499.95")


def test_limit_sell_does_not_fill_while_the_bid_is_below_it(engine: Engine) -> None:
    quote(engine, 1500, 1499.95, 1500.05)
    placed = engine.place_order("regular", order(transaction_type="SELL", price="1510"))

    quote(engine, 1509.90, 1509.85, 1509.95)

    assert placed.status == "OPEN"
    quote(engine, 1510.10, 1510.05, 1510.15)
    assert placed.status == "COMPLETE" and placed.average_price == D("1510")


# ---- MARKET and market protection -----------------------------------------------------------------------


def test_market_order_without_market_protection_is_refused(engine: Engine) -> None:
    with pytest.raises(KiteError) as refused:
        engine.place_order("regular", order(order_type="MARKET", price=""))
    assert refused.value.http_status == 400
    assert refused.value.error_type == "InputException"
    assert "market protection" in refused.value.message


@pytest.mark.parametrize("protection", ["0", "101", "-2"])
def test_market_protection_outside_kites_range_is_refused(engine: Engine, protection: str) -> None:
    with pytest.raises(KiteError):
        engine.place_order("regular", order(order_type="MARKET", market_protection=protection))


def test_market_buy_fills_at_the_ask_inside_the_protection_band(engine: Engine) -> None:
    quote(engine, 1500, 1499.95, 1500.05)

    placed = engine.place_order("regular", order(order_type="MARKET", market_protection="1"))

    assert placed.status == "COMPLETE"
    assert placed.average_price == D("1500.05")


def test_market_buy_rests_as_a_limit_at_the_band_edge_when_the_ask_is_outside_it(engine: Engine) -> None:
    # Given an ask 2% above the last trade and a 1% protection
    quote(engine, 1500, 1499.95, 1530)

    placed = engine.place_order("regular", order(order_type="MARKET", market_protection="1"))

    # Then it is not filled at 1530: it waits at LTP + 1% = 1515
    assert placed.status == "OPEN"
    assert placed.working_price == D("1515.00")
    quote(engine, 1516, 1515.95, 1516.05)
    assert placed.status == "OPEN"
    quote(engine, 1514, 1513.95, 1514.05)
    assert placed.status == "COMPLETE" and placed.average_price == D("1515.00")


def test_market_sell_with_automatic_protection_fills_at_the_bid(engine: Engine) -> None:
    quote(engine, 1500, 1499.95, 1500.05)

    placed = engine.place_order("regular", order(transaction_type="SELL", order_type="MARKET", market_protection="-1"))

    assert placed.status == "COMPLETE" and placed.average_price == D("1499.95")


# ---- stops ----------------------------------------------------------------------------------------------


def test_sl_sell_waits_for_its_trigger_then_works_as_a_limit(engine: Engine) -> None:
    quote(engine, 1500, 1499.95, 1500.05)
    stop = engine.place_order(
        "regular", order(transaction_type="SELL", order_type="SL", trigger_price="1480", price="1478")
    )
    assert stop.status == "TRIGGER PENDING"

    quote(engine, 1481, 1480.95, 1481.05)
    assert stop.status == "TRIGGER PENDING"

    quote(engine, 1479.5, 1479.45, 1479.55)
    assert stop.status == "COMPLETE"
    assert stop.average_price == D("1479.45")
    assert [u["status"] for u in engine.updates] == ["TRIGGER PENDING", "OPEN", "COMPLETE"]  # type: ignore[attr-defined]


def test_sl_m_buy_triggers_and_fills_at_the_touch(engine: Engine) -> None:
    quote(engine, 1500, 1499.95, 1500.05)
    stop = engine.place_order(
        "regular", order(order_type="SL-M", trigger_price="1520", price="", market_protection="-1")
    )
    assert stop.status == "TRIGGER PENDING"

    quote(engine, 1520.5, 1520.45, 1520.55)

    assert stop.status == "COMPLETE" and stop.average_price == D("1520.55")


def test_sl_m_needs_market_protection(engine: Engine) -> None:
    with pytest.raises(KiteError, match="market protection"):
        engine.place_order("regular", order(order_type="SL-M", trigger_price="1520"))


def test_a_stop_already_crossed_is_rejected_with_kites_message(engine: Engine) -> None:
    quote(engine, 1500, 1499.95, 1500.05)

    stop = engine.place_order(
        "regular", order(transaction_type="SELL", order_type="SL", trigger_price="1505", price="1504")
    )

    assert stop.status == "REJECTED"
    assert "lower than the last traded price" in (stop.status_message or "")


def test_sl_buy_with_trigger_above_its_limit_is_refused(engine: Engine) -> None:
    with pytest.raises(KiteError, match="lower than or equal to the limit price"):
        engine.place_order("regular", order(order_type="SL", trigger_price="1520", price="1510"))


# ---- validation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"price": "1499.03"}, "Tick size for this script is 0.05"),
        ({"quantity": "0"}, "quantity"),
        ({"quantity": "1.5"}, "whole number"),
        ({"tag": "x" * 21}, "20 characters"),
        ({"tradingsymbol": "NOPE"}, "not found"),
        ({"tradingsymbol": "NIFTY 50"}, "index"),
        ({"transaction_type": "HOLD"}, "transaction_type"),
        ({"product": "BO"}, "product"),
        ({"price": "abc"}, "not a number"),
    ],
)
def test_bad_orders_are_refused_with_a_clear_input_error(engine: Engine, overrides, message) -> None:
    with pytest.raises(KiteError) as refused:
        engine.place_order("regular", order(**overrides))
    assert refused.value.error_type == "InputException" and refused.value.http_status == 400
    assert message in refused.value.message
    assert engine.orders == {}


def test_a_tag_of_exactly_twenty_characters_is_accepted(engine: Engine) -> None:
    placed = engine.place_order("regular", order(tag="a" * 20))
    assert placed.as_kite()["tag"] == "a" * 20 and placed.as_kite()["tags"] == ["a" * 20]


def test_futures_need_whole_lots_and_their_own_tick(engine: Engine) -> None:
    base = {"exchange": "NFO", "tradingsymbol": "NIFTY26DECFUT", "product": "NRML"}
    with pytest.raises(KiteError, match="multiple of lot size \\(75\\)"):
        engine.place_order("regular", order(**base, quantity="50", price="24100"))
    with pytest.raises(KiteError, match=r"Tick size for this script is 0\.10"):
        engine.place_order("regular", order(**base, quantity="75", price="24100.05"))
    placed = engine.place_order("regular", order(**base, quantity="150", price="24100.10"))
    assert placed.status == "OPEN" and placed.quantity == 150


# ---- modify and cancel ----------------------------------------------------------------------------------


def test_an_order_can_be_modified_25_times_and_no_more(engine: Engine) -> None:
    placed = engine.place_order("regular", order(price="1400"))
    for i in range(MAX_MODIFICATIONS):
        engine.modify_order("regular", placed.order_id, {"price": str(1400 + (i + 1) * D("0.05"))})

    with pytest.raises(KiteError, match="Maximum allowed order modifications exceeded"):
        engine.modify_order("regular", placed.order_id, {"price": "1450"})

    assert placed.price == D("1401.25") and placed.modifications == MAX_MODIFICATIONS


def test_modifying_into_the_market_fills_the_order(engine: Engine) -> None:
    quote(engine, 1500, 1499.95, 1500.05)
    placed = engine.place_order("regular", order(price="1400"))

    engine.modify_order("regular", placed.order_id, {"price": "1501"})

    assert placed.status == "COMPLETE" and placed.average_price == D("1500.05")


def test_completed_and_cancelled_orders_cannot_be_changed(engine: Engine) -> None:
    placed = engine.place_order("regular", order(price="1400"))
    engine.cancel_order("regular", placed.order_id)
    assert placed.status == "CANCELLED" and placed.cancelled_quantity == 10 and placed.pending_quantity == 0

    with pytest.raises(KiteError, match="cancelled"):
        engine.modify_order("regular", placed.order_id, {"price": "1401"})
    with pytest.raises(KiteError, match="cancelled"):
        engine.cancel_order("regular", placed.order_id)


def test_unknown_orders_are_404(engine: Engine) -> None:
    with pytest.raises(KiteError) as missing:
        engine.cancel_order("regular", "999")
    assert missing.value.http_status == 404


# ---- GTT ------------------------------------------------------------------------------------------------


def test_two_leg_gtt_fires_only_the_stop_leg_when_the_stop_is_crossed(engine: Engine) -> None:
    quote(engine, 1500, 1499.95, 1500.05)
    gtt = engine.place_gtt(two_leg())
    assert gtt.status == "active" and not engine.orders

    quote(engine, 1479.9, 1479.85, 1479.95)

    assert gtt.status == "triggered"
    child_id = gtt.legs[0].result["order_result"]["order_id"]
    child = engine.orders[child_id]
    assert child.order_type == "LIMIT" and child.transaction_type == "SELL" and child.price == D("1478")
    assert child.status == "COMPLETE" and child.average_price == D("1479.85")
    assert gtt.legs[1].result is None
    assert len(engine.orders) == 1

    # The other leg never fires afterwards, even when its trigger is crossed.
    quote(engine, 1560, 1559.95, 1560.05)
    assert len(engine.orders) == 1


def test_two_leg_gtt_fires_the_target_leg_when_the_target_is_crossed(engine: Engine) -> None:
    quote(engine, 1500, 1499.95, 1500.05)
    gtt = engine.place_gtt(two_leg())

    quote(engine, 1551, 1550.95, 1551.05)

    assert gtt.status == "triggered"
    assert gtt.legs[0].result is None
    child = engine.orders[gtt.legs[1].result["order_result"]["order_id"]]
    assert child.status == "COMPLETE" and child.average_price == D("1550.95")


def test_single_gtt_fires_from_the_side_its_last_price_was_on(engine: Engine) -> None:
    quote(engine, 1500, 1499.95, 1500.05)
    params = {
        "type": "single",
        "condition": json.dumps(
            {"exchange": "NSE", "tradingsymbol": "INFY", "trigger_values": [1520], "last_price": 1500}
        ),
        "orders": json.dumps(
            [{"transaction_type": "BUY", "quantity": 5, "order_type": "LIMIT", "product": "CNC", "price": 1522}]
        ),
    }
    gtt = engine.place_gtt(params)

    quote(engine, 1490, 1489.95, 1490.05)
    assert gtt.status == "active"

    quote(engine, 1520, 1519.95, 1520.05)
    assert gtt.status == "triggered"
    assert engine.orders[gtt.legs[0].result["order_result"]["order_id"]].status == "COMPLETE"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {
                "orders": json.dumps(
                    [
                        {
                            "transaction_type": "SELL",
                            "quantity": 10,
                            "order_type": "MARKET",
                            "product": "MIS",
                            "price": 1478,
                        }
                    ]
                    * 2
                )
            },
            "only LIMIT",
        ),
        ({"type": "three-leg"}, "single or two-leg"),
        ({"condition": "not json"}, "JSON"),
    ],
)
def test_bad_gtts_are_refused(engine: Engine, change, message) -> None:
    with pytest.raises(KiteError, match=message):
        engine.place_gtt({**two_leg(), **change})
    assert engine.gtts == {}


def test_gtt_triggers_must_straddle_the_last_price(engine: Engine) -> None:
    with pytest.raises(KiteError, match="lower trigger must be below"):
        engine.place_gtt(two_leg(lower="1505", last_price="1500"))


def test_gtt_child_prices_must_be_on_the_tick(engine: Engine) -> None:
    with pytest.raises(KiteError, match="Tick size"):
        engine.place_gtt(two_leg(stop_price="1478.02"))


def test_gtt_modify_replaces_the_triggers_and_delete_stops_it_firing(engine: Engine) -> None:
    quote(engine, 1500, 1499.95, 1500.05)
    gtt = engine.place_gtt(two_leg())

    engine.modify_gtt(gtt.id, two_leg(lower="1490", stop_price="1488"))
    quote(engine, 1489.5)
    assert gtt.status == "triggered"
    assert engine.orders[gtt.legs[0].result["order_result"]["order_id"]].price == D("1488")

    second = engine.place_gtt(two_leg(last_price="1489.5"))
    engine.delete_gtt(second.id)
    quote(engine, 1470)
    assert second.status == "deleted" and len(engine.orders) == 1
    with pytest.raises(KiteError, match="deleted"):
        engine.modify_gtt(second.id, two_leg())


def test_a_gtt_expires_a_year_after_it_was_placed_and_never_fires_after(clock: FakeClock) -> None:
    # Given an engine whose wall clock the test moves, and a GTT placed on 20 Nov 2026
    now = [datetime(2026, 11, 20, 10, 0, tzinfo=IST)]
    engine = Engine(MASTER, clock=lambda: now[0], monotonic=clock.monotonic)
    quote(engine, 1500, 1499.95, 1500.05)
    gtt = engine.place_gtt(two_leg())
    assert gtt.as_kite()["expires_at"] == "2027-11-20 10:00:00"
    # When a day before its expiry passes, it is still active; a year on, Kite says `expired`
    now[0] = datetime(2027, 11, 19, 10, 0, tzinfo=IST)
    assert engine.gtt(gtt.id).status == "active"
    now[0] = datetime(2027, 11, 20, 10, 0, 1, tzinfo=IST)
    assert [g.status for g in engine.all_gtts()] == ["expired"]
    # Then the market crossing its stop fires nothing, and it can no longer be deleted or modified
    quote(engine, 1470, 1469.95, 1470.05)
    assert gtt.status == "expired" and not engine.orders
    with pytest.raises(KiteError, match="expired"):
        engine.delete_gtt(gtt.id)


# ---- positions ------------------------------------------------------------------------------------------


def test_positions_track_quantity_average_and_pnl(engine: Engine) -> None:
    quote(engine, 1500, 1499.95, 1500.05)
    engine.place_order("regular", order(order_type="MARKET", market_protection="-1"))  # buy 10 @ 1500.05
    engine.place_order("regular", order(price="1500", quantity="10"))  # rests
    quote(engine, 1499.5, 1499.45, 1499.55)  # buy 10 @ 1500.00

    (position,) = engine.positions_view()["net"]
    assert position["quantity"] == 20
    assert position["average_price"] == D("1500.025")
    assert position["pnl"] == (D("1499.5") - D("1500.025")) * 20

    # When half is sold 10 points higher, that half's profit is realised
    quote(engine, 1510, 1510, 1510.05)
    engine.place_order("regular", order(transaction_type="SELL", order_type="MARKET", market_protection="-1"))
    (position,) = engine.positions_view()["net"]
    assert position["quantity"] == 10
    assert position["realised"] == (D("1510") - D("1500.025")) * 10
    assert position["unrealised"] == (D("1510") - D("1500.025")) * 10
    assert position["pnl"] == position["realised"] + position["unrealised"]
    assert position["buy_quantity"] == 20 and position["sell_quantity"] == 10


def test_a_closed_short_position_has_only_realised_pnl(engine: Engine) -> None:
    futures = {"exchange": "NFO", "tradingsymbol": "NIFTY26DECFUT", "product": "NRML", "quantity": "75"}
    quote(engine, 24100, 24099.9, 24100.1, instrument=NIFTY_FUT)
    engine.place_order(
        "regular", order(**futures, transaction_type="SELL", order_type="MARKET", market_protection="-1")
    )
    quote(engine, 24000, 23999.9, 24000.1, instrument=NIFTY_FUT)
    engine.place_order("regular", order(**futures, transaction_type="BUY", order_type="MARKET", market_protection="-1"))

    (position,) = engine.positions_view()["net"]
    assert position["quantity"] == 0
    assert position["pnl"] == position["realised"] == (D("24099.9") - D("24000.1")) * 75
    assert position["unrealised"] == 0


# ---- partial fills and fault gates ------------------------------------------------------------------------


def test_partial_fills_take_what_the_touch_offers(engine: Engine) -> None:
    engine.partial_fills = True
    quote(engine, 1500, 1499.95, 1500.05, bid_qty=100, ask_qty=4)

    placed = engine.place_order("regular", order(price="1500.05"))
    assert placed.status == "OPEN" and placed.filled_quantity == 4 and placed.pending_quantity == 6

    quote(engine, 1500, 1499.95, 1500.05, bid_qty=100, ask_qty=100)
    assert placed.status == "COMPLETE" and placed.filled_quantity == 10
    assert placed.average_price == D("1500.05")
    assert [u["filled_quantity"] for u in engine.updates] == [0, 4, 10]  # type: ignore[attr-defined]


def test_a_fill_gate_delays_the_fill_until_released(engine: Engine, clock: FakeClock) -> None:
    engine.fill_gate = lambda o: 2.0
    quote(engine, 1500, 1499.95, 1500.05)
    placed = engine.place_order("regular", order(price="1501"))
    assert placed.status == "OPEN"

    clock.seconds += 1.0
    engine.release_held()
    assert placed.status == "OPEN"

    clock.seconds += 1.5
    engine.release_held()
    assert placed.status == "COMPLETE"


def test_a_reject_gate_rejects_the_order_with_its_reason(engine: Engine) -> None:
    engine.reject_gate = lambda path, instrument: "RMS: margin exceeds" if instrument.tradingsymbol == "INFY" else None

    placed = engine.place_order("regular", order())

    assert placed.status == "REJECTED" and placed.status_message == "RMS: margin exceeds"
    assert placed.as_kite()["exchange_order_id"] is None


def test_reset_forgets_everything(engine: Engine) -> None:
    quote(engine, 1500)
    engine.place_order("regular", order(price="1500"))
    engine.place_gtt(two_leg())

    engine.reset()

    assert engine.orders == {} and engine.gtts == {} and engine.positions == {} and engine.quotes == {}


# ---- market hours -----------------------------------------------------------------------------------------


def test_a_closed_market_rejects_regular_orders_and_holds_amo_orders_until_the_open() -> None:
    # Given a market open 09:15-15:30 IST and a clock at 08:00
    from paper.engine import MARKET_CLOSED, parse_market_hours

    now = [datetime(2026, 11, 20, 8, 0, tzinfo=IST)]
    engine = Engine(MASTER, clock=lambda: now[0], market_hours=parse_market_hours("09:15-15:30"))
    quote(engine, 1500, 1499.95, 1500.05)

    # When orders arrive before the open
    regular = engine.place_order("regular", order(price="1501"))
    amo = engine.place_order("amo", order(price="1501"))

    # Then the regular order is rejected as Kite does and the AMO waits without filling
    assert regular.status == "REJECTED" and regular.status_message == MARKET_CLOSED
    assert amo.status == "OPEN"
    quote(engine, 1500, 1499.95, 1500.05)
    assert amo.status == "OPEN"

    # And at the open it fills on the next tick
    now[0] = datetime(2026, 11, 20, 9, 15, tzinfo=IST)
    quote(engine, 1500, 1499.95, 1500.05)
    assert amo.status == "COMPLETE" and amo.average_price == D("1501")


def test_market_hours_must_be_a_valid_range() -> None:
    from paper.engine import parse_market_hours

    assert parse_market_hours("") is None
    with pytest.raises(ValueError, match="09:15-15:30"):
        parse_market_hours("9am-4pm")
    with pytest.raises(ValueError, match="open before"):
        parse_market_hours("15:30-09:15")


def test_a_reset_never_hands_out_an_order_or_gtt_id_again(engine: Engine) -> None:
    # Given an order and a GTT, then a reset (tests reset the exchange between cases; the system under test keeps
    # its order-id -> bracket maps, so a reused id would route a new order's updates to an old bracket)
    quote(engine, 1500, 1499.95, 1500.05)
    first_order = engine.place_order("regular", order()).order_id
    first_gtt = engine.place_gtt(two_leg()).id
    engine.reset()
    quote(engine, 1500, 1499.95, 1500.05)
    # When new ones are placed; Then their ids are new
    assert engine.place_order("regular", order()).order_id != first_order
    assert engine.place_gtt(two_leg()).id != first_gtt
    assert engine.orders and len(engine.orders) == 1  # and the book itself was emptied


# ---- arrival times ----------------------------------------------------------------------------------------


def test_the_state_shows_when_each_order_arrived_to_the_microsecond_beside_kites_second(engine: Engine) -> None:
    import time

    quote(engine, 1500, 1499.95, 1500.05)
    before = time.time()
    first = engine.place_order("regular", order(price="1499"))
    second = engine.place_order("regular", order(price="1498"))
    after = time.time()
    rows = {o["order_id"]: o for o in engine.state()["orders"]}
    arrived = [rows[first.order_id]["received_at"], rows[second.order_id]["received_at"]]
    assert before <= arrived[0] <= arrived[1] <= after
    assert rows[first.order_id]["order_timestamp"] == "2026-11-20 10:00:00"  # the Kite field is unchanged
