"""`make demo` on the local stack (issue 10's acceptance): the demo sends its TradingView-style alert, and while the
test moves the paper market by hand (fill at 1500, rise, fall through the trailed stop) it follows the bracket to
CLOSED; every line it printed is checked against the audit trail GET /api/v1/brackets/{id} returns — same order,
same event, same time, same price. Following an existing bracket by id prints the same lines.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import requests

from local.demo import EXIT_CLOSED, EXIT_TIMEOUT, EXIT_UNREACHABLE, DemoConfig, run
from local.stack import LocalStack, free_port
from tests.support.stack import get_bracket, quote, wait_for

BOUND_S = 90  # an upper bound for a slow machine, never a timing assertion

# What the test expects each audit event to print as, written out independently of the demo's code:
# the event type -> (the label, the event field holding the line's price, or a fixed word).
EXPECTED: dict[str, tuple[str, str]] = {
    "BracketRegistered": ("alert accepted", "entry_price"),
    "EntryPlaced": ("entry placed", "=MARKET"),  # a LIMIT entry shows its limit price instead (below)
    "EntryFilled": ("entry filled", "average_price"),
    "ProtectionPlaced": ("GTT placed", "stop_price"),
    "StopTrailed": ("stop moved", "new_stop"),
    "BrokerStopMoved": ("GTT stop moved", "new_stop"),
    "ExitRequested": ("exit triggered", "ltp"),
    "ExitPlaced": ("exit placed", "=MARKET"),
    "ExitFilled": ("exit filled", "average_price"),
    "BracketClosed": ("closed", "exit_price"),
    # when the GTT's own stop leg fires first, the exit is the broker's, found by the watcher or reconciliation
    "Reconciled": ("reconciled", "=-"),
    "ExitSkipped": ("exit skipped", "=-"),
    "CancelRequested": ("cancel requested", "=-"),
    "EntryCancelled": ("entry cancelled", "=-"),
}
LINE = re.compile(r"^(?P<time>\d\d:\d\d:\d\d\.\d{3})  (?P<label>.{18})  (?P<price>[ \S]{10})(?:  (?P<detail>.*))?$")


@pytest.fixture
def demo_config(local_stack: LocalStack, dev_api_key: str) -> DemoConfig:
    return DemoConfig(
        api_url=local_stack.api_url,
        api_key=dev_api_key,
        paper_url=str(local_stack.paper_url),
        ws_url=local_stack.websocket_url,
    )


class Printed:
    """The demo's output, captured line by line while it runs in a thread."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, text: str) -> None:
        with self._lock:
            self.lines.extend(text.split("\n"))

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)


def event_lines(printed: list[str]) -> list[str]:
    """The lines between the column header and the summary's first rule."""
    start = next(i for i, line in enumerate(printed) if line.startswith("time "))
    end = next(i for i in range(start + 1, len(printed)) if printed[i].startswith("─"))
    return printed[start + 1 : end]


def local_clock(iso: str) -> str:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S.%f")[:-3]


def assert_lines_match_the_audit_trail(lines: list[str], bracket: dict[str, Any]) -> None:
    events = bracket["events"]
    assert len(lines) == len(events), "one line per audit event:\n" + "\n".join(lines)
    for line, event in zip(lines, events, strict=True):
        parsed = LINE.match(line)
        assert parsed, f"line not in the time/event/price/detail layout: {line!r}"
        label, source = EXPECTED[event["type"]]
        if event["type"] == "EntryPlaced" and bracket["entry"]["price_type"] == "LIMIT":
            source = "=" + f"{Decimal(bracket['entry']['price']):.2f}"
        assert parsed["time"] == local_clock(event["at"]), (line, event)
        assert parsed["label"].strip() == label, (line, event)
        price = parsed["price"].strip()
        if source.startswith("="):
            assert price == source[1:], (line, event)
        else:
            assert Decimal(price) == Decimal(str(event[source])), (line, event)


def test_the_demo_follows_its_alert_to_closed_and_prints_exactly_the_audit_trail(manual_market, demo_config):
    stack = manual_market
    printed = Printed()
    outcome: dict[str, int] = {}

    # Given the demo running against the stack (it reads INFY's price, 1500, and sends its alert)
    demo = threading.Thread(
        target=lambda: outcome.setdefault("code", run(demo_config, None, out=printed, timeout_s=BOUND_S, poll_s=0.1)),
        daemon=True,
    )
    demo.start()
    following = wait_for(
        "the demo to say which bracket it follows",
        lambda: next((line for line in printed.snapshot() if line.startswith("following ")), None),
        timeout_s=BOUND_S,
    )
    bracket_id = following.split()[1]
    key = demo_config.api_key
    # When the entry fills at 1500 and the GTT protects it (stop 0.25% under: 1496.25, target 0.5% over: 1507.50)
    protected = wait_for(
        "PROTECTED",
        lambda: (b := get_bracket(stack, key, bracket_id))["status"] == "PROTECTED" and b,
        timeout_s=BOUND_S,
    )
    assert (Decimal(protected["sl_price"]), Decimal(protected["target_price"])) == (
        Decimal("1496.25"),
        Decimal("1507.50"),
    )
    # and the price rises: the 0.1% trail under the bid 1503.95 is 1502.44, on the tick 1502.40
    quote(stack, "1504", "1503.95", "1504")
    wait_for(
        "the trailed stop 1502.40 recorded",
        lambda: Decimal(str(get_bracket(stack, key, bracket_id)["stop_price"])) == Decimal("1502.40"),
        timeout_s=BOUND_S,
    )
    # and then falls through the trailed stop
    quote(stack, "1502", "1501.95", "1502")
    demo.join(BOUND_S + 30)

    print("\n".join(printed.snapshot()))  # what a trader would have seen (shown when the test fails)

    # Then the demo saw the bracket CLOSED and says so with exit code 0
    assert not demo.is_alive()
    assert outcome["code"] == EXIT_CLOSED, "\n".join(printed.snapshot())
    final = get_bracket(stack, key, bracket_id)
    assert final["status"] == "CLOSED"
    # and every line it printed is the audit trail's event, in order, with its time and price
    lines = event_lines(printed.snapshot())
    assert_lines_match_the_audit_trail(lines, final)
    types = [e["type"] for e in final["events"]]
    assert types[:4] == ["BracketRegistered", "EntryPlaced", "EntryFilled", "ProtectionPlaced"]
    assert "StopTrailed" in types and types[-1] == "BracketClosed"
    # and the summary names the outcome, the P&L and every event of the trail
    text = "\n".join(printed.snapshot())
    closed = final["events"][-1]
    assert f"{final['bracket_id']}  CLOSED ({closed['reason']})" in text
    assert f"P&L         {Decimal(closed['pnl']):+.2f}" in text
    assert f"audit trail: {len(types)} events" in text
    # the long-run fold only applies past three stop moves in a row; this trail has fewer
    for number, event_type in enumerate(types, start=1):
        assert re.search(rf"^\s+{number}  \S+  {event_type}\b", text, re.MULTILINE), (number, event_type)

    # When the same bracket is followed again by its id (make demo BRACKET=<id>)
    again = Printed()
    code = run(demo_config, bracket_id, out=again, timeout_s=10, poll_s=0.1)
    # Then it prints the same event lines and ends the same way
    assert code == EXIT_CLOSED
    assert event_lines(again.snapshot()) == lines


def test_following_a_bracket_that_stays_open_gives_up_at_the_timeout_with_exit_code_2(manual_market, demo_config):
    stack = manual_market
    # Given a LIMIT entry far under the market: it rests at the broker, unfilled
    placed = requests.post(
        f"{stack.api_url}/api/v1/placebracketorder",
        json={
            "symbol": "INFY",
            "exchange": "NSE",
            "product": "MIS",
            "action": "BUY",
            "quantity": 1,
            "entry_price": "1400",
            "sl_price": "1390",
            "target_price": "1410",
            "strategy": "demo-timeout",
        },
        headers={"X-API-KEY": demo_config.api_key},
        timeout=30,
    )
    assert placed.status_code == 200, placed.text
    bracket_id = placed.json()["bracket_id"]
    try:
        wait_for(
            "pending",
            lambda: get_bracket(stack, demo_config.api_key, bracket_id)["status"] == "ENTRY_PENDING",
            timeout_s=BOUND_S,
        )
        printed = Printed()
        # When the demo follows it for a second
        code = run(demo_config, bracket_id, out=printed, timeout_s=1, poll_s=0.1)
        # Then it stops with exit code 2, saying the bracket carries on and how to follow it again
        assert code == EXIT_TIMEOUT
        assert f"`make demo BRACKET={bracket_id}` follows it again" in printed.snapshot()[-1]
        assert "still ENTRY_PENDING" in printed.snapshot()[-1]
        # and what it printed so far is still exactly the trail so far
        shown = event_lines(printed.snapshot())
        trail = get_bracket(stack, demo_config.api_key, bracket_id)
        trail["events"] = trail["events"][: len(shown)]
        assert_lines_match_the_audit_trail(shown, trail)
    finally:
        requests.delete(
            f"{stack.api_url}/api/v1/brackets/{bracket_id}", headers={"X-API-KEY": demo_config.api_key}, timeout=30
        )


def test_an_unknown_bracket_or_a_stack_that_is_not_up_is_a_clear_message_and_exit_code_3(demo_config):
    # Given a bracket id nobody has
    printed = Printed()
    # When the demo follows it
    code = run(demo_config, "br_01NOSUCHBRACKET0000000000", out=printed, timeout_s=5)
    # Then it says the API answered 404 and exits 3
    assert code == EXIT_UNREACHABLE
    assert "answered 404" in printed.snapshot()[-1]

    # Given nothing listening where the demo looks for the stack
    nobody = f"http://127.0.0.1:{free_port()}"
    offline = DemoConfig(api_url=nobody, api_key="local-dev-key", paper_url=nobody, ws_url=None)
    printed = Printed()
    # When the demo tries to send its alert
    code = run(offline, None, out=printed, timeout_s=5)
    # Then it asks whether `make run` is up, and exits 3
    assert code == EXIT_UNREACHABLE
    assert "is `make run` up?" in printed.snapshot()[-1]
