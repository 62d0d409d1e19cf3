"""An LTP of 0 (Kite's value before an instrument's first trade) or below (a glitch) is no price: it never exits a
position and never trails a stop — in the calculator, the live engine, the simple engine and the tests' reference.

The trigger rule read literally ("LONG exits if ltp <= stop") would market-exit a LONG on such a packet; this is the one
place we deviate from it (README, streamer section).
"""

from __future__ import annotations

import json
import struct
from decimal import Decimal

import pytest

from bracketflow.domain.trailing import advance, compile_bracket, evaluate, is_triggered
from streamer.engine import ExitIntent, TrailingEngine
from streamer.simple import SimpleEngine
from streamer.watchlist import WatchedBracket
from tests.streamer import reference
from tests.streamer.packets import full_packet, ltp_packet, message, quote_packet

INFY = (408065 << 8) | 1


def long_mis(stop: str = "1480", trail: dict | None = None) -> dict:
    return {
        "bracket_id": "long",
        "instrument_token": INFY,
        "side": "LONG",
        "product": "MIS",
        "stop_price": stop,
        "tick_size": "0.05",
        "trail": trail,
        "activation_price": None,
    }


def short_mis(stop: str = "1520", trail: dict | None = None) -> dict:
    return {**long_mis(stop, trail), "bracket_id": "short", "side": "SHORT"}


PERCENT_1 = {"type": "percent", "value": "1"}


# --- the calculator ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ltp", [0, -1, -148000])
def test_a_long_is_not_triggered_by_an_ltp_that_is_no_price(ltp):
    # Given a LONG with its stop at 1480; When the LTP is 0 or negative; Then it is not a trigger
    assert is_triggered("LONG", ltp, 148000) is False
    bracket = compile_bracket(side="LONG", product="CNC", stop_price="1480", tick_size="0.05")
    assert evaluate(bracket, ltp) == (False, 148000, True)


def test_a_zero_ltp_does_not_trail_even_when_the_full_packet_has_a_bid():
    # Given a MIS LONG trailing 1% on the bid, stop 1480
    bracket = compile_bracket(side="LONG", product="MIS", stop_price="1480", tick_size="0.05", trail=PERCENT_1)
    # When a full packet carries LTP 0 but a bid of 1600
    exited, after = advance(bracket, 0, best_bid=160000, best_ask=160005, has_depth=True)
    # Then nothing happens: the packet is skipped, not half-used
    assert (exited, after) == (False, bracket)


def test_a_negative_ltp_does_not_drag_a_short_stop_down():
    # Given a SHORT CNC trailing 10 points on LTP, stop 1520
    points = {"type": "points", "value": "10"}
    bracket = compile_bracket(side="SHORT", product="CNC", stop_price="1520", tick_size="0.05", trail=points)
    # When a glitch sends LTP -1500.00
    exited, after = advance(bracket, -150000)
    # Then the stop stays where it was (a trail on it would have "tightened" it to -1490)
    assert (exited, after.stop) == (False, 152000)


def test_a_long_stays_open_on_a_zero_ltp_and_exits_on_the_next_real_crossing_in_the_calculator():
    bracket = compile_bracket(side="LONG", product="CNC", stop_price="1480", tick_size="0.05")
    exited, bracket = advance(bracket, 0)
    assert not exited
    exited, bracket = advance(bracket, 148000)
    assert exited and bracket.stop == 148000


# --- the live engine, the simple engine and the reference, packet for packet --------------------------


def frames(*messages: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(m)) + m for m in messages)


ZERO_THEN_CROSS = [
    # message 0: LTP 0 in a full packet (the fast path), with a bid that would trail a MIS stop
    message(full_packet(INFY, 0, 160000, 160005)),
    # message 1: LTP 0 in an LTP-mode packet and a quote packet (the mixed path)
    message(ltp_packet(INFY, 0), quote_packet(INFY, -5)),
    # message 2: a real price above the stop: still open, no trail below the bid it never saw
    message(full_packet(INFY, 150000, 149995, 150005)),
    # message 3: the real crossing
    message(full_packet(INFY, 147995, 147990, 148000)),
]


@pytest.mark.parametrize("trail", [None, PERCENT_1])
def test_a_long_bracket_stays_open_on_ltp_zero_packets_and_exits_on_the_next_real_crossing(trail):
    # Given a LONG MIS at stop 1480 (with and without a trail)
    watched = WatchedBracket.from_dict(long_mis(trail=trail))
    engine = TrailingEngine([watched])
    # When LTP-0 packets arrive in every packet mode
    assert engine.feed(ZERO_THEN_CROSS[0]) == []
    assert engine.feed(ZERO_THEN_CROSS[1]) == []
    # Then the bracket is still watched with its stop untouched
    assert "long" in engine and engine.stop_of("long") == 148000
    assert engine.take_stop_changes() == {}
    # And a real price trails it as usual (1% under the 1499.95 bid = 1484.95) and the next crossing exits it once
    assert engine.feed(ZERO_THEN_CROSS[2]) == []
    expected_stop = 148495 if trail else 148000
    assert engine.stop_of("long") == expected_stop
    exit_message_index = 3
    assert engine.feed(ZERO_THEN_CROSS[3]) == [ExitIntent("long", exit_message_index, 0, 147995, expected_stop)]


@pytest.mark.parametrize("trail", [None, PERCENT_1])
def test_the_simple_engine_and_the_reference_agree_on_zero_ltp_packets(trail):
    watchlist = [long_mis(trail=trail), short_mis(trail=trail)]
    fast = TrailingEngine([WatchedBracket.from_dict(w) for w in watchlist])
    simple = SimpleEngine([WatchedBracket.from_dict(w) for w in watchlist])
    fast_exits = [e for m in ZERO_THEN_CROSS for e in fast.feed(m)]
    simple_exits = [e for m in ZERO_THEN_CROSS for e in simple.feed(m)]
    ref_exits, ref_stops = reference.run(frames(*ZERO_THEN_CROSS), json.dumps(watchlist))
    # Then all three see one exit, the LONG's, on the real crossing; the SHORT was never crossed by a zero
    assert fast_exits == simple_exits
    assert [(e["bracket_id"], e["message_index"]) for e in ref_exits] == [("long", 3)]
    assert [(e.bracket_id, e.message_index) for e in fast_exits] == [("long", 3)]
    assert fast.stops() == simple.stops() == ref_stops
    assert Decimal(ref_exits[0]["stop_price"]) * 100 == fast_exits[0].stop_price
