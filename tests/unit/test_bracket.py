"""The Bracket aggregate, its spec, the enums' wire parsing and the audit events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from bracketflow.domain.bracket import Bracket, BracketSpec, LegOrder, TrailSpec
from bracketflow.domain.enums import (
    Action,
    BlockKind,
    BracketStatus,
    Exchange,
    ExitReason,
    LegRole,
    OrderStatus,
    PositionSide,
    PriceType,
    Product,
    TrailType,
    Validity,
    block_tag,
    parse_block_tag,
)
from bracketflow.domain.events import (
    EVENT_TYPES,
    BracketBlocked,
    StopTrailed,
    event_from_dict,
)
from bracketflow.domain.ids import AccountId, BracketId
from bracketflow.errors import InvalidStateTransition

T0 = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)


def a_spec(**overrides) -> BracketSpec:
    fields = dict(
        account_id=AccountId("acc_1"),
        symbol="INFY",
        exchange=Exchange.NSE,
        product=Product.MIS,
        action=Action.BUY,
        quantity=10,
        entry_price=Decimal("1500"),
        sl_price=Decimal("1480"),
        target_price=Decimal("1550"),
        trail=TrailSpec(TrailType.PERCENT, Decimal("1")),
        trail_activation_price=Decimal("1510"),
        tag="swing",
        strategy="orb",
        client_order_id="alert-42",
    )
    fields.update(overrides)
    return BracketSpec(**fields)


# ---- enums ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["BUY", "buy", " Buy ", "bUy"])
def test_actions_parse_in_any_case(raw):
    assert Action.parse(raw) is Action.BUY


def test_an_unknown_action_says_what_is_allowed():
    with pytest.raises(ValueError, match="BUY, SELL"):
        Action.parse("HOLD")


def test_enum_values_are_the_wire_values():
    # Given the enums / Then their values are exactly what the API, Kite and DynamoDB carry
    assert PriceType.SL_M.value == "SL-M" and PriceType.parse("sl-m") is PriceType.SL_M
    assert [e.value for e in Exchange] == ["NSE", "BSE", "NFO", "MCX", "NCDEX", "CDS"]
    assert [p.value for p in Product] == ["MIS", "CNC", "NRML"]
    assert [v.value for v in Validity] == ["DAY", "IOC", "TTL"]
    assert [t.value for t in TrailType] == ["percent", "points"]
    assert [r.value for r in ExitReason] == [
        "STOP",
        "TRAIL_STOP",
        "TARGET",
        "MANUAL",
        "EOD",
        "EMERGENCY",
        "ROLLBACK",
        "SIGNAL",
        "TIME",
        "KILL_SWITCH",
    ]
    assert f"{Action.SELL}" == "SELL" and json.dumps({"a": Action.SELL}) == '{"a": "SELL"}'


def test_block_tags_are_kind_colon_reason_and_split_back():
    # When a block tag is built / Then it reads "<KIND>:<reason>" and parses back
    tag = BlockKind.RISK_BLOCKED.tag("DAILY_LOSS_HIT")
    assert tag == "RISK_BLOCKED:DAILY_LOSS_HIT"
    assert block_tag("DUPLICATE_BLOCKED", "same alert within 60s") == "DUPLICATE_BLOCKED:same alert within 60s"
    assert parse_block_tag(tag) == (BlockKind.RISK_BLOCKED, "DAILY_LOSS_HIT")
    assert parse_block_tag("swing") is None and parse_block_tag(None) is None


def test_a_block_tag_needs_a_reason():
    with pytest.raises(ValueError):
        block_tag(BlockKind.GUARD_BLOCKED, "  ")


# ---- spec -------------------------------------------------------------------------------------------------


def test_position_side_and_exit_side_follow_the_action():
    assert a_spec().position_side is PositionSide.LONG and a_spec().exit_action is Action.SELL
    sell = a_spec(action=Action.SELL)
    assert sell.position_side is PositionSide.SHORT and sell.exit_action is Action.BUY


def test_spec_round_trips_through_json_without_losing_a_paisa():
    # Given a spec with fractional prices
    spec = a_spec(entry_price=Decimal("1500.05"), sl_price=Decimal("1480.10"))
    # When it goes through JSON and back
    back = BracketSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    # Then it is identical, Decimals included
    assert back == spec
    assert back.sl_price == Decimal("1480.10") and isinstance(back.sl_price, Decimal)


def test_a_market_spec_without_entry_price_round_trips():
    spec = a_spec(price_type=PriceType.MARKET, entry_price=None, trail=None, trail_activation_price=None)
    assert BracketSpec.from_dict(spec.to_dict()) == spec


def test_spec_is_immutable():
    with pytest.raises(AttributeError):
        a_spec().quantity = 20  # type: ignore[misc]


# ---- the aggregate ----------------------------------------------------------------------------------------


def test_a_registered_bracket_starts_created_at_version_1_with_the_stop_at_the_sl():
    # When a bracket is registered
    b = Bracket.register(a_spec(), now=T0)
    # Then it is CREATED, version 1, its stop is the SL, its entry leg is recorded as CREATED
    assert b.status is BracketStatus.CREATED and b.version == 1
    assert b.stop_price == Decimal("1480")
    assert b.entry == LegOrder(role=LegRole.ENTRY, status=OrderStatus.CREATED, quantity=10)
    assert b.id.startswith("br_") and b.account_id == "acc_1"
    assert b.created_at == b.updated_at == T0
    assert b.position_side is PositionSide.LONG
    assert b.tags == ()


def test_a_transition_returns_a_new_bracket_one_version_up():
    # Given a registered bracket
    b = Bracket.register(a_spec(), bracket_id=BracketId("br_fixed"), now=T0)
    later = T0 + timedelta(seconds=1)
    # When the entry is placed
    b2 = b.transition(BracketStatus.ENTRY_PENDING, now=later, entry=b.entry.transition(OrderStatus.SENT_TO_BROKER))
    # Then the new bracket has the new status and version, the old one is untouched
    assert (b2.status, b2.version, b2.updated_at) == (BracketStatus.ENTRY_PENDING, 2, later)
    assert b2.entry.status is OrderStatus.SENT_TO_BROKER
    assert (b.status, b.version) == (BracketStatus.CREATED, 1)
    assert b2.id == b.id and b2.created_at == T0


def test_the_whole_happy_path_walks_the_table():
    b = Bracket.register(a_spec(), now=T0)
    for status in ["ENTRY_PENDING", "ENTRY_FILLED", "PROTECTED", "EXITING", "CLOSED"]:
        b = b.transition(BracketStatus(status), now=T0)
    assert b.status is BracketStatus.CLOSED and b.version == 6


def test_a_forbidden_transition_raises_and_changes_nothing():
    # Given a CREATED bracket
    b = Bracket.register(a_spec(), now=T0)
    # When it is asked to jump to PROTECTED / Then InvalidStateTransition
    with pytest.raises(InvalidStateTransition, match="CREATED to PROTECTED"):
        b.transition(BracketStatus.PROTECTED)
    assert b.status is BracketStatus.CREATED and b.version == 1


def test_a_transition_cannot_smuggle_a_status_or_version_change():
    b = Bracket.register(a_spec(), now=T0)
    with pytest.raises(ValueError, match="version"):
        b.transition(BracketStatus.ENTRY_PENDING, version=7)
    with pytest.raises(ValueError, match="status"):
        b.update(status=BracketStatus.CLOSED)


def test_update_keeps_the_status_and_bumps_the_version():
    # Given a protected bracket
    b = Bracket.register(a_spec(), now=T0)
    for status in ["ENTRY_PENDING", "ENTRY_FILLED", "PROTECTED"]:
        b = b.transition(BracketStatus(status), now=T0)
    # When the stop trails
    trailed = b.update(stop_price=Decimal("1495"), now=T0)
    # Then the status stays, the version moves on
    assert trailed.status is BracketStatus.PROTECTED
    assert trailed.version == b.version + 1 and trailed.stop_price == Decimal("1495")


def test_blocking_fails_the_bracket_with_its_tag():
    # Given a fresh bracket / When risk blocks it
    b = Bracket.register(a_spec(), now=T0).block(BlockKind.RISK_BLOCKED, "DAILY_LOSS_HIT", now=T0)
    # Then it is FAILED, tagged, and its entry leg failed with the same reason
    assert b.status is BracketStatus.FAILED and b.version == 2
    assert b.tags == ("RISK_BLOCKED:DAILY_LOSS_HIT",)
    assert b.entry.status is OrderStatus.FAILED and b.entry.message == "RISK_BLOCKED:DAILY_LOSS_HIT"


def test_a_bracket_past_created_cannot_be_blocked():
    b = Bracket.register(a_spec(), now=T0).transition(BracketStatus.ENTRY_PENDING)
    with pytest.raises(InvalidStateTransition):
        b.block(BlockKind.GUARD_BLOCKED, "late")


def test_a_leg_refuses_a_transition_the_lifecycle_forbids():
    leg = LegOrder(role=LegRole.EXIT, status=OrderStatus.EXECUTED)
    with pytest.raises(InvalidStateTransition, match="EXECUTED to CANCELLED"):
        leg.transition(OrderStatus.CANCELLED)


def test_a_bracket_round_trips_through_json():
    # Given a bracket that went some way, with an exit leg
    b = Bracket.register(a_spec(), now=T0)
    b = b.transition(BracketStatus.ENTRY_PENDING, now=T0, entry=b.entry.transition(OrderStatus.SENT_TO_BROKER))
    b = b.transition(
        BracketStatus.ENTRY_FILLED,
        now=T0,
        entry=b.entry.transition(OrderStatus.EXECUTED, filled_quantity=10, average_price=Decimal("1500.05")),
    )
    b = b.transition(BracketStatus.PROTECTED, now=T0, gtt_id="g1")
    b = b.transition(
        BracketStatus.EXITING,
        now=T0,
        exit=LegOrder(role=LegRole.EXIT, status=OrderStatus.SENT_TO_BROKER, broker_order_id="9", quantity=10),
        exit_reason=ExitReason.TRAIL_STOP,
    )
    # When it goes to JSON and back / Then nothing changed
    assert Bracket.from_dict(json.loads(json.dumps(b.to_dict()))) == b
    assert b.filled_quantity == 10


# ---- events -----------------------------------------------------------------------------------------------


def test_every_event_of_the_lifecycle_is_registered_by_name():
    expected = {
        "BracketRegistered", "BracketBlocked", "EntryPlaced", "EntryFilled", "EntryPartiallyFilled",
        "EntryRejected", "EntryCancelled", "EntryExpired", "EntryCompleted", "EntryRestCancelled", "ProtectionPlaced",
        "ProtectionResized", "ProtectionFailed", "StopTrailed",
        "ExitRequested", "ExitPlaced", "ExitFilled", "ExitFailed", "BracketClosed", "EmergencyExitPlaced",
        "FlaggedForReview", "Reconciled",
        # written by services as plain mappings (tests/unit/test_event_registry.py finds them in the code)
        "WorkflowStartFailed", "WorkflowFailed", "CancelRequested", "ExitSkipped", "BrokerStopMoved",
        "GttOrderCancelled", "BreakevenStopSet",
    }  # fmt: skip
    assert set(EVENT_TYPES) == expected
    for name, cls in EVENT_TYPES.items():
        assert cls.type == name


def test_an_event_round_trips_with_its_type_and_exact_money():
    # Given a trailed-stop event with Decimal data
    ev = StopTrailed("br_1", {"old_stop": Decimal("1480"), "new_stop": Decimal("1490.55")}, at=T0, bracket_version=4)
    # When it goes to JSON and back
    back = event_from_dict(json.loads(json.dumps(ev.to_dict())))
    # Then it is the same event, with money as exact strings
    assert back == ev and type(back) is StopTrailed
    assert back.data == {"old_stop": "1480", "new_stop": "1490.55"}
    assert back.to_dict()["type"] == "StopTrailed" and back.event_id.startswith("ev_")


def test_events_are_in_utc_and_refuse_naive_times_and_floats():
    ist = timezone(timedelta(hours=5, minutes=30))
    ev = BracketBlocked("br_1", {"kind": BlockKind.RISK_BLOCKED}, at=datetime(2026, 3, 2, 9, 30, tzinfo=ist))
    assert ev.at == datetime(2026, 3, 2, 4, 0, tzinfo=UTC) and ev.at.utcoffset() == timedelta(0)
    assert ev.data == {"kind": "RISK_BLOCKED"}
    with pytest.raises(ValueError):
        BracketBlocked("br_1", at=datetime(2026, 3, 2, 9, 30))
    with pytest.raises(TypeError):
        StopTrailed("br_1", {"new_stop": 1490.5})


def test_an_unknown_event_type_is_refused():
    with pytest.raises(ValueError, match="unknown event type"):
        event_from_dict({"type": "Teleported", "bracket_id": "b", "at": T0.isoformat(), "event_id": "e"})
