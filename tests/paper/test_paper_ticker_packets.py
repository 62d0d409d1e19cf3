"""Ticker packets byte for byte: the official KiteTicker parser reads what the paper exchange writes."""

from __future__ import annotations

import struct
from datetime import datetime
from decimal import Decimal as D

import pytest
from kiteconnect import KiteTicker

from bracketflow.domain.instruments import default_master
from paper import ticker
from paper.engine import IST, Quote

MASTER = default_master()
INFY = MASTER.get("NSE", "INFY")
NIFTY = MASTER.get("NSE", "NIFTY 50")


def kite_parse(message: bytes) -> list[dict]:
    # KiteTicker is only constructed, never connected: its parser is a plain method.
    return KiteTicker("paper", "paper-token")._parse_binary(message)


def infy_quote() -> Quote:
    return Quote(
        ltp=D("1500.25"),
        bid=D("1500.20"),
        ask=D("1500.30"),
        bid_qty=40,
        ask_qty=25,
        volume=12345,
        last_qty=7,
        open=D("1490"),
        high=D("1510.5"),
        low=D("1488.05"),
        close=D("1495"),
        timestamp=datetime(2026, 11, 20, 10, 15, tzinfo=IST),
    )


@pytest.mark.parametrize(("mode", "size"), [("ltp", 8), ("quote", 44), ("full", 184)])
def test_packet_sizes_match_kite(mode: str, size: int) -> None:
    packet = ticker.encode_packet(ticker.snapshot_from_quote(INFY, infy_quote()), mode)
    assert len(packet) == size


def test_full_packet_decodes_to_the_book_with_five_levels_a_side() -> None:
    # Given INFY's book in full mode
    message = ticker.encode_message([ticker.encode_packet(ticker.snapshot_from_quote(INFY, infy_quote()), "full")])

    # When Kite's own parser reads it
    (tick,) = kite_parse(message)

    # Then every value is what the book holds
    assert tick["mode"] == "full" and tick["tradable"] is True
    assert tick["instrument_token"] == INFY.instrument_token
    assert tick["last_price"] == 1500.25
    assert tick["last_traded_quantity"] == 7 and tick["volume_traded"] == 12345
    assert tick["ohlc"] == {"open": 1490.0, "high": 1510.5, "low": 1488.05, "close": 1495.0}
    assert [level["price"] for level in tick["depth"]["buy"]] == [1500.2, 1500.15, 1500.1, 1500.05, 1500.0]
    assert [level["price"] for level in tick["depth"]["sell"]] == [1500.3, 1500.35, 1500.4, 1500.45, 1500.5]
    assert [level["quantity"] for level in tick["depth"]["buy"]] == [40, 80, 120, 160, 200]
    assert tick["depth"]["sell"][0] == {"quantity": 25, "price": 1500.3, "orders": 1}
    assert tick["total_buy_quantity"] == 600 and tick["total_sell_quantity"] == 375
    assert tick["exchange_timestamp"] == datetime.fromtimestamp(infy_quote().timestamp.timestamp())


def test_best_bid_and_ask_sit_where_the_streamer_reads_them() -> None:
    packet = ticker.encode_packet(ticker.snapshot_from_quote(INFY, infy_quote()), "full")
    assert struct.unpack(">I", packet[68:72])[0] == 150020
    assert struct.unpack(">I", packet[128:132])[0] == 150030
    assert ticker.decode_touch(packet) == ticker.DecodedTouch(INFY.instrument_token, 150025, 150020, 150030)


def test_quote_and_ltp_packets_decode() -> None:
    snapshot = ticker.snapshot_from_quote(INFY, infy_quote())
    message = ticker.encode_message([ticker.encode_packet(snapshot, "quote"), ticker.encode_packet(snapshot, "ltp")])

    quote_tick, ltp_tick = kite_parse(message)

    assert quote_tick["mode"] == "quote" and quote_tick["last_price"] == 1500.25 and "depth" not in quote_tick
    expected = {"tradable": True, "mode": "ltp", "instrument_token": INFY.instrument_token, "last_price": 1500.25}
    assert ltp_tick == expected


@pytest.mark.parametrize(("mode", "size"), [("quote", 28), ("full", 32)])
def test_index_packets_are_kites_short_layout(mode: str, size: int) -> None:
    quote = Quote(ltp=D("24010.5"), bid=D(0), ask=D(0), open=D(24000), high=D(24050), low=D(23990), close=D(23900))
    packet = ticker.encode_packet(ticker.snapshot_from_quote(NIFTY, quote), mode)
    assert len(packet) == size

    (tick,) = kite_parse(ticker.encode_message([packet]))

    assert tick["tradable"] is False and tick["mode"] == mode
    assert tick["last_price"] == 24010.5
    assert tick["ohlc"] == {"high": 24050.0, "low": 23990.0, "open": 24000.0, "close": 23900.0}


def test_a_heartbeat_is_one_byte_and_carries_no_ticks() -> None:
    assert ticker.HEARTBEAT == b"\x00"
    assert kite_parse(ticker.HEARTBEAT) == []
    assert ticker.split_message(ticker.HEARTBEAT) == []


def test_split_message_round_trips_and_refuses_truncation() -> None:
    packets = [b"\x00" * 8, b"\x01" * 44]
    message = ticker.encode_message(packets)
    assert ticker.split_message(message) == packets
    with pytest.raises(ValueError):
        ticker.split_message(message[:-1])


def test_prices_become_integer_paise_without_float_error() -> None:
    assert ticker.to_paise(D("0.05")) == 5
    assert ticker.to_paise(D("1499.95")) == 149995
    assert ticker.to_paise(D("24166.70")) == 2416670
