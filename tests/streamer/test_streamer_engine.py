"""The trailing engine: its live-feed API, and exact agreement with the plain calculator on random streams."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bracketflow.domain.trailing import candidate_stop, compile_bracket, round_away
from streamer.engine import ExitIntent, TrailingEngine, trail_threshold
from streamer.simple import SimpleEngine
from streamer.watchlist import WatchedBracket, parse_watchlist
from tests.streamer.packets import HEARTBEAT, full_packet, ltp_packet, message, quote_packet

INFY = (408065 << 8) | 1
TCS = (2953217 << 8) | 1
NIFTY = 256265  # an index token


def _bracket(bracket_id="b1", token=INFY, side="LONG", product="CNC", stop="1480", trail=None, activation=None):
    return WatchedBracket.from_dict(
        {
            "bracket_id": bracket_id,
            "instrument_token": token,
            "side": side,
            "product": product,
            "stop_price": Decimal(stop),
            "tick_size": Decimal("0.05"),
            "trail": trail,
            "activation_price": None if activation is None else Decimal(activation),
        }
    )


def test_an_exit_is_reported_once_with_its_position_and_the_bracket_stops_being_evaluated():
    # Given a LONG at stop 1480
    engine = TrailingEngine([_bracket()])
    # When a heartbeat, a text message, then a message whose second packet trades at 1479.95 arrive
    assert engine.feed(HEARTBEAT) == []
    assert engine.feed(b'{"type":"order","data":{}}') == []
    exits = engine.feed(message(ltp_packet(TCS, 300000), ltp_packet(INFY, 147995)))
    # Then one exit names message 2 (heartbeat and text counted) and packet 1, at the stop it hit
    assert exits == [ExitIntent("b1", 2, 1, 147995, 148000)]
    # And the bracket is gone: a later cross does nothing
    assert engine.feed(message(ltp_packet(INFY, 140000))) == []
    assert "b1" not in engine
    assert len(engine) == 0


def test_brackets_on_one_token_are_evaluated_in_watchlist_order_within_a_packet():
    # Given a SHORT then a LONG on the same token whose stops have crossed (SHORT 1490 below LONG 1500)
    engine = TrailingEngine(
        [_bracket("short", side="SHORT", stop="1490"), _bracket("long", stop="1500"), _bracket("other", token=TCS)]
    )
    # When one packet trades at 1495, both exit on it, in watchlist order
    exits = engine.feed(message(quote_packet(INFY, 149500)))
    assert [(e.bracket_id, e.packet_index) for e in exits] == [("short", 0), ("long", 0)]
    assert engine.stops() == {"other": 148000}


def test_a_token_repeated_in_one_message_uses_the_stop_trailed_by_the_earlier_packet():
    # Given a LONG with a 10-point trail at stop 1480
    engine = TrailingEngine([_bracket(trail={"type": "points", "value": "10"})])
    # When one message carries 1500 (stop trails to 1490) and then 1489.95 for the same token
    exits = engine.feed(message(ltp_packet(INFY, 150000), ltp_packet(INFY, 148995)))
    # Then the second packet hits the trailed stop
    assert exits == [ExitIntent("b1", 0, 1, 148995, 149000)]


def test_index_packets_are_skipped_even_when_a_bracket_names_the_index():
    engine = TrailingEngine([_bracket("idx", token=NIFTY, stop="24000")])
    assert engine.feed(message(ltp_packet(NIFTY, 1))) == []
    assert engine.stops() == {"idx": 2400000}


def test_mis_trails_on_the_bid_of_full_packets_and_on_ltp_otherwise():
    engine = TrailingEngine([_bracket(product="MIS", trail={"type": "points", "value": "10"})])
    engine.feed(message(full_packet(INFY, 152000, 151500, 152500)))
    assert engine.stop_of("b1") == 150500  # bid 1515 - 10
    engine.feed(message(full_packet(INFY, 152500, 0, 152600)))  # no bids: LTP
    assert engine.stop_of("b1") == 151500
    engine.feed(message(quote_packet(INFY, 153000)))  # no depth: LTP
    assert engine.stop_of("b1") == 152000


def test_activation_is_reached_at_exactly_the_activation_price():
    # Given LONG activation 1510 and SHORT activation 1490, both 5-point trails
    engine = TrailingEngine(
        [
            _bracket("long", trail={"type": "points", "value": "5"}, activation="1510"),
            _bracket("short", token=TCS, side="SHORT", stop="1520", trail={"type": "points", "value": "5"},
                     activation="1490"),
        ]
    )  # fmt: skip
    engine.feed(message(ltp_packet(INFY, 150995), ltp_packet(TCS, 149005)))
    assert not engine.is_activated("long") and not engine.is_activated("short")
    # When each reference touches its activation price exactly
    engine.feed(message(ltp_packet(INFY, 151000), ltp_packet(TCS, 149000)))
    # Then both trail from that very tick
    assert engine.is_activated("long") and engine.is_activated("short")
    assert engine.stops() == {"long": 150500, "short": 149500}


def test_a_stop_set_elsewhere_is_taken_only_when_it_tightens_and_the_trail_goes_on_from_it():
    # Given a LONG at 1480 with a 10-point trail, and a SHORT at 1520 without one
    engine = TrailingEngine(
        [
            _bracket("long", trail={"type": "points", "value": "10"}),
            _bracket("short", token=TCS, side="SHORT", stop="1520"),
        ]
    )
    # When a breakeven of 1501 comes for both (a scale-out share's, set by the workflow)
    assert engine.tighten("long", 150100) is True
    assert engine.tighten("short", 150100) is True
    # Then both stops are there, and recorded as changes to persist
    assert engine.stops() == {"long": 150100, "short": 150100}
    assert engine.take_stop_changes() == {"long": 150100, "short": 150100}
    # And a looser stop, or one for a bracket not watched, changes nothing
    assert engine.tighten("long", 149000) is False
    assert engine.tighten("short", 151000) is False
    assert engine.tighten("gone", 150000) is False
    assert engine.stops() == {"long": 150100, "short": 150100}
    # And the trail goes on from the new stop: 1512 trails the LONG to 1502, 1510 would not have moved it
    engine.feed(message(ltp_packet(INFY, 151000)))
    assert engine.stop_of("long") == 150100
    engine.feed(message(ltp_packet(INFY, 151200)))
    assert engine.stop_of("long") == 150200
    # And each exits at its new stop
    assert engine.feed(message(ltp_packet(TCS, 150095))) == []
    assert [e.bracket_id for e in engine.feed(message(ltp_packet(TCS, 150100)))] == ["short"]
    assert [e.stop_price for e in engine.feed(message(ltp_packet(INFY, 150200)))] == [150200]


def test_watch_unwatch_and_coalesced_stop_changes():
    engine = TrailingEngine()
    engine.watch(_bracket(trail={"type": "percent", "value": "1"}))
    with pytest.raises(ValueError, match="already watched"):
        engine.watch(_bracket())
    # When the price moves up twice, Then take_stop_changes gives only the latest stop, once
    engine.feed(message(ltp_packet(INFY, 151000)))
    engine.feed(message(ltp_packet(INFY, 152000)))
    assert engine.take_stop_changes() == {"b1": 150480}
    assert engine.take_stop_changes() == {}
    # When unwatched, Then the bracket is no longer evaluated
    assert engine.unwatch("b1") is True
    assert engine.unwatch("b1") is False
    assert engine.feed(message(ltp_packet(INFY, 1))) == []
    # And a resumed bracket starts from its persisted stop
    engine.watch(_bracket(trail={"type": "percent", "value": "1"}).with_stop(150480))
    assert engine.stop_of("b1") == 150480


def test_a_bracket_that_cannot_be_trailed_is_refused_with_its_id():
    with pytest.raises(ValueError, match="bracket bad: trail percent"):
        TrailingEngine([_bracket("bad", trail={"type": "percent", "value": "0"})])
    with pytest.raises(ValueError, match="appears twice"):
        parse_watchlist(
            '[{"bracket_id":"a","instrument_token":1,"side":"LONG","product":"CNC","stop_price":1,"tick_size":0.05},'
            '{"bracket_id":"a","instrument_token":1,"side":"LONG","product":"CNC","stop_price":1,"tick_size":0.05}]'
        )


def test_a_malformed_message_is_counted_and_the_packets_before_the_break_still_count():
    engine = TrailingEngine([_bracket()])
    whole = message(ltp_packet(INFY, 150000), ltp_packet(INFY, 140000))
    assert engine.feed(whole[:-3]) == []
    assert engine.malformed_messages == 1
    assert engine.packets_seen == 1


# --- properties: exact agreement with the straightforward calculator ----------------------------------

_TOKENS = (INFY, TCS, NIFTY)


@st.composite
def _watchlists(draw):
    brackets = []
    for i in range(draw(st.integers(1, 6))):
        trail = draw(
            st.one_of(
                st.none(),
                st.builds(lambda v: {"type": "percent", "value": Decimal(v) / 100}, st.integers(1, 300)),
                st.builds(lambda v: {"type": "points", "value": Decimal(v) / 100}, st.integers(1, 300)),
            )
        )
        brackets.append(
            WatchedBracket.from_dict(
                {
                    "bracket_id": f"b{i}",
                    "instrument_token": draw(st.sampled_from(_TOKENS)),
                    "side": draw(st.sampled_from(["LONG", "SHORT"])),
                    "product": draw(st.sampled_from(["MIS", "CNC"])),
                    "stop_price": Decimal(draw(st.integers(9500, 10500))) / 100,
                    "tick_size": Decimal(draw(st.sampled_from([1, 5, 10]))) / 100,
                    "trail": trail,
                    "activation_price": (
                        Decimal(draw(st.integers(9500, 10500))) / 100 if trail and draw(st.booleans()) else None
                    ),
                }
            )
        )
    return brackets


_prices = st.integers(9000, 11000)
_touch = st.one_of(st.just(0), _prices)  # 0: that side of the book is empty
_packet = st.one_of(
    st.builds(ltp_packet, st.sampled_from(_TOKENS), _prices),
    st.builds(quote_packet, st.sampled_from(_TOKENS), _prices),
    st.builds(full_packet, st.sampled_from(_TOKENS), _prices, _touch, _touch),
)
_messages = st.lists(
    st.one_of(st.just(HEARTBEAT), st.lists(_packet, min_size=1, max_size=8).map(lambda ps: message(*ps))),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(_watchlists(), _messages)
def test_the_engine_matches_the_calculator_on_any_stream(brackets, messages):
    # Given any watchlist and any stream (prices near the stops, so exits, trails, activation ties all happen)
    fast, plain = TrailingEngine(brackets), SimpleEngine(brackets)
    for m in messages:
        # Then after every message both decided the same exits and hold the same stops
        assert fast.feed(m) == plain.feed(m)
        assert fast.stops() == plain.stops()


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(["LONG", "SHORT"]),
    st.one_of(
        st.builds(lambda v: {"type": "percent", "value": Decimal(v) / 100}, st.integers(1, 9999)),
        st.builds(lambda v: {"type": "points", "value": Decimal(v) / 100}, st.integers(1, 100_000)),
    ),
    st.integers(1, 10_000_000),
    st.sampled_from([1, 5, 10, 25, 100]),
)
def test_the_trail_threshold_is_the_exact_first_price_that_tightens_the_stop(side, trail, stop, tick):
    # Given an activated trail and a stop
    spec = compile_bracket(side=side, product="CNC", stop_price=Decimal(stop) / 100, tick_size=Decimal(tick) / 100,
                           trail=trail)  # fmt: skip
    threshold = trail_threshold(spec, stop, True)

    def rounded(ref: int) -> int:
        return round_away(side, candidate_stop(side, ref, spec.trail_type, spec.trail_amount), spec.tick)

    # Then the calculator's candidate at the threshold beats the stop, and one paisa short of it does not
    if side == "LONG":
        assert rounded(threshold) > stop
        assert rounded(threshold - 1) <= stop
    else:
        assert rounded(threshold) < stop
        assert rounded(threshold + 1) >= stop


@st.composite
def _walks(draw):
    """Small steps from near the stops, so stops move by a paisa or a tick and prices touch them exactly."""
    price = {t: draw(st.integers(9500, 10500)) for t in _TOKENS}
    messages = []
    for _ in range(draw(st.integers(1, 25))):
        packets = []
        for _ in range(draw(st.integers(1, 6))):
            token = draw(st.sampled_from(_TOKENS))
            price[token] = max(1, price[token] + draw(st.integers(-12, 15)))
            ltp = price[token]
            if draw(st.booleans()):
                packets.append(full_packet(token, ltp, ltp - draw(st.integers(0, 6)), ltp + draw(st.integers(0, 6))))
            else:
                packets.append(ltp_packet(token, ltp))
        messages.append(message(*packets))
    return messages


@settings(max_examples=400, deadline=None)
@given(_watchlists(), _walks())
def test_the_engine_matches_the_calculator_on_small_steps(brackets, messages):
    fast, plain = TrailingEngine(brackets), SimpleEngine(brackets)
    for m in messages:
        assert fast.feed(m) == plain.feed(m)
        assert fast.stops() == plain.stops()
