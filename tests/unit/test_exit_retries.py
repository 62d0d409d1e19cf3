"""What an exit that fills in parts reports, and how fast a failed exit comes back (pure: no AWS, no broker)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from bracketflow.adapters.dynamo.records import bracket_from_item, bracket_to_item
from bracketflow.domain.bracket import Bracket, LegOrder
from bracketflow.domain.enums import BracketStatus, ExitReason, LegRole, OrderStatus
from bracketflow.services.execute_exit import RETRY_CAP_S, retry_delay_s
from bracketflow.services.lifecycle import exit_outcome
from tests.unit.test_bracket import a_spec


def exited_in_parts() -> Bracket:
    """A BUY 10 whose first exit sold 3 @ 1479.90 before market protection cancelled it; the retry sold 7 @ 1479."""
    b = Bracket.register(a_spec(quantity=10))
    earlier = LegOrder(LegRole.EXIT, OrderStatus.CANCELLED, "1", 10, 3, Decimal("1479.90"), "market protection")  # type: ignore[arg-type]
    last = LegOrder(LegRole.EXIT, OrderStatus.EXECUTED, "2", 7, 7, Decimal("1479"))  # type: ignore[arg-type]
    return dataclasses.replace(
        b,
        status=BracketStatus.EXITING,
        entry=LegOrder(LegRole.ENTRY, OrderStatus.EXECUTED, "0", 10, 10, Decimal("1500")),  # type: ignore[arg-type]
        exit=last,
        exit_reason=ExitReason.STOP,
        earlier_exits=(earlier,),
    )


def test_an_exit_filled_in_parts_reports_every_share_at_their_average_price():
    # Given an exit of 10 that filled 3 then 7 across two orders
    outcome = exit_outcome(exited_in_parts())
    # Then WaitForExit gets all 10, at the average over both fills, named by the order that finished it
    assert outcome is not None
    assert outcome["exit"]["quantity"] == 10
    assert Decimal(outcome["exit"]["price"]) == (Decimal("1479.90") * 3 + Decimal("1479") * 7) / 10
    assert outcome["exit"]["order_id"] == "2"


def test_earlier_exits_survive_the_table_and_json():
    # Given a bracket with an earlier, partly filled exit
    b = exited_in_parts()
    # Then the STATE item and the JSON form both keep it, to the paisa
    assert bracket_from_item(bracket_to_item(b)).earlier_exits == b.earlier_exits
    assert Bracket.from_dict(b.to_dict()).earlier_exits == b.earlier_exits
    # And a bracket without any has no such attribute stored
    assert "earlier_exits" not in bracket_to_item(Bracket.register(a_spec()))


def test_a_failed_exit_comes_back_in_seconds_backing_off_to_a_cap():
    # Given the receive counts of one failing exit intent
    delays = [retry_delay_s(n) for n in range(1, 9)]
    # Then it returns after 1, 2, 4, 8 seconds, then every RETRY_CAP_S: never near the queue's 180 s timeout
    assert delays == [1, 2, 4, 8, RETRY_CAP_S, RETRY_CAP_S, RETRY_CAP_S, RETRY_CAP_S]
    assert RETRY_CAP_S < 30
