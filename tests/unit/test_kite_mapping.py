"""Kite adapter mapping: our typed requests to Kite's wire, Kite's answers and errors back to our types.

The HTTP double (`responses`) is used only to see what goes on the wire and to feed recorded-shape answers; retry,
timeout and duplicate-placement behaviour is tested against the paper exchange in tests/integration.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from urllib.parse import parse_qs

import pytest
import responses
from kiteconnect import KiteConnect

from bracketflow.adapters.broker.kite import KiteBroker
from bracketflow.adapters.broker.kite_http import KiteCredentials, static_credentials
from bracketflow.adapters.broker.kite_json import IST, error_from_response, gtt_from_kite, order_from_kite
from bracketflow.adapters.broker.port import GttLeg, GttRequest, OrderChange, OrderRequest
from bracketflow.adapters.broker.session import checksum
from bracketflow.errors import (
    BrokerOrderNotFound,
    BrokerRateLimited,
    BrokerRejected,
    BrokerUnavailable,
    SessionExpired,
)

BASE = "http://kite.test"


def _broker(**kw) -> KiteBroker:
    return KiteBroker(BASE, static_credentials("key1", "tok1"), sleep=lambda s: None, **kw)


def _form(call) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(call.request.body).items()}


def _ok(data) -> dict:
    return {"status": "success", "data": data}


ORDER_ROW = {
    "order_id": "250101000000123",
    "status": "COMPLETE",
    "exchange": "NSE",
    "tradingsymbol": "INFY",
    "transaction_type": "BUY",
    "order_type": "LIMIT",
    "product": "MIS",
    "variety": "regular",
    "quantity": 10,
    "filled_quantity": 10,
    "pending_quantity": 0,
    "cancelled_quantity": 0,
    "price": 1500.05,
    "trigger_price": 0,
    "average_price": 1499.95,
    "tag": None,
    "tags": ["BF0123456789ABCDEFE"],
    "status_message": None,
    "exchange_order_id": "1100000000001",
    "order_timestamp": "2026-04-02 09:15:03",
}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (429, {"status": "error", "message": "Too many requests", "error_type": "NetworkException"}, BrokerRateLimited),
        (403, {"status": "error", "message": "Incorrect api_key", "error_type": "TokenException"}, SessionExpired),
        (403, "<html>forbidden</html>", SessionExpired),
        (400, {"status": "error", "message": "Insufficient funds", "error_type": "MarginException"}, BrokerRejected),
        (400, {"status": "error", "message": "Invalid price", "error_type": "InputException"}, BrokerRejected),
        (400, {"status": "error", "message": "Order not allowed", "error_type": "OrderException"}, BrokerRejected),
        (500, {"status": "error", "message": "Something broke", "error_type": "GeneralException"}, BrokerUnavailable),
        (503, {"status": "error", "message": "OMS down", "error_type": "NetworkException"}, BrokerUnavailable),
        (502, "Bad Gateway", BrokerUnavailable),
        (404, {"status": "error", "message": "Order not found", "error_type": "DataException"}, BrokerOrderNotFound),
    ],
)
def test_broker_errors_become_named_exceptions(status, body, expected):
    # Given a failed Kite answer / When it is mapped
    error = error_from_response(status, body)
    # Then it is the named exception, with the status kept for the logs
    assert type(error) is expected
    assert error.http_status == status


def test_a_rejection_carries_the_brokers_reason_and_an_expired_session_says_log_in_again():
    rejected = error_from_response(
        400, {"message": "Insufficient funds. Required margin 1500", "error_type": "MarginException"}
    )
    expired = error_from_response(403, {"message": "Token is invalid or has expired.", "error_type": "TokenException"})
    assert rejected.message == "Insufficient funds. Required margin 1500"
    assert rejected.error_type == "MarginException"
    assert expired.message == "the Kite session has expired or is invalid — log in again"


@pytest.mark.parametrize(
    ("order_type", "price", "trigger", "override", "expected_protection"),
    [
        ("MARKET", None, None, None, "5"),
        ("SL-M", None, Decimal("1480"), None, "5"),
        ("MARKET", None, None, Decimal("-1"), "-1"),
        ("LIMIT", Decimal("1500.05"), None, None, None),
        ("SL", Decimal("1479.5"), Decimal("1480"), None, None),
    ],
)
def test_market_and_sl_m_orders_always_carry_market_protection(
    order_type, price, trigger, override, expected_protection
):
    # Given an order of each type
    req = OrderRequest(
        "NSE", "INFY", "SELL", 10, "MIS", order_type, price=price, trigger_price=trigger, market_protection=override
    )
    # When it is turned into Kite's form
    form = _broker(market_protection=Decimal("5")).order_form(req)
    # Then only MARKET and SL-M carry market_protection (the configured default unless the request says otherwise)
    assert form.get("market_protection") == expected_protection
    assert ("price" in form) == (price is not None)


def test_prices_go_on_the_wire_as_exact_decimal_text():
    req = OrderRequest("NSE", "INFY", "BUY", 10, "MIS", "SL", price=Decimal("1500.10"), trigger_price=Decimal("1500"))
    form = _broker().order_form(req)
    assert form["price"] == "1500.10"
    assert form["trigger_price"] == "1500"


def test_an_order_request_refuses_a_tag_kite_would_refuse():
    with pytest.raises(ValueError, match="tag"):
        OrderRequest("NSE", "INFY", "BUY", 1, "MIS", "MARKET", tag="this-tag-is-far-too-long-for-kite")
    with pytest.raises(ValueError, match="price"):
        OrderRequest("NSE", "INFY", "BUY", 1, "MIS", "LIMIT")


@responses.activate
def test_place_order_sends_kites_headers_form_and_a_timeout():
    # Given Kite accepting an order (no earlier order with our tag)
    responses.get(f"{BASE}/orders", json=_ok([]))
    responses.post(f"{BASE}/orders/regular", json=_ok({"order_id": "250101000000999"}))
    req = OrderRequest("NSE", "INFY", "BUY", 10, "MIS", "LIMIT", price=Decimal("1500"), tag="BF0123456789ABCDEFE")
    # When we place it
    order_id = _broker(connect_timeout_s=1.5, read_timeout_s=4.0).place_order(req)
    # Then the order id comes back and the call looked like Kite v3
    assert order_id == "250101000000999"
    post = responses.calls[1]
    assert post.request.headers["X-Kite-Version"] == "3"
    assert post.request.headers["Authorization"] == "token key1:tok1"
    assert post.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert _form(post) == {
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "transaction_type": "BUY",
        "quantity": "10",
        "product": "MIS",
        "order_type": "LIMIT",
        "validity": "DAY",
        "price": "1500",
        "tag": "BF0123456789ABCDEFE",
    }
    assert all(call.request.req_kwargs["timeout"] == (1.5, 4.0) for call in responses.calls)


def test_an_order_row_becomes_an_order_report_with_decimals_and_ist_time():
    report = order_from_kite(ORDER_ROW)
    assert report.order_id == "250101000000123"
    assert report.tag == "BF0123456789ABCDEFE"  # Kite puts tags in a list; the first is ours
    assert report.average_price == Decimal("1499.95")
    assert report.order_timestamp == datetime(2026, 4, 2, 9, 15, 3, tzinfo=IST)
    assert report.is_terminal


@responses.activate
def test_orders_are_parsed_without_float_rounding():
    # Kite sends JSON numbers; they must not pass through float on the way to Decimal
    responses.get(f"{BASE}/orders", body='{"status":"success","data":[' + _row_json(price="1500.10") + "]}")
    (report,) = _broker().orders()
    assert report.price == Decimal("1500.10")
    assert str(report.price) == "1500.10"


def _row_json(price: str) -> str:
    return (
        '{"order_id":"1","status":"OPEN","exchange":"NSE","tradingsymbol":"INFY","transaction_type":"BUY",'
        f'"order_type":"LIMIT","product":"MIS","variety":"regular","quantity":1,"price":{price}}}'
    )


def test_a_triggered_gtt_reports_the_order_it_placed_and_matches_its_request():
    row = {
        "id": 42,
        "type": "two-leg",
        "status": "triggered",
        "condition": {"exchange": "NSE", "tradingsymbol": "INFY", "trigger_values": [1480, 1550], "last_price": 1500},
        "orders": [
            {
                "transaction_type": "SELL",
                "quantity": 10,
                "price": 1479,
                "product": "MIS",
                "order_type": "LIMIT",
                "result": {"order_result": {"order_id": "9001", "status": "success"}},
            },
            {
                "transaction_type": "SELL",
                "quantity": 10,
                "price": 1550,
                "product": "MIS",
                "order_type": "LIMIT",
                "result": None,
            },
        ],
        "created_at": "2026-04-02 09:16:00",
    }
    report = gtt_from_kite(row)
    req = GttRequest(
        "NSE",
        "INFY",
        (Decimal("1480"), Decimal("1550")),
        Decimal("1500"),
        (GttLeg("SELL", 10, Decimal("1479"), "MIS"), GttLeg("SELL", 10, Decimal("1550"), "MIS")),
    )
    assert report.triggered_order_ids == ("9001",)
    assert report.same_trigger_as(req)
    other = GttRequest("NSE", "INFY", (Decimal("1485"), Decimal("1550")), Decimal("1500"), req.orders)
    assert not report.same_trigger_as(other)


@responses.activate
def test_create_gtt_sends_type_condition_and_legs_as_kite_expects():
    responses.get(f"{BASE}/gtt/triggers", json=_ok([]))
    responses.post(f"{BASE}/gtt/triggers", json=_ok({"trigger_id": 77}))
    req = GttRequest(
        "NSE",
        "INFY",
        (Decimal("1480.05"), Decimal("1550")),
        Decimal("1500"),
        (GttLeg("SELL", 10, Decimal("1479.5"), "MIS"), GttLeg("SELL", 10, Decimal("1550"), "MIS")),
    )
    assert _broker().create_gtt(req) == 77
    form = _form(responses.calls[1])
    assert form["type"] == "two-leg"
    import json

    assert json.loads(form["condition"]) == {
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "trigger_values": [1480.05, 1550.0],
        "last_price": 1500.0,
    }
    legs = json.loads(form["orders"])
    assert [leg["price"] for leg in legs] == [1479.5, 1550.0]
    assert all(leg["order_type"] == "LIMIT" for leg in legs)


@responses.activate
def test_positions_quotes_and_ltp_map_to_decimals():
    responses.get(
        f"{BASE}/portfolio/positions",
        json=_ok(
            {
                "net": [
                    {
                        "exchange": "NSE",
                        "tradingsymbol": "INFY",
                        "product": "MIS",
                        "quantity": -10,
                        "average_price": 1500.5,
                        "last_price": 1490,
                        "pnl": 105,
                    }
                ],
                "day": [],
            }
        ),
    )
    responses.get(
        f"{BASE}/quote",
        json=_ok(
            {
                "NSE:INFY": {
                    "instrument_token": 408065,
                    "last_price": 1490.4,
                    "volume": 1000,
                    "depth": {"buy": [{"price": 1490.35, "quantity": 5}], "sell": [{"price": 1490.45}]},
                }
            }
        ),
    )
    responses.get(f"{BASE}/quote/ltp", json=_ok({"NSE:INFY": {"instrument_token": 408065, "last_price": 1490.4}}))
    broker = _broker()
    (position,) = broker.positions()
    quote = broker.quote(["NSE:INFY"])["NSE:INFY"]
    assert position.quantity == -10 and position.average_price == Decimal("1500.5")
    assert (quote.best_bid, quote.best_ask, quote.last_price) == (
        Decimal("1490.35"),
        Decimal("1490.45"),
        Decimal("1490.4"),
    )
    assert broker.ltp(["NSE:INFY"]) == {"NSE:INFY": Decimal("1490.4")}
    assert parse_qs(responses.calls[-1].request.url.split("?", 1)[1]) == {"i": ["NSE:INFY"]}


@responses.activate
def test_modify_sets_market_protection_when_an_order_becomes_market():
    responses.put(f"{BASE}/orders/regular/55", json=_ok({"order_id": "55"}))
    _broker().modify_order("55", OrderChange(order_type="MARKET", quantity=10))
    assert _form(responses.calls[0]) == {"quantity": "10", "order_type": "MARKET", "market_protection": "5"}


@responses.activate
def test_cancelling_an_order_that_is_already_cancelled_counts_as_done():
    # Given an order our earlier (lost) cancel already cancelled
    responses.delete(
        f"{BASE}/orders/regular/55",
        status=400,
        json={
            "status": "error",
            "message": "Order cannot be cancelled as it is already cancelled",
            "error_type": "InputException",
        },
    )
    responses.get(f"{BASE}/orders/55", json=_ok([{**ORDER_ROW, "order_id": "55", "status": "CANCELLED"}]))
    # When we cancel it again / Then it is done, not an error
    assert _broker().cancel_order("55") == "55"


@responses.activate
def test_cancelling_a_filled_order_is_refused_with_the_brokers_reason():
    responses.delete(
        f"{BASE}/orders/regular/55",
        status=400,
        json={"status": "error", "message": "Order is already complete", "error_type": "InputException"},
    )
    responses.get(f"{BASE}/orders/55", json=_ok([{**ORDER_ROW, "order_id": "55", "status": "COMPLETE"}]))
    with pytest.raises(BrokerRejected, match="already complete"):
        _broker().cancel_order("55")


@responses.activate
def test_a_stale_token_is_replaced_by_the_stored_session_once():
    # Given a warm Lambda holding yesterday's token while the secret already holds today's
    responses.get(
        f"{BASE}/orders", status=403, json={"status": "error", "message": "expired", "error_type": "TokenException"}
    )
    responses.get(f"{BASE}/orders", json=_ok([ORDER_ROW]))
    seen: list[bool] = []

    def creds(refresh: bool = False) -> KiteCredentials:
        seen.append(refresh)
        return KiteCredentials("key1", "today" if refresh else "yesterday")

    # When it reads the order book
    orders = KiteBroker(BASE, creds).orders()
    # Then it re-read the secret and retried with the new token
    assert len(orders) == 1
    assert seen == [False, True]
    assert responses.calls[1].request.headers["Authorization"] == "token key1:today"


@responses.activate
def test_an_expired_session_with_no_newer_login_tells_the_trader_to_log_in():
    responses.get(
        f"{BASE}/orders", status=403, json={"status": "error", "message": "expired", "error_type": "TokenException"}
    )
    with pytest.raises(SessionExpired, match="log in again"):
        _broker().orders()
    assert len(responses.calls) == 1  # not retried: it cannot succeed


@responses.activate
def test_our_login_checksum_matches_the_official_client():
    # Given the official kiteconnect client logging in (an independent implementation of the checksum)
    responses.post(
        "https://api.kite.trade/session/token",
        json=_ok({"access_token": "at", "user_id": "AB1234", "login_time": "2026-04-02 08:00:00"}),
    )
    KiteConnect(api_key="key1").generate_session("req-token-xyz", api_secret="s3cret")
    sent = _form(responses.calls[0])["checksum"]
    # Then ours is the same
    assert checksum("key1", "req-token-xyz", "s3cret") == sent
    assert sent != hashlib.sha256(b"key1s3cretreq-token-xyz").hexdigest()  # order of the parts matters
