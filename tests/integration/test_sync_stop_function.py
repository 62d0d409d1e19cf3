"""functions/sync_stop against moto and the paper exchange: the GTT's stop leg follows a tighter trailed stop (full
replace, the target leg untouched, the limit kept at the same distance), and nothing changes otherwise."""
# ruff: noqa: F811  (the `world` fixture imported from tests.support.exits is redefined as test parameters)

from __future__ import annotations

from decimal import Decimal

from tests.support.exits import seed_protected, sqs_event, world  # noqa: F401
from tests.support.intake import FakeContext


def invoke(*bodies):
    from functions.sync_stop.app import lambda_handler

    return lambda_handler(sqs_event(*bodies), FakeContext())


def triggers(world, gtt_id) -> tuple[list[Decimal], list[Decimal]]:
    gtt = world.gtt(gtt_id)
    values = [Decimal(str(v)) for v in gtt["condition"]["trigger_values"]]
    prices = [Decimal(str(o["price"])) for o in gtt["orders"]]
    return values, prices


def test_a_tighter_stop_moves_the_gtts_stop_leg_and_keeps_the_target(world):
    # Given a long bracket protected by a GTT at 1480 (limit 1475) / 1560, and the market at 1520
    bracket = seed_protected(world.paper)
    world.paper.set_quotes(
        [{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": "1520", "bid": "1520", "ask": "1520.05"}]
    )
    # When the streamer asks for the stop to follow to 1504.75
    response = invoke(("s-1", {"bracket_id": bracket.id, "stop_price": "1504.75", "at": "2026-04-01T04:00:00Z"}))
    # Then the GTT's stop trigger and its limit moved together, and the target leg did not
    assert response["batchItemFailures"] == []
    values, prices = triggers(world, bracket.gtt_id)
    assert values == [Decimal("1504.75"), Decimal("1560")]
    assert prices == [Decimal("1499.75"), Decimal("1560")]
    assert world.gtt(bracket.gtt_id)["status"] == "active"


def test_a_looser_stale_or_crossed_stop_changes_nothing(world):
    # Given a long bracket protected at 1480, the market at 1490
    bracket = seed_protected(world.paper)
    world.paper.set_quotes(
        [{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": "1490", "bid": "1490", "ask": "1490.05"}]
    )
    # When asked for a looser stop, and for one the market has already crossed
    from bracketflow.contracts import StopSyncRequest
    from bracketflow.services.sync_stop import SyncOutcome, sync_stop

    looser = sync_stop(StopSyncRequest(bracket.id, Decimal("1470")))
    crossed = sync_stop(StopSyncRequest(bracket.id, Decimal("1495")))
    # Then neither touched the GTT
    assert (looser, crossed) == (SyncOutcome.NOT_TIGHTER, SyncOutcome.CROSSED)
    assert triggers(world, bracket.gtt_id)[0] == [Decimal("1480"), Decimal("1560")]


def test_a_bracket_that_is_no_longer_protected_is_left_alone(world):
    # Given a bracket that has moved on to EXITING
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.contracts import StopSyncRequest
    from bracketflow.domain.enums import BracketStatus
    from bracketflow.services.sync_stop import SyncOutcome, sync_stop

    bracket = seed_protected(world.paper)
    repo = BracketRepository()
    repo.transition(repo.get(bracket.id), BracketStatus.EXITING, {"type": "ExitRequested", "reason": "MANUAL"})
    # When a late stop sync arrives
    outcome = sync_stop(StopSyncRequest(bracket.id, Decimal("1490")))
    # Then the GTT is untouched
    assert outcome is SyncOutcome.NOT_PROTECTED
    assert triggers(world, bracket.gtt_id)[0] == [Decimal("1480"), Decimal("1560")]
