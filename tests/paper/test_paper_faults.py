"""Injected faults behave as a broker adapter has to survive them: 5xx, 429, timeouts, rejects, drops, slow fills."""

from __future__ import annotations

import json
import time

import pytest
import requests
import websocket
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kite_errors

INFY_BOOK = {"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500.05}


@pytest.fixture
def kite(paper_exchange) -> KiteConnect:
    client = KiteConnect(api_key="paper", root=paper_exchange.base_url, timeout=5)
    client.set_access_token("paper-token")
    return client


def place(kite: KiteConnect, symbol: str = "INFY", **overrides) -> str:
    params = {
        "variety": "regular",
        "exchange": "NSE",
        "tradingsymbol": symbol,
        "transaction_type": "BUY",
        "quantity": 1,
        "product": "CNC",
        "order_type": "LIMIT",
        "price": 700 if symbol == "SBIN" else 1490,
    }
    params.update(overrides)
    return kite.place_order(**params)


def test_http_500_fails_the_matching_calls_count_times_then_recovers(paper_exchange, kite) -> None:
    paper_exchange.set_faults([{"kind": "http_500", "match": {"path": "/orders"}, "count": 2}])

    for _ in range(2):
        with pytest.raises(kite_errors.GeneralException) as failed:
            kite.orders()
        assert failed.value.code == 500

    assert kite.orders() == []
    assert kite.positions() == {"net": [], "day": []}


def test_http_500_after_places_the_order_then_answers_500(paper_exchange, kite) -> None:
    # Given the exchange acts on a placement but then answers 500
    paper_exchange.set_faults([{"kind": "http_500_after", "match": {"path": "/orders/regular", "method": "POST"}}])
    # When an order is placed, the client sees the failure
    with pytest.raises(kite_errors.GeneralException):
        place(kite, tag="LOST500")
    # Then the order exists all the same, once, and the next placement is answered normally
    assert [o["tag"] for o in kite.orders()] == ["LOST500"]
    assert place(kite, tag="NEXT")


def test_http_429_refuses_the_order_without_placing_it(paper_exchange, kite) -> None:
    paper_exchange.set_faults([{"kind": "http_429", "match": {"path": "/orders/regular", "method": "POST"}}])

    with pytest.raises(kite_errors.NetworkException) as throttled:
        place(kite)

    assert throttled.value.code == 429
    assert kite.orders() == []
    assert place(kite)  # the next one goes through


def test_a_timeout_places_the_order_but_never_answers_so_the_tag_finds_it(paper_exchange) -> None:
    # Given a client that gives up after half a second, and a timeout fault on placement
    impatient = KiteConnect(api_key="paper", root=paper_exchange.base_url, timeout=0.5)
    impatient.set_access_token("paper-token")
    paper_exchange.set_faults([{"kind": "timeout", "match": {"path": "/orders", "method": "POST"}, "seconds": 10}])

    # When an order is placed, the client sees a timeout
    with pytest.raises(requests.exceptions.Timeout):
        place(impatient, tag="bf-amb-1")

    # Then the order is at the exchange anyway, findable by its tag
    (order,) = [o for o in impatient.orders() if o["tag"] == "bf-amb-1"]
    assert order["status"] == "OPEN" and order["tradingsymbol"] == "INFY"


def test_reject_places_the_order_as_rejected_for_the_matching_symbol_only(paper_exchange, kite) -> None:
    paper_exchange.set_faults(
        [{"kind": "reject", "match": {"tradingsymbol": "SBIN"}, "message": "RMS: Margin exceeds", "count": 5}]
    )

    rejected_id = place(kite, "SBIN")
    accepted_id = place(kite, "INFY")

    rejected = kite.order_history(rejected_id)[-1]
    assert rejected["status"] == "REJECTED" and rejected["status_message"] == "RMS: Margin exceeds"
    assert kite.order_history(accepted_id)[-1]["status"] == "OPEN"


def test_reject_on_the_gtt_path_rejects_the_triggered_child(paper_exchange, kite) -> None:
    paper_exchange.set_quotes([INFY_BOOK])
    paper_exchange.set_faults([{"kind": "reject", "match": {"path": "/gtt/triggers"}}])
    legs = [
        {"transaction_type": "SELL", "quantity": 1, "order_type": "LIMIT", "product": "CNC", "price": 1478},
        {"transaction_type": "SELL", "quantity": 1, "order_type": "LIMIT", "product": "CNC", "price": 1550},
    ]
    trigger_id = kite.place_gtt("two-leg", "INFY", "NSE", [1480, 1550], 1500, legs)["trigger_id"]

    paper_exchange.set_quotes([{**INFY_BOOK, "ltp": 1479, "bid": 1478.95, "ask": 1479.05}])

    result = kite.get_gtt(trigger_id)["orders"][0]["result"]["order_result"]
    assert result["status"] == "failed" and result["rejection_reason"]
    assert kite.order_history(result["order_id"])[-1]["status"] == "REJECTED"


def test_delay_fill_holds_a_crossing_order_open_then_fills_it(paper_exchange, kite) -> None:
    paper_exchange.set_quotes([INFY_BOOK])
    paper_exchange.set_faults([{"kind": "delay_fill", "match": {"tradingsymbol": "INFY"}, "seconds": 0.3}])

    order_id = place(kite, price=1501)

    assert kite.order_history(order_id)[-1]["status"] == "OPEN"
    for _ in range(250):  # waits for the hold to run out; nothing here asserts how long it took
        status = kite.order_history(order_id)[-1]["status"]
        if status == "COMPLETE":
            break
        time.sleep(0.02)
    assert status == "COMPLETE"
    assert kite.order_history(order_id)[-1]["average_price"] == 1500.05


def test_partial_cancel_fills_part_of_a_market_order_and_cancels_the_rest(paper_exchange, kite) -> None:
    # Given a market protection fault that lets 3 of 10 fill on SBIN only
    paper_exchange.set_quotes(
        [INFY_BOOK, {"exchange": "NSE", "tradingsymbol": "SBIN", "ltp": 700, "bid": 699.95, "ask": 700.05}]
    )
    paper_exchange.set_faults(
        [{"kind": "partial_cancel", "match": {"tradingsymbol": "SBIN"}, "fill_ratio": 0.3, "count": 1}]
    )
    # When a MARKET sell of 10 SBIN is placed
    order_id = place(
        kite, "SBIN", transaction_type="SELL", quantity=10, product="MIS", order_type="MARKET", market_protection=2
    )
    # Then the exchange accepted it, filled 3 at the bid and cancelled the other 7 with a market-protection message
    last = kite.order_history(order_id)[-1]
    assert (last["status"], last["filled_quantity"], last["cancelled_quantity"]) == ("CANCELLED", 3, 7)
    assert last["average_price"] == 699.95 and "market protection" in last["status_message"]
    assert [p["quantity"] for p in kite.positions()["net"] if p["tradingsymbol"] == "SBIN"] == [-3]
    # And it fires for MARKET orders only, count times: a LIMIT order and the next MARKET order fill in full
    limit_id = place(kite, "INFY", quantity=5, price=1500.05)
    market_id = place(
        kite, "SBIN", transaction_type="SELL", quantity=10, product="MIS", order_type="MARKET", market_protection=2
    )
    assert kite.order_history(limit_id)[-1]["status"] == "COMPLETE"
    assert kite.order_history(market_id)[-1]["status"] == "COMPLETE"


def test_partial_cancel_rules_need_a_fill_ratio_below_one(paper_exchange) -> None:
    answer = requests.post(
        f"{paper_exchange.base_url}/_paper/faults",
        data=json.dumps({"rules": [{"kind": "partial_cancel", "fill_ratio": 1}]}),
        headers={"Content-Type": "application/json"},
        timeout=5,
    )

    assert answer.status_code == 400 and "fill_ratio" in answer.json()["message"]
    assert paper_exchange.state()["faults"] == []


def test_a_gtt_child_the_market_gapped_past_rests_unfilled(paper_exchange, kite) -> None:
    # Given a two-leg GTT protecting a long: stop trigger 1480 with its LIMIT sell at 1478
    paper_exchange.set_quotes([INFY_BOOK])
    legs = [
        {"transaction_type": "SELL", "quantity": 1, "order_type": "LIMIT", "product": "CNC", "price": 1478},
        {"transaction_type": "SELL", "quantity": 1, "order_type": "LIMIT", "product": "CNC", "price": 1550},
    ]
    trigger_id = kite.place_gtt("two-leg", "INFY", "NSE", [1480, 1550], 1500, legs)["trigger_id"]
    # When the market gaps straight through the stop to 1460, below the child's limit
    paper_exchange.set_quotes([{**INFY_BOOK, "ltp": 1460, "bid": 1459.95, "ask": 1460.05}])
    # Then the GTT fired, but its LIMIT child rests OPEN with nothing filled: the position is still open
    gtt = kite.get_gtt(trigger_id)
    child_id = gtt["orders"][0]["result"]["order_result"]["order_id"]
    assert gtt["status"] == "triggered"
    child = kite.order_history(child_id)[-1]
    assert (child["status"], child["filled_quantity"], child["price"]) == ("OPEN", 0, 1478)
    # And it fills only if the market comes back to its price
    paper_exchange.set_quotes([{**INFY_BOOK, "ltp": 1478, "bid": 1478, "ask": 1478.05}])
    assert kite.order_history(child_id)[-1]["status"] == "COMPLETE"


def test_drop_ws_closes_ticker_connections(paper_exchange) -> None:
    ws = websocket.create_connection(paper_exchange.ticker_url, timeout=5)
    try:
        paper_exchange.set_faults([{"kind": "drop_ws"}])
        # a dropped connection shows as a close, or as a reset when the server aborts the socket first
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionResetError)):
            for _ in range(20):
                ws.recv_data()
        assert paper_exchange.state()["faults"][0]["fired"] == 1
    finally:
        ws.close()
    # The feed comes back for a client that reconnects.
    again = websocket.create_connection(paper_exchange.ticker_url, timeout=5)
    try:
        assert again.recv_data()[1] == b"\x00"
    finally:
        again.close()


def test_drop_order_update_loses_the_matching_symbols_updates_and_keeps_the_connection(paper_exchange, kite) -> None:
    # Given a ticker connection, and every INFY order update set to be dropped
    paper_exchange.set_quotes([INFY_BOOK, {"exchange": "NSE", "tradingsymbol": "SBIN", "ltp": 800, "bid": 799.95,
                                           "ask": 800.05}])  # fmt: skip
    ws = websocket.create_connection(paper_exchange.ticker_url, timeout=5)
    try:
        paper_exchange.set_faults([{"kind": "drop_order_update", "match": {"tradingsymbol": "INFY"}, "count": 100}])
        # When an INFY order fills, then a SBIN order fills
        infy = place(kite, price=1501)
        sbin = place(kite, symbol="SBIN", price=801)
        assert kite.order_history(infy)[-1]["status"] == "COMPLETE"
        seen: list[dict] = []
        for _ in range(200):  # until SBIN's fill arrives on the same connection
            message = ws.recv()
            if isinstance(message, str) and json.loads(message).get("type") == "order":
                seen.append(json.loads(message)["data"])
                if seen[-1]["order_id"] == sbin and seen[-1]["status"] == "COMPLETE":
                    break
        # Then no INFY update was sent, SBIN's were, and the rule counts what it dropped
        assert {u["tradingsymbol"] for u in seen} == {"SBIN"}
        assert seen[-1]["order_id"] == sbin and seen[-1]["status"] == "COMPLETE"
        assert paper_exchange.state()["faults"][0]["fired"] >= 1
    finally:
        ws.close()


def test_rate_fires_a_seeded_share_of_the_time(paper_exchange, kite) -> None:
    paper_exchange.set_faults([{"kind": "http_500", "match": {"path": "/trades"}, "count": 1000, "rate": 0.5}])

    failures = 0
    for _ in range(40):
        try:
            kite.trades()
        except kite_errors.GeneralException:
            failures += 1

    assert 5 < failures < 35
    assert paper_exchange.state()["faults"][0]["fired"] == failures


def test_bad_fault_rules_are_a_clear_400_and_change_nothing(paper_exchange) -> None:
    paper_exchange.set_faults([{"kind": "http_500", "match": {"path": "/orders"}}])

    answer = requests.post(
        f"{paper_exchange.base_url}/_paper/faults",
        data=json.dumps({"rules": [{"kind": "meteor"}]}),
        headers={"Content-Type": "application/json"},
        timeout=5,
    )

    assert answer.status_code == 400 and "kind must be one of" in answer.json()["message"]
    assert [r["kind"] for r in paper_exchange.state()["faults"]] == ["http_500"]


def test_reset_clears_faults(paper_exchange, kite) -> None:
    paper_exchange.set_faults([{"kind": "http_500", "match": {"path": "/orders"}}])

    paper_exchange.reset()

    assert kite.orders() == []


OCO_LEGS = [
    {"transaction_type": "SELL", "quantity": 1, "price": 1479, "order_type": "LIMIT", "product": "CNC"},
    {"transaction_type": "SELL", "quantity": 1, "price": 1550, "order_type": "LIMIT", "product": "CNC"},
]


def test_slow_visibility_hides_a_placed_order_from_the_order_book_for_its_seconds(paper_exchange, kite) -> None:
    # Given a broker whose order book shows a new order only a second after placing it
    paper_exchange.set_faults(
        [{"kind": "slow_visibility", "match": {"path": "/orders", "method": "POST"}, "seconds": 1}]
    )
    # When an order is placed, its id comes back at once
    order_id = place(kite, tag="SLOWSEEN")
    # Then neither the book nor the order's own history shows it yet
    assert kite.orders() == []
    with pytest.raises(kite_errors.InputException):
        kite.order_history(order_id)
    # And once the second has passed it is there, once, with its tag
    time.sleep(1.1)
    assert [o["order_id"] for o in kite.orders() if o["tag"] == "SLOWSEEN"] == [order_id]
    assert kite.order_history(order_id)[-1]["order_id"] == order_id
    # And the next order is visible at once (count 1)
    other = place(kite, tag="ATONCE")
    assert other in {o["order_id"] for o in kite.orders()}


def test_slow_visibility_hides_a_created_gtt_from_the_gtt_list_for_its_seconds(paper_exchange, kite) -> None:
    paper_exchange.set_quotes([INFY_BOOK])
    paper_exchange.set_faults(
        [{"kind": "slow_visibility", "match": {"path": "/gtt/triggers", "method": "POST"}, "seconds": 1}]
    )
    trigger_id = kite.place_gtt(kite.GTT_TYPE_OCO, "INFY", "NSE", [1480, 1550], 1500, OCO_LEGS)["trigger_id"]
    assert kite.get_gtts() == []
    with pytest.raises(kite_errors.InputException):
        kite.get_gtt(trigger_id)
    assert requests.get(f"{paper_exchange.base_url}/_paper/state", timeout=5).json()["data"]["hidden"] == 1
    time.sleep(1.1)
    assert requests.get(f"{paper_exchange.base_url}/_paper/state", timeout=5).json()["data"]["hidden"] == 0
    assert [g["id"] for g in kite.get_gtts()] == [trigger_id]
    assert kite.get_gtt(trigger_id)["status"] == "active"


def test_outage_after_acts_on_the_request_then_refuses_its_path_for_its_seconds(paper_exchange, kite) -> None:
    # Given a GTT service that goes down right after acting on a create
    paper_exchange.set_quotes([INFY_BOOK])
    paper_exchange.set_faults(
        [{"kind": "outage_after", "match": {"path": "/gtt/triggers", "method": "POST"}, "seconds": 1}]
    )
    # When a GTT is created, the client sees a 500
    with pytest.raises(kite_errors.GeneralException):
        kite.place_gtt(kite.GTT_TYPE_OCO, "INFY", "NSE", [1480, 1550], 1500, OCO_LEGS)
    # Then the GTT list is refused for the outage, while other paths answer
    with pytest.raises(kite_errors.GeneralException) as down:
        kite.get_gtts()
    assert down.value.code == 500
    assert kite.orders() == []
    # And afterwards the GTT the failed call created is there, once
    time.sleep(1.1)
    (created,) = kite.get_gtts()
    assert created["status"] == "active" and created["condition"]["tradingsymbol"] == "INFY"


def test_postbacks_carry_kites_checksum_and_drop_postback_loses_one_channel_only() -> None:
    import hashlib
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from paper.testing import start_paper_exchange

    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/broker/postback"
        with start_paper_exchange(market="manual", postback_url=url) as paper:
            paper.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500.1}])
            own = KiteConnect(api_key=paper.api_key, root=paper.base_url, timeout=5)
            own.set_access_token(paper.access_token)
            # Given a postback URL: a filled order is POSTed there, its checksum as Kite makes it
            first = own.place_order(variety="regular", exchange="NSE", tradingsymbol="INFY", transaction_type="BUY",
                                    quantity=1, product="MIS", order_type="MARKET", market_protection=5)  # fmt: skip
            deadline = time.monotonic() + 10
            while not any(p["order_id"] == first and p["status"] == "COMPLETE" for p in received):
                assert time.monotonic() < deadline, received
                time.sleep(0.05)
            done = next(p for p in received if p["order_id"] == first and p["status"] == "COMPLETE")
            secret = paper.config.api_secret
            expected = hashlib.sha256((first + str(done["order_timestamp"]) + secret).encode()).hexdigest()
            assert done["checksum"] == expected and done["filled_quantity"] == 1
            # When drop_postback is set, the next order's postbacks are lost (its ticker updates are not touched)
            paper.set_faults([{"kind": "drop_postback", "match": {"tradingsymbol": "INFY"}, "count": 100}])
            second = own.place_order(variety="regular", exchange="NSE", tradingsymbol="INFY", transaction_type="SELL",
                                     quantity=1, product="MIS", order_type="MARKET", market_protection=5)  # fmt: skip
            assert own.order_history(second)[-1]["status"] == "COMPLETE"
            time.sleep(0.5)
            assert not any(p["order_id"] == second for p in received)
    finally:
        server.shutdown()
