"""Every bracket event type the code writes is registered in domain/events.py and round-trips through event_from_dict.

Services write some audit events as plain mappings ({"type": "WorkflowStartFailed", ...}) rather than event classes;
a type missing from the registry would make the trail unreadable as domain events. So this test reads the source
(AST, no imports of the code under scan): every dict literal whose "type" is a CamelCase event name, and every
module constant named *_EVENT holding one, across the shared package, the functions and the streamer.
"""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from bracketflow.domain.events import EVENT_TYPES, BracketEvent, event_from_dict

ROOT = Path(__file__).resolve().parents[2]
SCANNED = [ROOT / "layers/common/bracketflow", ROOT / "functions", ROOT / "streamer/streamer"]
# Event names are CamelCase words (WorkflowFailed); wire "type"s are lower case (watch, order) or CAPS (ORDER).
EVENT_NAME = re.compile(r"^[A-Z][a-z]+(?:[A-Z][a-z]*)+$")
# Dict "type"s that are not bracket events (none today; a new one goes here with the reason).
NOT_BRACKET_EVENTS: dict[str, str] = {}


def _constants(tree: ast.Module) -> dict[str, str]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.value
    return out


def written_event_types() -> dict[str, set[str]]:
    """Event type name -> the files that write it as a mapping (or name it as an *_EVENT constant)."""
    found: dict[str, set[str]] = {}
    for base in SCANNED:
        for path in sorted(base.rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            constants = _constants(tree)
            names = [v for k, v in constants.items() if k.endswith("_EVENT")]
            for node in ast.walk(tree):
                if not isinstance(node, ast.Dict):
                    continue
                for key, value in zip(node.keys, node.values, strict=True):
                    if not (isinstance(key, ast.Constant) and key.value == "type"):
                        continue
                    if isinstance(value, ast.Constant) and isinstance(value.value, str):
                        names.append(value.value)
                    elif isinstance(value, ast.Name) and value.id in constants:
                        names.append(constants[value.id])
            for name in names:
                if EVENT_NAME.match(name) and name not in NOT_BRACKET_EVENTS:
                    found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_the_scan_finds_the_events_services_write_as_mappings():
    # Given the source tree
    # When it is scanned for event types written as plain mappings
    found = written_event_types()
    # Then it sees the ones we know are written that way (so the scan itself works)
    assert {"WorkflowStartFailed", "WorkflowFailed", "CancelRequested", "ExitSkipped", "BrokerStopMoved"} <= set(found)
    assert "layers/common/bracketflow/services/register_bracket.py" in found["WorkflowStartFailed"]


def test_every_event_type_written_anywhere_is_registered():
    # Given every event type the code writes
    found = written_event_types()
    # Then each is a registered event class
    missing = {name: sorted(files) for name, files in found.items() if name not in EVENT_TYPES}
    assert missing == {}, f"register these in bracketflow/domain/events.py: {missing}"


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_every_registered_event_round_trips_through_event_from_dict(name):
    # Given an event of this type with money, a time and nested data
    cls: type[BracketEvent] = EVENT_TYPES[name]
    original = cls(
        bracket_id="br_1",
        data={"price": Decimal("1480.05"), "by": "user", "nested": {"ids": ["1", "2"]}},
        at=datetime(2026, 1, 5, 4, 0, tzinfo=UTC),
        bracket_version=3,
    )
    # When it is written out and read back
    again = event_from_dict(original.to_dict())
    # Then it is the same event, of the same type
    assert type(again) is cls and again.type == name
    assert again == original
    assert again.data["price"] == "1480.05"  # money stays an exact decimal string


def test_an_unknown_event_type_is_refused_by_name():
    # Given a stored event whose type nobody registered
    data = {"type": "SomethingNew", "bracket_id": "b", "at": "2026-01-05T04:00:00+00:00", "event_id": "e1"}
    # Then reading it fails naming the type
    with pytest.raises(ValueError, match="SomethingNew"):
        event_from_dict(data)
