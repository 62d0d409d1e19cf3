"""The streamer's price breakeven (breakeven_at): a one-shot ratchet beside the trail that moves the stop to the
breakeven stop once the price reaches the trigger, never loosens a stop, never fires twice, long and short."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from bracketflow.contracts import WatchRequest
from bracketflow.domain.enums import PositionSide, Product
from streamer.control import parse_command
from streamer.engine import ExitIntent, TrailingEngine
from streamer.watchlist import WatchedBracket
from tests.streamer.packets import full_packet, ltp_packet, message

INFY = (408065 << 8) | 1


def _bracket(
    side: str = "LONG", stop: str = "1480", at: str = "1520", be: str = "1501", **fields: Any
) -> WatchedBracket:
    return WatchedBracket.from_dict(
        {
            "bracket_id": "b1",
            "instrument_token": INFY,
            "side": side,
            "product": "CNC",
            "stop_price": stop,
            "tick_size": "0.05",
            "entry_price": "1500",
            "breakeven_at": at,
            "breakeven_stop": be,
            **fields,
        }
    )


def _feed(engine: TrailingEngine, *ltps: int) -> list[ExitIntent]:
    exits = []
    for ltp in ltps:
        exits += engine.feed(message(ltp_packet(INFY, ltp)))
    return exits


def test_a_long_stop_moves_to_breakeven_when_the_price_reaches_the_trigger_and_exits_there_once():
    # Given a LONG at stop 1480 with breakeven at 1520 to 1501, no trail
    engine = TrailingEngine([_bracket()])
    # When the price climbs to 1519.95: nothing moves
    assert _feed(engine, 151000, 151995) == []
    assert engine.stop_of("b1") == 148000 and engine.take_breakevens() == {}
    # When it reaches 1520
    assert _feed(engine, 152000) == []
    # Then the stop is the breakeven stop, reported as a breakeven (with the price that reached it) and as a change
    assert engine.stop_of("b1") == 150100
    assert engine.take_breakevens() == {"b1": (150100, 152000)}
    assert engine.take_stop_changes() == {"b1": 150100}
    # And it never fires again: higher prices change nothing
    assert _feed(engine, 153000, 152000) == []
    assert engine.take_breakevens() == {} and engine.take_stop_changes() == {}
    # When the price falls back through the breakeven stop, the bracket exits once, at that stop
    assert _feed(engine, 150500, 150095, 149000) == [ExitIntent("b1", 6, 0, 150095, 150100)]
    assert "b1" not in engine


def test_a_short_stop_moves_down_to_breakeven_at_its_trigger():
    # Given a SHORT at stop 1520 with breakeven at 1480 to 1499
    engine = TrailingEngine([_bracket(side="SHORT", stop="1520", at="1480", be="1499")])
    # When the price falls to 1480.05, then to 1480
    assert _feed(engine, 149000, 148005) == []
    assert engine.stop_of("b1") == 152000
    assert _feed(engine, 148000) == []
    # Then the stop is 1499, once
    assert engine.stop_of("b1") == 149900
    assert engine.take_breakevens() == {"b1": (149900, 148000)}
    assert _feed(engine, 147000) == [] and engine.take_breakevens() == {}
    # And a rise to the breakeven stop exits it there
    assert _feed(engine, 149900) == [ExitIntent("b1", 4, 0, 149900, 149900)]


def test_a_breakeven_never_loosens_a_stop_the_trail_has_passed():
    # Given a LONG with a 5-point trail at stop 1480 and breakeven at 1520 to 1501
    engine = TrailingEngine([_bracket(trail={"type": "points", "value": "5"})])
    # When the price runs to 1530 in one step: the trail takes the stop to 1525 and the breakeven is spent
    assert _feed(engine, 153000) == []
    assert engine.stop_of("b1") == 152500
    assert engine.take_breakevens() == {}
    # And a fall to 1526 leaves the stop at 1525
    assert _feed(engine, 152600) == []
    assert engine.stop_of("b1") == 152500


def test_the_trail_goes_on_from_the_breakeven_stop():
    # Given a LONG with a 25-point trail at stop 1480 and breakeven at 1520 to 1501
    engine = TrailingEngine([_bracket(trail={"type": "points", "value": "25"})])
    # When the price reaches 1520: the breakeven (1501) tightens the trail's 1495
    _feed(engine, 152000)
    assert engine.stop_of("b1") == 150100 and "b1" in engine.take_breakevens()
    # When it rises to 1530, the trail takes it on to 1505
    _feed(engine, 153000)
    assert engine.stop_of("b1") == 150500


def test_a_breakeven_set_elsewhere_or_resumed_after_a_restart_spends_the_trigger():
    # Given a LONG whose stop was already moved to 1501 (a streamer restart resumes it from the stored stop)
    engine = TrailingEngine([_bracket(stop="1501")])
    # When the price reaches the trigger, nothing is reported again
    _feed(engine, 152500)
    assert engine.take_breakevens() == {} and engine.stop_of("b1") == 150100
    # And a stop tightened from outside past the breakeven spends it too
    other = TrailingEngine([_bracket()])
    assert other.tighten("b1", 151000)
    _feed(other, 152500)
    assert other.take_breakevens() == {} and other.stop_of("b1") == 151000


def test_a_trigger_the_breakeven_stop_is_not_short_of_waits_for_a_price_beyond_it():
    # Given a LONG whose fill left its breakeven stop (1521) above its trigger (1520)
    engine = TrailingEngine([_bracket(be="1521")])
    # When the price is at 1520 and 1521, the stop stays (moving it there would exit the bracket at once)
    assert _feed(engine, 152000, 152100) == []
    assert engine.stop_of("b1") == 148000
    # When it trades above 1521, the stop moves to 1521
    assert _feed(engine, 152105) == []
    assert engine.stop_of("b1") == 152100


def test_an_mis_breakeven_is_reached_by_the_best_bid_as_the_trail_is():
    engine = TrailingEngine([_bracket(product="MIS")])
    engine.feed(message(full_packet(INFY, 152000, 151995, 152005)))
    assert engine.stop_of("b1") == 148000
    engine.feed(message(full_packet(INFY, 152005, 152000, 152010)))
    assert engine.stop_of("b1") == 150100


def test_the_watch_request_carries_the_breakeven_to_the_engine():
    # Given the watch protection sends for a LONG with breakeven at 1520.5 to 1501
    sent = WatchRequest(
        bracket_id="b1",
        instrument_token=INFY,
        side=PositionSide.LONG,
        product=Product.CNC,
        stop_price=Decimal("1480"),
        entry_price=Decimal("1500"),
        breakeven_at=Decimal("1520.5"),
        breakeven_stop=Decimal("1501"),
    )
    # When the streamer reads it
    command = parse_command(sent.to_json())
    # Then the bracket it watches carries the trigger and its stop, and the engine acts on them
    assert (command.bracket.breakeven_at, command.bracket.breakeven_stop) == (Decimal("1520.5"), Decimal("1501"))
    engine = TrailingEngine([command.bracket])
    _feed(engine, 152050)
    assert engine.stop_of("b1") == 150100


def _protected(stop: str, **spec_fields: Any) -> Any:
    """A PROTECTED BUY 10 INFY MIS bracket filled at 1500.02, stop-loss 1480, now at `stop`, with a 1% trail."""
    import dataclasses

    from bracketflow.domain.bracket import Bracket, BracketSpec, LegOrder, TrailSpec
    from bracketflow.domain.enums import Action, BracketStatus, Exchange, LegRole, TrailType
    from bracketflow.domain.ids import AccountId

    spec = BracketSpec(
        account_id=AccountId("acct"),
        symbol="INFY",
        exchange=Exchange.NSE,
        product=Product.MIS,
        action=Action.BUY,
        quantity=10,
        entry_price=Decimal("1500"),
        sl_price=Decimal("1480"),
        target_price=Decimal("1560"),
        trail=TrailSpec(TrailType.PERCENT, Decimal("1")),
        trail_activation_price=Decimal("1540"),
        **spec_fields,
    )
    fill = LegOrder(LegRole.ENTRY, quantity=10, filled_quantity=10, average_price=Decimal("1500.02"))
    registered = Bracket.register(spec)
    return dataclasses.replace(registered, status=BracketStatus.PROTECTED, stop_price=Decimal(stop), entry=fill)


def test_resync_resumes_a_price_breakeven_from_the_stored_stop_without_presuming_the_trail_active():
    from bracketflow.domain.instruments import default_master
    from streamer.resync import watch_for

    # Given a bracket with breakeven at 1520 plus 1 point, filled at 1500.02: its breakeven stop is 1501.05
    armed = watch_for(_protected("1480", breakeven_at=Decimal("1520"), breakeven_buffer=Decimal("1")), default_master())
    assert armed is not None
    assert (armed.bracket.breakeven_at, armed.bracket.breakeven_stop) == (Decimal("1520"), Decimal("1501.05"))
    assert not armed.activated
    # When the streamer restarts after it moved the stop there, the watch resumes from it: the trigger is spent, and
    # the trail still waits for its activation price (1540)
    moved = watch_for(
        _protected("1501.05", breakeven_at=Decimal("1520"), breakeven_buffer=Decimal("1")), default_master()
    )
    assert moved is not None and not moved.activated
    engine = TrailingEngine([moved.bracket])
    _feed(engine, 153000)
    assert engine.stop_of(moved.bracket_id) == 150105 and engine.take_breakevens() == {}
    # And a stop the trail moved elsewhere does mean the trail was active
    trailed = watch_for(_protected("1510", breakeven_at=Decimal("1520")), default_master())
    assert trailed is not None and trailed.activated
