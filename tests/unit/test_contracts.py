"""The wire contracts: what each producer sends is what its consumer reads, and no exit message is built by hand."""

from __future__ import annotations

import ast
import dataclasses
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from bracketflow.contracts import ExitRequest
from bracketflow.domain.bracket import Bracket, BracketSpec
from bracketflow.domain.enums import Action, Exchange, ExitReason, PriceType, Product
from bracketflow.domain.ids import AccountId
from bracketflow.domain.trailing import stop_has_trailed
from bracketflow.errors import ValidationFailed

REPO = Path(__file__).resolve().parents[2]
SOURCE_TREES = ["layers/common/bracketflow", "streamer/streamer", "functions", "local", "paper"]
CONTRACTS = REPO / "layers/common/bracketflow/contracts"


def _bracket(action: Action = Action.BUY, sl: str = "1480", target: str = "1540") -> Bracket:
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
    )
    return Bracket.register(spec)


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


def _hand_built_exits(path: Path) -> list[int]:
    """Lines of dict literals that carry an exit message's keys (bracket_id, reason and stop_price)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
            if {"bracket_id", "reason", "stop_price"} <= keys:
                lines.append(node.lineno)
    return lines


def test_no_exit_message_is_built_outside_the_contracts_module() -> None:
    found = {}
    for tree in SOURCE_TREES:
        for path in sorted((REPO / tree).rglob("*.py")):
            if path.is_relative_to(CONTRACTS):
                continue
            lines = _hand_built_exits(path)
            if lines:
                found[str(path.relative_to(REPO))] = lines
    assert found == {}, f"build exit messages with bracketflow.contracts.ExitRequest, not by hand: {found}"


def test_the_check_sees_a_hand_built_exit(tmp_path: Path) -> None:
    sample = tmp_path / "producer.py"
    sample.write_text('send({"bracket_id": b, "reason": "STOP", "ltp": "1", "stop_price": "2"})\n', encoding="utf-8")
    assert _hand_built_exits(sample) == [1]
