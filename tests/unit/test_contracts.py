"""The wire contracts: what each producer sends is what its consumer reads, and no exit message is built by hand."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.contracts import (
    BatchWorkflowInput,
    ExitRequest,
    OrderEvent,
    StopSyncRequest,
    UnwatchRequest,
    WatchRequest,
    read_control_message,
    wire_time,
)
from bracketflow.domain.bracket import Bracket, BracketSpec, LegOrder, TrailSpec
from bracketflow.domain.enums import (
    Action,
    BracketStatus,
    Exchange,
    ExitReason,
    LegRole,
    OrderStatus,
    PositionSide,
    PriceType,
    Product,
    TrailType,
)
from bracketflow.domain.ids import AccountId, BrokerOrderId
from bracketflow.domain.trailing import stop_has_trailed
from bracketflow.errors import ValidationFailed

REPO = Path(__file__).resolve().parents[2]
SOURCE_TREES = ["layers/common/bracketflow", "streamer/streamer", "functions", "local", "paper"]
CONTRACTS = REPO / "layers/common/bracketflow/contracts"


def _bracket(
    action: Action = Action.BUY, sl: str = "1480", target: str = "1540", trail: TrailSpec | None = None
) -> Bracket:
    spec = BracketSpec(
        account_id=AccountId("acct-1"),
        exchange=Exchange.NSE,
        symbol="INFY",
        action=action,
        quantity=10,
        product=Product.MIS,
        price_type=PriceType.MARKET,
        entry_price=None,
        sl_price=Decimal(sl),
        target_price=Decimal(target),
        trail=trail,
        trail_activation_price=None if trail is None else Decimal("1510"),
    )
    return Bracket.register(spec)


def _protected(bracket: Bracket, stop: str, filled: int = 10) -> Bracket:
    entry = LegOrder(LegRole.ENTRY, OrderStatus.EXECUTED, BrokerOrderId("O-1"), 10, filled, Decimal("1500.05"))
    return dataclasses.replace(
        bracket, status=BracketStatus.PROTECTED, entry=entry, stop_price=Decimal(stop), gtt_id="G-7"
    )


def test_a_streamer_exit_reads_back_as_sent() -> None:
    sent = ExitRequest(
        bracket_id="b1",
        reason=ExitReason.TRAIL_STOP,
        ltp=Decimal("1494.95"),
        stop_price=Decimal("1495.00"),
        detected_at="2026-01-05T04:00:00.123456Z",
        message_index=12,
        packet_index=3,
    )
    wire = json.loads(sent.to_json())
    assert wire == {
        "bracket_id": "b1",
        "reason": "TRAIL_STOP",
        "ltp": "1494.95",
        "stop_price": "1495.00",
        "detected_at": "2026-01-05T04:00:00.123456Z",
        "message_index": 12,
        "packet_index": 3,
    }
    assert ExitRequest.from_json(sent.to_json()) == sent


def test_the_square_off_exit_reads_back_without_a_price() -> None:
    from bracketflow.services.square_off import eod_exit_intent

    bracket = _bracket()
    body = eod_exit_intent(bracket, datetime(2026, 1, 5, 9, 50, tzinfo=UTC))
    read = ExitRequest.from_json(json.dumps(body))
    assert (read.bracket_id, read.reason, read.ltp) == (bracket.id, ExitReason.EOD, None)
    assert read.stop_price == Decimal(1480)
    assert read.detected_at == "2026-01-05T09:50:00Z"
    assert read.retry_of is None


def test_a_retry_keeps_its_reason_and_names_the_failed_order() -> None:
    sent = ExitRequest("b1", ExitReason.EMERGENCY, None, Decimal("1480"), "2026-01-05T04:00:00Z", retry_of="O-9")
    assert json.loads(sent.to_json())["retry_of"] == "O-9"
    assert ExitRequest.from_json(sent.to_json()) == sent


def test_a_first_exit_without_retry_of_carries_no_such_key() -> None:
    sent = ExitRequest("b1", ExitReason.MANUAL, None, Decimal("1480"), "2026-01-05T04:00:00Z")
    assert "retry_of" not in json.loads(sent.to_json())


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"bracket_id": "b1", "reason": "STOP", "stop_price": "1480"}, "lacks 'ltp'"),
        ({"bracket_id": "b1", "reason": "ROLLBACK", "ltp": "1", "stop_price": "1480"}, "reason must be"),
        ({"bracket_id": "b1", "reason": "STOP", "ltp": "x", "stop_price": "1480"}, "invalid"),
        ([1, 2], "JSON object"),
    ],
)
def test_a_malformed_exit_is_refused_with_what_is_wrong(body: object, says: str) -> None:
    with pytest.raises(ValidationFailed, match=says):
        ExitRequest.from_json(json.dumps(body))


def test_the_stop_has_trailed_only_when_it_is_tighter_than_the_one_placed() -> None:
    assert not stop_has_trailed("LONG", 148000, 148000)
    assert stop_has_trailed("LONG", 148000, 148005)
    assert not stop_has_trailed("SHORT", Decimal("1520"), Decimal("1520"))
    assert stop_has_trailed("SHORT", Decimal("1520"), Decimal("1519.95"))
    long = _bracket()
    assert not long.stop_has_trailed
    assert dataclasses.replace(long, stop_price=Decimal("1485")).stop_has_trailed
    short = _bracket(Action.SELL, sl="1520", target="1460")
    assert not short.stop_has_trailed
    assert dataclasses.replace(short, stop_price=Decimal("1515")).stop_has_trailed


def test_the_protection_watch_is_what_the_streamer_trails() -> None:
    from bracketflow.services.protect import watch_request
    from streamer.control import Watch, parse_command

    bracket = _protected(_bracket(trail=TrailSpec(TrailType.PERCENT, Decimal("0.5"))), stop="1486.50", filled=7)
    wire = json.dumps(watch_request(bracket, 408065, Decimal("0.05")).to_dict())
    watch = parse_command(wire)
    assert isinstance(watch, Watch)
    watched = watch.bracket
    assert (watched.bracket_id, watched.instrument_token, watched.side, watched.product) == (
        bracket.id,
        408065,
        "LONG",
        "MIS",
    )
    # The streamer starts from the bracket's current (trailed) stop, with its trail and the fill it refers to
    assert (watched.stop_price, watched.tick_size, watched.entry_price) == (
        Decimal("1486.50"),
        Decimal("0.05"),
        Decimal("1500.05"),
    )
    assert watched.trail == {"type": "percent", "value": Decimal("0.5")}
    assert watched.activation_price == Decimal("1510")
    assert (watch.quantity, watch.gtt_id, watch.account_id, watch.exchange, watch.tradingsymbol) == (
        7,
        "G-7",
        "acct-1",
        "NSE",
        "INFY",
    )
    assert watch.original_stop == 148650


def test_a_watch_reads_back_as_sent() -> None:
    sent = WatchRequest(
        bracket_id="b1",
        instrument_token=408065,
        side=PositionSide.SHORT,
        product=Product.CNC,
        stop_price=Decimal("1520.00"),
        entry_price=Decimal("1500"),
        trail=TrailSpec(TrailType.POINTS, Decimal("10")),
        quantity=5,
        target_price=Decimal("1450"),
        breakeven_at=Decimal("1480.5"),
        breakeven_stop=Decimal("1499"),
    )
    wire = json.loads(sent.to_json())
    assert (wire["breakeven_at"], wire["breakeven_stop"]) == ("1480.5", "1499")
    assert (wire["type"], wire["side"], wire["stop_price"], wire["tick_size"]) == ("watch", "SHORT", "1520.00", "0.05")
    assert wire["trail"] == {"type": "points", "value": "10"}
    assert read_control_message(sent.to_json()) == sent
    assert WatchRequest.from_json(sent.to_json()) == sent


def test_the_unwatch_is_what_the_streamer_drops() -> None:
    from streamer.control import Unwatch, parse_command

    assert json.loads(UnwatchRequest("b1").to_json()) == {"type": "unwatch", "bracket_id": "b1"}
    assert parse_command(UnwatchRequest("b1").to_json()) == Unwatch("b1")
    assert UnwatchRequest.from_json('{"type":"unwatch","bracket_id":"b1"}') == UnwatchRequest("b1")


def test_a_watch_written_with_json_numbers_reads_them_as_the_decimals_written() -> None:
    body = {"type": "watch", "bracket_id": "b1", "instrument_token": 5, "side": "long", "product": "cnc"}
    read = read_control_message(json.dumps({**body, "stop_price": 1480.05, "tick_size": 0.05}))
    assert isinstance(read, WatchRequest)
    assert (read.stop_price, read.tick_size, read.side, read.product) == (
        Decimal("1480.05"),
        Decimal("0.05"),
        PositionSide.LONG,
        Product.CNC,
    )


_WATCH = {"type": "watch", "bracket_id": "b1", "instrument_token": 5, "side": "LONG", "product": "MIS"}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({**_WATCH}, "lacks 'stop_price'"),
        ({**_WATCH, "stop_price": "1480", "instrument_token": True}, "instrument_token must be a uint32"),
        ({**_WATCH, "stop_price": "1480", "instrument_token": 1 << 32}, "instrument_token must be a uint32"),
        ({**_WATCH, "stop_price": "1480", "side": "UP"}, "must be one of LONG, SHORT"),
        ({**_WATCH, "stop_price": "x"}, "invalid"),
        ({**_WATCH, "stop_price": "1480", "trail": {"type": "ratio", "value": "1"}}, "must be one of percent"),
        ({**_WATCH, "stop_price": "1480", "breakeven_at": "1520"}, "breakeven_at and breakeven_stop together"),
        ({"type": "watch"}, "lacks bracket_id"),
        ({"type": "pause", "bracket_id": "b1"}, "must be watch or unwatch"),
        ([1], "JSON object"),
    ],
)
def test_a_malformed_control_message_is_refused_with_what_is_wrong(body: object, says: str) -> None:
    with pytest.raises(ValidationFailed, match=says):
        read_control_message(json.dumps(body))


def test_a_watch_the_engine_cannot_trail_is_refused_before_the_tick_thread() -> None:
    from streamer.control import parse_command

    body = {**_WATCH, "stop_price": "1480", "trail": {"type": "percent", "value": "-1"}}
    with pytest.raises(ValidationFailed, match="bracket b1"):
        parse_command(json.dumps(body))


def test_the_streamers_stop_sync_is_what_sync_stop_reads() -> None:
    from streamer.stops import StopKeeper

    sent: list[dict[str, object]] = []
    keeper = StopKeeper(
        cast(BracketRepository, None), sent.append, step_percent=Decimal("0.1"), sync_interval_s=0, clock=lambda: 5.0
    )
    keeper.track("b1", is_long=True, broker_stop=148000)
    assert keeper.sync({"b1": 149005}, lambda _: 5) == ["b1"]
    read = StopSyncRequest.from_json(json.dumps(sent[0]))
    assert (read.bracket_id, read.stop_price) == ("b1", Decimal("1490.05"))
    assert read.at is not None
    assert datetime.strptime(read.at, "%Y-%m-%dT%H:%M:%S.%f%z").tzinfo == UTC


def test_a_stop_sync_reads_back_as_sent() -> None:
    sent = StopSyncRequest("b1", Decimal("1504.75"), wire_time(datetime(2026, 1, 5, 4, 0, tzinfo=UTC)))
    assert json.loads(sent.to_json()) == {
        "bracket_id": "b1",
        "stop_price": "1504.75",
        "at": "2026-01-05T04:00:00.000000Z",
    }
    assert StopSyncRequest.from_json(sent.to_json()) == sent


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"bracket_id": "b1"}, "lacks 'stop_price'"),
        ({"stop_price": "1490"}, "lacks 'bracket_id'"),
        ({"bracket_id": "b1", "stop_price": "0"}, "positive number"),
        ({"bracket_id": "b1", "stop_price": "NaN"}, "positive number"),
        ({"bracket_id": "b1", "stop_price": "x"}, "invalid"),
        ("1490", "JSON object"),
    ],
)
def test_a_malformed_stop_sync_is_refused_with_what_is_wrong(body: object, says: str) -> None:
    with pytest.raises(ValidationFailed, match=says):
        StopSyncRequest.from_json(json.dumps(body))


def test_the_streamers_order_update_is_what_the_watcher_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    from bracketflow.settings import Settings
    from streamer.main import Streamer

    streamer = Streamer(Settings(), repo=cast(BracketRepository, None), master=None)
    sent: list[dict[str, object]] = []
    monkeypatch.setattr(streamer.order_publisher, "put", sent.append)
    update = {"order_id": "O-1", "status": "COMPLETE", "average_price": 1500.05, "filled_quantity": 10}
    streamer.on_message(json.dumps({"type": "order", "data": update}).encode(), True)
    read = OrderEvent.from_json(json.dumps(sent[0]))
    # The broker's update verbatim (its numbers as the broker wrote them), marked as the ticker's
    assert read.order == update
    assert read.source == "ticker"
    assert read.received_at is not None
    assert read.received_at.endswith("Z")


def test_an_order_event_without_a_source_is_counted_as_the_queues() -> None:
    read = OrderEvent.from_json(json.dumps({"order": {"order_id": "O-1"}}))
    assert (read.source, read.received_at, read.order) == ("queue", None, {"order_id": "O-1"})
    assert OrderEvent.from_json(read.to_json()) == read


@pytest.mark.parametrize(
    ("body", "says"), [({"source": "ticker"}, "must carry the broker's order update"), ("x", "JSON object")]
)
def test_a_malformed_order_event_is_refused_with_what_is_wrong(body: object, says: str) -> None:
    with pytest.raises(ValidationFailed, match=says):
        OrderEvent.from_json(json.dumps(body))


def _batch_state_machine() -> dict[str, Any]:
    """statemachine/batch.asl.json with its template substitutions filled in (every ${Name} read as 1)."""
    text = (REPO / "statemachine/batch.asl.json").read_text(encoding="utf-8")
    return cast(dict[str, Any], json.loads(re.sub(r"\$\{\w+\}", "1", text)))


def _input_paths(node: object) -> set[str]:
    """The top-level fields of its input that a state reads ("$.legs" -> "legs"), not looking into its Map's steps."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "ItemProcessor":
                continue
            reads = key.endswith((".$", "Path")) or key == "Variable"
            if reads and isinstance(value, str) and value.startswith("$."):
                found.add(value[2:].split(".")[0].split("[")[0])
            else:
                found |= _input_paths(value)
    elif isinstance(node, list):
        for item in node:
            found |= _input_paths(item)
    return found


def test_the_batch_saga_reads_only_what_its_start_carries_and_each_leg_task_parses() -> None:
    from bracketflow.schemas.batch import LegTask

    start = BatchWorkflowInput.for_batch("bt_0001", "acct-1", True, 4)
    wire = json.loads(start.to_json())
    assert wire == {"batch_id": "bt_0001", "account_id": "acct-1", "rollback_on_failure": True, "legs": [1, 2, 3, 4]}
    assert BatchWorkflowInput.from_json(start.to_json()) == start
    machine = _batch_state_machine()
    states = machine["States"]
    # What the saga adds to its state as it goes (each task's ResultPath); everything else it reads is the start's
    added = {s["ResultPath"][2:] for s in states.values() if s.get("ResultPath", "").startswith("$.")}
    assert _input_paths(states) - added <= wire.keys()
    assert states[machine["StartAt"]]["ItemsPath"] == "$.legs"
    # Each leg's task, as the Map's ItemSelector builds it from the start, is what the leg Lambdas validate
    selector = states[machine["StartAt"]]["ItemSelector"]
    assert selector == {"batch_id.$": "$.batch_id", "leg.$": "$$.Map.Item.Value"}
    tasks = [LegTask.model_validate({"batch_id": wire["batch_id"], "leg": n}) for n in wire["legs"]]
    assert [(t.batch_id, t.leg) for t in tasks] == [("bt_0001", n) for n in (1, 2, 3, 4)]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"batch_id": "bt_1", "account_id": "a", "rollback_on_failure": True}, "lacks 'legs'"),
        ({"batch_id": "bt_1", "account_id": "a", "rollback_on_failure": 1, "legs": [1]}, "true or false"),
        ({"batch_id": "bt_1", "account_id": "a", "rollback_on_failure": True, "legs": ["1"]}, "leg numbers"),
    ],
)
def test_a_malformed_batch_start_is_refused_with_what_is_wrong(body: object, says: str) -> None:
    with pytest.raises(ValidationFailed, match=says):
        BatchWorkflowInput.from_json(json.dumps(body))


BATCH_START_KEYS = {"batch_id", "account_id", "rollback_on_failure", "legs"}
# What gives a hand-built message away: the keys of a dict literal, and the constant values of some of them.
MESSAGE_SHAPES: dict[str, Callable[[dict[str, object]], bool]] = {
    "ExitRequest": lambda d: {"bracket_id", "reason", "stop_price"} <= d.keys(),
    "WatchRequest or UnwatchRequest": lambda d: d.get("type") in {"watch", "unwatch"},
    "StopSyncRequest": lambda d: {"bracket_id", "stop_price", "at"} <= d.keys(),
    "OrderEvent": lambda d: "order" in d and ("source" in d or "received_at" in d),
    "BatchWorkflowInput": lambda d: {"batch_id", "rollback_on_failure", "legs"} <= d.keys() <= BATCH_START_KEYS,
}


def _dict_literals(path: Path) -> list[tuple[int, dict[str, object]]]:
    """Each dict literal's line and its string keys, each with its value when that is a constant (else None)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Dict):
            fields = {
                k.value: (v.value if isinstance(v, ast.Constant) else None)
                for k, v in zip(node.keys, node.values, strict=True)
                if isinstance(k, ast.Constant) and isinstance(k.value, str)
            }
            out.append((node.lineno, fields))
    return out


def _hand_built(path: Path, message: str) -> list[int]:
    """Lines of dict literals shaped like the message."""
    return [line for line, fields in _dict_literals(path) if MESSAGE_SHAPES[message](fields)]


@pytest.mark.parametrize("message", sorted(MESSAGE_SHAPES))
def test_no_message_is_built_outside_the_contracts_module(message: str) -> None:
    found = {}
    for tree in SOURCE_TREES:
        for path in sorted((REPO / tree).rglob("*.py")):
            if path.is_relative_to(CONTRACTS):
                continue
            lines = _hand_built(path, message)
            if lines:
                found[str(path.relative_to(REPO))] = lines
    assert found == {}, f"build these with bracketflow.contracts.{message}, not by hand: {found}"


@pytest.mark.parametrize(
    ("message", "source"),
    [
        ("ExitRequest", 'send({"bracket_id": b, "reason": "STOP", "ltp": "1", "stop_price": "2"})'),
        ("WatchRequest or UnwatchRequest", 'send_control({"type": "unwatch", "bracket_id": b})'),
        ("WatchRequest or UnwatchRequest", 'send_control({**base, "type": "watch", "stop_price": s})'),
        ("StopSyncRequest", 'put({"bracket_id": b, "stop_price": str(s), "at": iso(now)})'),
        ("OrderEvent", 'put({"source": "ticker", "received_at": iso(now), "order": m["data"]})'),
        ("BatchWorkflowInput", 'start(b, {"batch_id": b, "rollback_on_failure": r, "legs": list(range(1, n + 1))})'),
    ],
)
def test_the_check_sees_a_hand_built_message(tmp_path: Path, message: str, source: str) -> None:
    sample = tmp_path / "producer.py"
    sample.write_text(f"{source}\n", encoding="utf-8")
    assert _hand_built(sample, message) == [1]
