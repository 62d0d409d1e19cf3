"""Conformance: the official `kiteconnect` client drives the paper exchange exactly as it would drive Kite."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest
import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kite_errors

INFY_BOOK = {"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500.05}


@pytest.fixture
def kite(paper_exchange) -> KiteConnect:
    client = KiteConnect(api_key="paper", root=paper_exchange.base_url, timeout=5)
    client.set_access_token("paper-token")
    return client


def buy_infy(kite: KiteConnect, **overrides):
    params = {
        "variety": kite.VARIETY_REGULAR,
        "exchange": kite.EXCHANGE_NSE,
        "tradingsymbol": "INFY",
        "transaction_type": kite.TRANSACTION_TYPE_BUY,
        "quantity": 10,
        "product": kite.PRODUCT_MIS,
        "order_type": kite.ORDER_TYPE_LIMIT,
        "price": 1490,
    }
    params.update(overrides)
    return kite.place_order(**params)


def test_orders_are_placed_listed_modified_and_cancelled(paper_exchange, kite: KiteConnect) -> None:
    # Given a book
    paper_exchange.set_quotes([INFY_BOOK])

    # When an order is placed, modified and cancelled
    order_id = buy_infy(kite, tag="bf-entry-1")
    assert isinstance(order_id, str)
    assert kite.modify_order(kite.VARIETY_REGULAR, order_id, price=1491.5, quantity=20) == order_id
    assert kite.cancel_order(kite.VARIETY_REGULAR, order_id) == order_id

    # Then the order book and its history say so, in Kite's fields
    (listed,) = kite.orders()
    assert listed["order_id"] == order_id and listed["status"] == "CANCELLED"
    assert listed["price"] == 1491.5 and listed["quantity"] == 20 and listed["cancelled_quantity"] == 20
    assert listed["tag"] == "bf-entry-1" and listed["tags"] == ["bf-entry-1"]
    assert listed["instrument_token"] == 408065 and listed["variety"] == "regular"
    history = kite.order_history(order_id)
    assert [h["status"] for h in history] == ["OPEN", "OPEN", "CANCELLED"]
    assert history[0]["price"] == 1490 and history[1]["price"] == 1491.5


def test_a_filled_order_has_trades_and_a_position(paper_exchange, kite: KiteConnect) -> None:
    paper_exchange.set_quotes([INFY_BOOK])

    order_id = buy_infy(kite, order_type=kite.ORDER_TYPE_MARKET, price=None, market_protection=-1)

    (order,) = kite.order_history(order_id)[-1:]
    assert order["status"] == "COMPLETE" and order["average_price"] == 1500.05 and order["filled_quantity"] == 10
    (trade,) = kite.order_trades(order_id)
    assert trade["order_id"] == order_id and trade["quantity"] == 10 and trade["average_price"] == 1500.05
    assert kite.trades() == [trade]
    paper_exchange.set_quotes([{**INFY_BOOK, "ltp": 1510, "bid": 1509.95, "ask": 1510.05}])
    positions = kite.positions()
    (net,) = positions["net"]
    assert net["tradingsymbol"] == "INFY" and net["quantity"] == 10 and net["product"] == "MIS"
    assert net["average_price"] == 1500.05 and net["last_price"] == 1510
    assert net["pnl"] == pytest.approx((1510 - 1500.05) * 10)
    assert positions["day"][0]["quantity"] == 10


def test_gtts_are_created_read_modified_listed_and_deleted(paper_exchange, kite: KiteConnect) -> None:
    paper_exchange.set_quotes([INFY_BOOK])
    legs = [
        {"transaction_type": "SELL", "quantity": 10, "order_type": "LIMIT", "product": "MIS", "price": 1478},
        {"transaction_type": "SELL", "quantity": 10, "order_type": "LIMIT", "product": "MIS", "price": 1550},
    ]

    created = kite.place_gtt(kite.GTT_TYPE_OCO, "INFY", "NSE", [1480, 1550], 1500, legs)
    trigger_id = created["trigger_id"]
    gtt = kite.get_gtt(trigger_id)
    assert gtt["status"] == "active" and gtt["type"] == "two-leg"
    assert gtt["condition"]["trigger_values"] == [1480, 1550]
    assert gtt["condition"]["instrument_token"] == 408065
    assert [o["price"] for o in gtt["orders"]] == [1478, 1550] and gtt["orders"][0]["result"] is None

    legs[0]["price"] = 1488
    assert kite.modify_gtt(trigger_id, kite.GTT_TYPE_OCO, "INFY", "NSE", [1490, 1550], 1500, legs)["trigger_id"] == (
        trigger_id
    )
    assert kite.get_gtt(trigger_id)["condition"]["trigger_values"] == [1490, 1550]
    assert [g["id"] for g in kite.get_gtts()] == [trigger_id]

    assert kite.delete_gtt(trigger_id)["trigger_id"] == trigger_id
    assert kite.get_gtt(trigger_id)["status"] == "deleted"


def test_a_triggered_gtt_reports_its_child_order(paper_exchange, kite: KiteConnect) -> None:
    paper_exchange.set_quotes([INFY_BOOK])
    legs = [
        {"transaction_type": "SELL", "quantity": 10, "order_type": "LIMIT", "product": "MIS", "price": 1478},
        {"transaction_type": "SELL", "quantity": 10, "order_type": "LIMIT", "product": "MIS", "price": 1550},
    ]
    trigger_id = kite.place_gtt(kite.GTT_TYPE_OCO, "INFY", "NSE", [1480, 1550], 1500, legs)["trigger_id"]

    paper_exchange.set_quotes([{**INFY_BOOK, "ltp": 1479.5, "bid": 1479.45, "ask": 1479.55}])

    gtt = kite.get_gtt(trigger_id)
    assert gtt["status"] == "triggered"
    child_id = gtt["orders"][0]["result"]["order_result"]["order_id"]
    assert gtt["orders"][1]["result"] is None
    child = kite.order_history(child_id)[-1]
    assert child["status"] == "COMPLETE" and child["order_type"] == "LIMIT" and child["average_price"] == 1479.45


def test_quotes_and_ltp(paper_exchange, kite: KiteConnect) -> None:
    paper_exchange.set_quotes([INFY_BOOK, {"exchange": "NFO", "tradingsymbol": "NIFTY26DEC24000CE", "ltp": 438.1}])

    quotes = kite.quote("NSE:INFY", "NFO:NIFTY26DEC24000CE", "NSE:NOPE")

    assert set(quotes) == {"NSE:INFY", "NFO:NIFTY26DEC24000CE"}
    infy = quotes["NSE:INFY"]
    assert infy["last_price"] == 1500 and infy["instrument_token"] == 408065
    assert infy["depth"]["buy"][0]["price"] == 1499.95 and infy["depth"]["sell"][0]["price"] == 1500.05
    assert len(infy["depth"]["buy"]) == len(infy["depth"]["sell"]) == 5
    assert kite.ltp("NSE:INFY") == {"NSE:INFY": {"instrument_token": 408065, "last_price": 1500}}


def test_instruments_csv_parses_with_kites_own_reader(kite: KiteConnect) -> None:
    instruments = kite.instruments()
    by_symbol = {(i["exchange"], i["tradingsymbol"]): i for i in instruments}
    assert by_symbol[("NSE", "INFY")]["instrument_token"] == 408065
    assert by_symbol[("NFO", "NIFTY26DECFUT")]["lot_size"] == 75
    assert all(i["exchange"] == "NFO" for i in kite.instruments("NFO"))


def test_kite_validation_errors_arrive_as_kite_exceptions(kite: KiteConnect) -> None:
    with pytest.raises(kite_errors.InputException, match="market protection") as no_protection:
        buy_infy(kite, order_type=kite.ORDER_TYPE_MARKET, price=None)
    assert no_protection.value.code == 400
    with pytest.raises(kite_errors.InputException, match="Tick size"):
        buy_infy(kite, price=1490.03)
    with pytest.raises(kite_errors.InputException, match="20 characters"):
        buy_infy(kite, tag="t" * 21)
    with pytest.raises(kite_errors.InputException, match="only LIMIT"):
        kite.place_gtt(
            kite.GTT_TYPE_SINGLE,
            "INFY",
            "NSE",
            [1480],
            1500,
            [{"transaction_type": "SELL", "quantity": 1, "order_type": "SL", "product": "CNC", "price": 1478}],
        )
    assert kite.orders() == []


def test_a_wrong_access_token_is_a_token_exception(paper_exchange) -> None:
    stranger = KiteConnect(api_key="paper", root=paper_exchange.base_url, timeout=5)
    stranger.set_access_token("stolen")
    with pytest.raises(kite_errors.TokenException) as refused:
        stranger.orders()
    assert refused.value.code == 403


def test_the_session_token_exchange_checks_the_checksum(paper_exchange) -> None:
    client = KiteConnect(api_key="paper", root=paper_exchange.base_url, timeout=5)
    request_token = paper_exchange.login_request_token()

    with pytest.raises(kite_errors.TokenException):
        client.generate_session(request_token, api_secret="wrong-secret")
    session = client.generate_session(request_token, api_secret="paper-secret")

    assert session["access_token"].startswith("paper-") and client.access_token == session["access_token"]
    assert client.profile()["user_id"] == "PAPER1"


def test_a_request_token_works_once_and_only_if_the_login_issued_it(paper_exchange) -> None:
    client = KiteConnect(api_key="paper", root=paper_exchange.base_url, timeout=5)
    with pytest.raises(kite_errors.TokenException, match="invalid or has expired"):
        client.generate_session("made-up-request-token", api_secret="paper-secret")
    request_token = paper_exchange.login_request_token()
    client.generate_session(request_token, api_secret="paper-secret")
    with pytest.raises(kite_errors.TokenException, match="invalid or has expired"):
        client.generate_session(request_token, api_secret="paper-secret")


def test_a_new_session_ends_the_previous_token(paper_exchange, kite: KiteConnect) -> None:
    # Given the configured token works before anyone logs in
    assert kite.profile()["user_id"] == "PAPER1"
    # When the trader logs in
    fresh = KiteConnect(api_key="paper", root=paper_exchange.base_url, timeout=5)
    fresh.generate_session(paper_exchange.login_request_token(), api_secret="paper-secret")
    # Then the new token works and the old one is refused, as Kite refuses a replaced session
    assert fresh.profile()["user_id"] == "PAPER1"
    with pytest.raises(kite_errors.TokenException):
        kite.profile()
    # And when the session ends (06:00 IST), nothing works until the next login
    paper_exchange.expire_sessions()
    with pytest.raises(kite_errors.TokenException):
        fresh.profile()


def test_unknown_routes_and_orders_answer_in_kites_envelope(paper_exchange) -> None:
    headers = {"Authorization": "token paper:paper-token", "X-Kite-Version": "3"}
    missing = requests.get(f"{paper_exchange.base_url}/orders/42", headers=headers, timeout=5)
    assert missing.status_code == 404
    assert missing.json() == {
        "status": "error",
        "message": "Couldn't find that `order_id`.",
        "error_type": "InputException",
        "data": None,
    }
    nowhere = requests.get(f"{paper_exchange.base_url}/nowhere", headers=headers, timeout=5)
    assert nowhere.status_code == 404 and nowhere.json()["status"] == "error"


def test_the_checksum_is_sha256_of_key_request_token_and_secret(paper_exchange) -> None:
    request_token = paper_exchange.login_request_token()
    checksum = hashlib.sha256(f"paper{request_token}paper-secret".encode()).hexdigest()
    answer = requests.post(
        f"{paper_exchange.base_url}/session/token",
        data={"api_key": "paper", "request_token": request_token, "checksum": checksum},
        timeout=5,
    )
    assert answer.status_code == 200 and answer.json()["data"]["user_id"] == "PAPER1"


@pytest.mark.parametrize(
    "bad_quote",
    [
        {"exchange": "NSE", "tradingsymbol": "NOPE", "ltp": 10},
        {"exchange": "NSE", "tradingsymbol": "INFY", "ltp": "abc"},
        {"exchange": "NSE", "tradingsymbol": "INFY", "ltp": "NaN"},
        {"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1501, "ask": 1499},
        {"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid_qty": "many"},
        {"instrument_token": "x", "ltp": 1500},
    ],
)
def test_bad_test_quotes_are_a_clear_400_and_move_nothing(paper_exchange, kite: KiteConnect, bad_quote) -> None:
    paper_exchange.set_quotes([INFY_BOOK])

    answer = requests.post(
        f"{paper_exchange.base_url}/_paper/quotes",
        json={"quotes": [{**INFY_BOOK, "ltp": 1600, "bid": 1599.95, "ask": 1600.05}, bad_quote]},
        timeout=5,
    )

    assert answer.status_code == 400 and answer.json()["status"] == "error" and answer.json()["message"]
    assert kite.ltp("NSE:INFY")["NSE:INFY"]["last_price"] == 1500


def test_the_control_api_reads_quotes_past_every_fault(paper_exchange, kite: KiteConnect) -> None:
    # Given a quoted market whose Kite API is down for every request
    paper_exchange.set_quotes([INFY_BOOK])
    paper_exchange.set_faults([{"kind": "http_500", "count": 100}])
    with pytest.raises(kite_errors.GeneralException):
        kite.ltp("NSE:INFY")

    # When a test (or the soak's "trader's screen") reads the market through the control API
    answer = requests.get(f"{paper_exchange.base_url}/_paper/quotes", params={"i": "NSE:INFY"}, timeout=5)

    # Then it sees the price, and only what it asked for
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert list(data) == ["NSE:INFY"] and Decimal(str(data["NSE:INFY"]["ltp"])) == Decimal(str(INFY_BOOK["ltp"]))
