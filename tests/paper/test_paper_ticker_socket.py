"""The paper ticker over a real websocket: subscribe, modes, binary ticks, order updates, heartbeats, replay."""

from __future__ import annotations

import json
import struct

import pytest
import requests
import websocket
from kiteconnect import KiteConnect, KiteTicker

from paper import ticker
from paper.engine import Quote

INFY_TOKEN = 408065
NIFTY_TOKEN = 256265
RECEIVE_TIMEOUT_S = 5


def book(ltp: float) -> dict:
    """INFY's book with a one-tick spread around ltp."""
    return {"exchange": "NSE", "tradingsymbol": "INFY", "ltp": ltp, "bid": ltp - 0.05, "ask": ltp + 0.05}


def kite_parse(message: bytes) -> list[dict]:
    return KiteTicker("paper", "paper-token")._parse_binary(message)


@pytest.fixture
def socket(paper_exchange):
    ws = websocket.create_connection(paper_exchange.ticker_url, timeout=RECEIVE_TIMEOUT_S)
    yield ws
    ws.close()


@pytest.fixture
def kite(paper_exchange) -> KiteConnect:
    client = KiteConnect(api_key="paper", root=paper_exchange.base_url, timeout=5)
    client.set_access_token("paper-token")
    return client


def next_ticks(ws) -> list[dict]:
    """The next binary message with ticks in it (heartbeats and text messages are skipped)."""
    while True:
        opcode, data = ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_BINARY and len(data) > 1:
            return kite_parse(data)


def next_order_update(ws) -> dict:
    while True:
        opcode, data = ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_TEXT:
            message = json.loads(data)
            if message.get("type") == "order":
                return message["data"]


def subscribe(ws, tokens: list[int], mode: str | None = None, *, paper=None) -> None:
    ws.send(json.dumps({"a": "subscribe", "v": tokens}))
    if mode:
        ws.send(json.dumps({"a": "mode", "v": [mode, tokens]}))
    if paper is not None:
        wait_until_subscribed(paper, {str(t): mode or "quote" for t in tokens})


def wait_until_subscribed(paper, modes: dict[str, str]) -> None:
    """The socket and the control API are separate connections: wait until the server has read our commands."""
    for _ in range(500):
        if any(subscription == modes for subscription in paper.state()["ticker_subscriptions"]):
            return
    raise AssertionError(f"the paper exchange never saw the subscription {modes}")


def test_full_mode_ticks_decode_to_the_quotes_that_were_set(paper_exchange, socket) -> None:
    # Given a subscription in full mode
    subscribe(socket, [INFY_TOKEN], "full", paper=paper_exchange)

    # When the book is set
    paper_exchange.set_quotes(
        [{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500.25, "bid": 1500.2, "ask": 1500.3, "bid_qty": 40}]
    )

    # Then KiteTicker's parser reads exactly that book
    (tick,) = next_ticks(socket)
    assert tick["instrument_token"] == INFY_TOKEN and tick["mode"] == "full"
    assert tick["last_price"] == 1500.25
    assert tick["depth"]["buy"][0] == {"price": 1500.2, "quantity": 40, "orders": 1}
    assert tick["depth"]["sell"][0]["price"] == 1500.3
    assert [d["price"] for d in tick["depth"]["sell"]] == [1500.3, 1500.35, 1500.4, 1500.45, 1500.5]
    held = paper_exchange.state()["quotes"]["NSE:INFY"]
    assert (held["ltp"], held["bid"], held["ask"]) == (1500.25, 1500.2, 1500.3)


def test_subscribe_defaults_to_quote_mode_and_sends_the_current_book(paper_exchange, socket) -> None:
    paper_exchange.set_quotes([book(1500)])

    subscribe(socket, [INFY_TOKEN])

    (tick,) = next_ticks(socket)
    assert tick["mode"] == "quote" and tick["last_price"] == 1500


def test_index_ticks_use_the_index_layout(paper_exchange, socket) -> None:
    subscribe(socket, [NIFTY_TOKEN], "full", paper=paper_exchange)

    paper_exchange.set_quotes([{"exchange": "NSE", "tradingsymbol": "NIFTY 50", "ltp": 24010.5}])

    (tick,) = next_ticks(socket)
    assert tick["tradable"] is False and tick["mode"] == "full" and tick["last_price"] == 24010.5


def test_ltp_mode_and_unsubscribe(paper_exchange, socket) -> None:
    subscribe(socket, [INFY_TOKEN, NIFTY_TOKEN], "ltp")
    socket.send(json.dumps({"a": "unsubscribe", "v": [NIFTY_TOKEN]}))
    wait_until_subscribed(paper_exchange, {str(INFY_TOKEN): "ltp"})

    paper_exchange.set_quotes(
        [
            {"exchange": "NSE", "tradingsymbol": "NIFTY 50", "ltp": 24010.5},
            {"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1501},
        ]
    )

    assert next_ticks(socket) == [
        {"tradable": True, "mode": "ltp", "instrument_token": INFY_TOKEN, "last_price": 1501.0}
    ]


def test_every_order_change_arrives_as_a_text_order_update(paper_exchange, socket, kite: KiteConnect) -> None:
    paper_exchange.set_quotes([book(1500)])

    order_id = kite.place_order(
        variety="regular",
        exchange="NSE",
        tradingsymbol="INFY",
        transaction_type="BUY",
        quantity=5,
        product="CNC",
        order_type="LIMIT",
        price=1499,
        tag="bf-upd",
    )
    placed = next_order_update(socket)
    assert placed["order_id"] == order_id and placed["status"] == "OPEN" and placed["tag"] == "bf-upd"

    paper_exchange.set_quotes([book(1498)])
    filled = next_order_update(socket)
    assert filled["order_id"] == order_id and filled["status"] == "COMPLETE"
    assert filled["filled_quantity"] == 5 and filled["average_price"] == 1499 and filled["user_id"] == "PAPER1"


def test_heartbeats_are_single_bytes(paper_exchange, socket) -> None:
    opcode, data = socket.recv_data()
    assert opcode == websocket.ABNF.OPCODE_BINARY and data == b"\x00"


def test_a_ticker_connection_needs_the_right_credentials(paper_exchange) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"{paper_exchange.ws_url}?api_key=paper&access_token=nope", timeout=5)
    assert refused.value.status_code == 403


def test_the_root_path_also_speaks_the_ticker(paper_exchange) -> None:
    url = f"ws://127.0.0.1:{paper_exchange.port}/?api_key=paper&access_token=paper-token"
    ws = websocket.create_connection(url, timeout=RECEIVE_TIMEOUT_S)
    try:
        _, data = ws.recv_data()
        assert data == b"\x00"
    finally:
        ws.close()


def test_a_replay_sends_the_frames_as_is_and_moves_the_book(paper_exchange, socket, kite, tmp_path) -> None:
    # Given a frames file of two full-mode INFY messages and a resting sell at 1510
    from decimal import Decimal as D

    from bracketflow.domain.instruments import default_master

    infy = default_master().get("NSE", "INFY")
    messages = []
    for ltp in ("1505.00", "1510.50"):
        quote = Quote(ltp=D(ltp), bid=D(ltp) - D("0.05"), ask=D(ltp) + D("0.05"), bid_qty=10, ask_qty=10)
        packet = ticker.encode_packet(ticker.snapshot_from_quote(infy, quote), "full")
        messages.append(ticker.encode_message([packet]))
    frames = tmp_path / "session.frames"
    frames.write_bytes(b"".join(struct.pack(">I", len(m)) + m for m in messages))
    order_id = kite.place_order(
        variety="regular",
        exchange="NSE",
        tradingsymbol="INFY",
        transaction_type="SELL",
        quantity=1,
        product="CNC",
        order_type="LIMIT",
        price=1510,
    )
    assert next_order_update(socket)["status"] == "OPEN"

    # When it is replayed as fast as possible
    assert paper_exchange.replay(str(frames), speed=0) == {"messages": 2}

    # Then the client receives the exact bytes, in order, and the book (and the resting order) followed them
    received = []
    while len(received) < 2:
        opcode, data = socket.recv_data()
        if opcode == websocket.ABNF.OPCODE_BINARY and len(data) > 1:
            received.append(data)
    assert received == messages
    filled = next_order_update(socket)
    assert filled["order_id"] == order_id and filled["status"] == "COMPLETE" and filled["average_price"] == 1510
    assert kite.ltp("NSE:INFY")["NSE:INFY"]["last_price"] == 1510.5


def test_a_replay_of_a_missing_file_is_a_clear_400(paper_exchange) -> None:
    answer = requests.post(f"{paper_exchange.base_url}/_paper/replay", json={"path": "/nonexistent.frames"}, timeout=5)
    assert answer.status_code == 400 and "No frames file" in answer.json()["message"]
