"""Kite's order rate limits at the paper exchange: per API key, order writes per second and per minute, placements
per day; past one, a 429 "Too many requests" (NetworkException) and nothing done. The limiter's clock is held still
by the test, so "one second" is exact however slow the machine."""

from __future__ import annotations

from datetime import datetime

import pytest
import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kite_errors

from paper.config import PaperConfig
from paper.engine import IST
from paper.exchange import OrderRateLimits

INFY_BOOK = {"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500.05}
HEADERS = {"Authorization": "token paper:paper-token", "X-Kite-Version": "3"}
MIDDAY_IST = datetime(2026, 12, 4, 12, 0, tzinfo=IST).timestamp()


class HeldClock:
    """A clock that moves only when the test moves it."""

    def __init__(self, start: float = MIDDAY_IST) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(paper_exchange, monkeypatch) -> HeldClock:
    held = HeldClock()
    monkeypatch.setattr(paper_exchange.exchange.order_limits, "clock", held)
    return held


@pytest.fixture
def kite(paper_exchange) -> KiteConnect:
    paper_exchange.set_quotes([INFY_BOOK])
    client = KiteConnect(api_key="paper", root=paper_exchange.base_url, timeout=5)
    client.set_access_token("paper-token")
    return client


def buy(kite: KiteConnect, tag: str) -> str:
    return kite.place_order(
        variety="regular",
        exchange="NSE",
        tradingsymbol="INFY",
        transaction_type="BUY",
        quantity=1,
        product="MIS",
        order_type="LIMIT",
        price=1490,
        tag=tag,
    )


def test_the_eleventh_order_in_one_second_is_refused_as_kite_refuses_it_and_not_placed(paper_exchange, kite, clock):
    # Given ten orders placed in one second
    placed = [buy(kite, f"ok{n}") for n in range(10)]
    # When an eleventh follows in the same second
    with pytest.raises(kite_errors.NetworkException) as refused:
        buy(kite, "eleventh")
    # Then it is refused with Kite's 429, and the book holds the ten only
    assert refused.value.code == 429
    assert str(refused.value) == "Too many requests"
    assert sorted(o["tag"] for o in kite.orders()) == sorted(f"ok{n}" for n in range(10))
    assert paper_exchange.state()["rate_limited"] == 1
    # And modifying or cancelling counts as an order write too
    with pytest.raises(kite_errors.NetworkException):
        kite.modify_order(variety="regular", order_id=placed[0], price=1489)
    with pytest.raises(kite_errors.NetworkException):
        kite.cancel_order(variety="regular", order_id=placed[0])
    # While reads still answer
    assert len(kite.orders()) == 10


def test_a_refusal_has_kites_body(paper_exchange, kite, clock):
    form = {"exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY", "quantity": "1",
            "product": "MIS", "order_type": "LIMIT", "price": "1490"}  # fmt: skip
    answers = [requests.post(f"{paper_exchange.base_url}/orders/regular", data=form, headers=HEADERS, timeout=5)
               for _ in range(11)]  # fmt: skip
    assert [a.status_code for a in answers] == [200] * 10 + [429]
    assert answers[10].json() == {
        "status": "error",
        "message": "Too many requests",
        "error_type": "NetworkException",
        "data": None,
    }


def test_the_window_slides_a_token_returns_one_second_after_its_order(paper_exchange, kite, clock):
    # Given five orders at t and five at t + 0.5 s
    for n in range(5):
        buy(kite, f"a{n}")
    clock.now += 0.5
    for n in range(5):
        buy(kite, f"b{n}")
    # Then at t + 0.999 s the second is still full
    clock.now += 0.499
    with pytest.raises(kite_errors.NetworkException):
        buy(kite, "early")
    # And at t + 1 s the first five have left it: five more go, the sixth does not
    clock.now += 0.001
    for n in range(5):
        buy(kite, f"c{n}")
    with pytest.raises(kite_errors.NetworkException):
        buy(kite, "sixth")


def test_the_minute_limit_refuses_orders_spread_over_seconds(paper_exchange, kite, clock):
    paper_exchange.configure(order_rate_per_minute=12)
    for n in range(12):
        buy(kite, f"m{n}")
        clock.now += 2.0
    with pytest.raises(kite_errors.NetworkException) as refused:
        buy(kite, "thirteenth")
    assert refused.value.code == 429
    clock.now = MIDDAY_IST + 60.0  # the first one has left the minute
    assert buy(kite, "next")


def test_gtts_and_reads_are_not_order_writes(paper_exchange, kite, clock):
    for n in range(10):
        buy(kite, f"g{n}")
    trigger = kite.place_gtt(
        trigger_type=kite.GTT_TYPE_SINGLE,
        tradingsymbol="INFY",
        exchange="NSE",
        trigger_values=[1400],
        last_price=1500,
        orders=[{"transaction_type": "SELL", "quantity": 1, "order_type": "LIMIT", "product": "CNC", "price": 1399}],
    )
    assert trigger["trigger_id"]
    assert len(kite.orders()) == 10


def test_a_limit_of_zero_switches_that_limit_off(paper_exchange, kite, clock):
    paper_exchange.configure(order_rate_per_second=0)
    assert [buy(kite, f"z{n}") for n in range(15)]
    assert paper_exchange.state()["rate_limited"] == 0


def test_reset_forgets_the_orders_counted(paper_exchange, kite, clock):
    for n in range(10):
        buy(kite, f"r{n}")
    paper_exchange.reset()
    paper_exchange.set_quotes([INFY_BOOK])
    assert buy(kite, "after-reset")


def test_each_api_key_has_its_own_limits_and_the_day_limit_counts_placements_only():
    clock = HeldClock()
    limits = OrderRateLimits(PaperConfig(order_rate_per_second=0, order_rate_per_minute=0, orders_per_day=3), clock)
    assert [limits.admit("one", placement=True) for _ in range(4)] == [None, None, None, "3 orders per day"]
    assert limits.admit("one", placement=False) is None  # a modify is not a placement
    assert limits.admit("two", placement=True) is None
    clock.now = datetime(2026, 12, 5, 0, 0, tzinfo=IST).timestamp()  # the next IST day
    assert limits.admit("one", placement=True) is None


def test_the_limits_come_from_the_environment_with_kites_defaults():
    assert (PaperConfig.from_env({}).order_rate_per_second, PaperConfig.from_env({}).order_rate_per_minute) == (10, 400)
    assert PaperConfig.from_env({}).orders_per_day == 5000
    config = PaperConfig.from_env({"PAPER_ORDER_RATE_PER_SECOND": "0", "PAPER_ORDERS_PER_DAY": "100"})
    assert (config.order_rate_per_second, config.orders_per_day) == (0, 100)
    with pytest.raises(ValueError, match="cannot be negative"):
        PaperConfig.from_env({"PAPER_ORDER_RATE_PER_MINUTE": "-1"})
