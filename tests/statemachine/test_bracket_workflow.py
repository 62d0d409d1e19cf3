"""The bracket workflow (statemachine/bracket.asl.json) run for real: moto's Step Functions interpreter, our task
Lambdas and the watcher in-process, the paper exchange (manual market) as the broker, all through the local stack.

Brackets are placed through the REST API (intake starts the execution named by the bracket id). Order updates reach
the watcher through OrderEventsQueue in the streamer's agreed format: the relay in tests/support/stack.py reads the
paper ticker's order updates and enqueues them, standing in for the streamer's publisher so these tests do not depend
on its process.

What must hold (issue 5): a filled entry ends PROTECTED with a GTT whose triggers are the bracket's stop and target;
a rejected entry is FAILED with the broker's reason; an unfilled entry is CANCELLED at its timeout; a partial fill is
protected for what filled at once, and the rest of its entry cancelled at the timeout; a GTT that cannot be placed
leads to an emergency market exit, the bracket CLOSED with exit_reason EMERGENCY, its events and the EmergencyExits
metric; a second start changes nothing; every version of the bracket has its audit event.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bracketflow.domain.ids import order_tag
from local.stack import LocalStack
from tests.support.stack import (
    BRACKET_STACK_ENV,
    assert_every_version_audited,
    bracket,
    broker_orders,
    event_types,
    events,
    gtts,
    market_fixture,
    net_position,
    paper,
    place,
    quote,
    stack_fixture,
    wait_for,
    wait_for_execution_end,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "bracket-workflow-key"
ENTRY_TIMEOUT_S = 4

# The whole stack on free ports; entries time out after a few seconds and broker retries are short.
stack = stack_fixture(API_KEY, relay=True, extra_env={**BRACKET_STACK_ENV, "ENTRY_TIMEOUT_S": str(ENTRY_TIMEOUT_S)})


market = market_fixture(sbin=True, set_aside=False)


def control_messages(stack: LocalStack) -> list[dict[str, Any]]:
    sqs = stack.client("sqs")
    url = stack.queue_url("StreamerControlQueue")
    out: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages") or []
        if not got:
            return out
        out += [json.loads(m["Body"]) for m in got]
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
        )


# ---------- the happy path ----------


def test_a_filled_entry_ends_protected_by_a_gtt_at_the_bracket_levels(market):
    # Given INFY offered at 1500.00
    control_messages(market)  # start from an empty control queue
    # When a BUY 10 at 1500, stop 1480, target 1550 is placed
    bracket_id = place(market, "happy")
    # Then the entry fills and the bracket ends PROTECTED
    bracket = wait_for_status(bracket_id, "PROTECTED")
    assert bracket.entry.filled_quantity == 10
    assert bracket.entry.average_price == Decimal("1500")
    # And the paper exchange holds a two-leg GTT with the bracket's stop and target as its triggers
    gtt = next(g for g in gtts(market) if str(g["id"]) == bracket.gtt_id)
    assert [Decimal(str(v)) for v in gtt["condition"]["trigger_values"]] == [Decimal("1480"), Decimal("1550")]
    assert [o["order_type"] for o in gtt["orders"]] == ["LIMIT", "LIMIT"]
    assert [o["transaction_type"] for o in gtt["orders"]] == ["SELL", "SELL"]
    assert [int(o["quantity"]) for o in gtt["orders"]] == [10, 10]
    # the stop child's limit sits beyond its trigger (0.5 %, on the tick), the target child's at the target
    assert Decimal(str(gtt["orders"][0]["price"])) == Decimal("1472.60")
    assert Decimal(str(gtt["orders"][1]["price"])) == Decimal("1550")
    # And the audit trail tells the story in order, one event per version
    assert event_types(bracket_id) == ["BracketRegistered", "EntryPlaced", "EntryFilled", "ProtectionPlaced"]
    assert_every_version_audited(bracket_id)
    # And the streamer was told to watch it, in the agreed format
    watch = wait_for(
        "the watch message", lambda: [m for m in control_messages(market) if m["bracket_id"] == bracket_id]
    )
    assert watch[0]["type"] == "watch"
    assert watch[0]["instrument_token"] == 408065
    assert (watch[0]["side"], watch[0]["quantity"], watch[0]["gtt_id"]) == ("LONG", 10, bracket.gtt_id)
    assert (watch[0]["stop_price"], watch[0]["target_price"], watch[0]["tick_size"]) == ("1480", "1550", "0.05")


def test_a_second_start_of_the_same_bracket_changes_nothing(market):
    # Given a bracket that reached PROTECTED
    bracket_id = place(market, "again")
    before = wait_for_status(bracket_id, "PROTECTED")
    # When its workflow is started again under the same name, and its PlaceEntry step runs again
    sfn = market.client("stepfunctions")
    arn = market.state_machine_arn("BracketStateMachine")
    payload = json.dumps({"bracket_id": bracket_id, "account_id": before.account_id})
    try:
        sfn.start_execution(stateMachineArn=arn, name=bracket_id, input=payload)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ExecutionAlreadyExists"
    assert market.runtime is not None
    again = market.runtime.invoke("PlaceEntryFunction", {"bracket_id": bracket_id})
    # Then no second entry order exists, and the bracket and its trail are unchanged
    assert again["outcome"] == "DONE"
    entries = [o for o in broker_orders(market, "INFY") if o["tag"] == order_tag(bracket_id, "ENTRY")]
    assert [o["order_id"] for o in entries] == [before.entry.broker_order_id]
    after = bracket(bracket_id)
    assert (after.version, after.status, after.gtt_id) == (before.version, before.status, before.gtt_id)
    assert event_types(bracket_id) == ["BracketRegistered", "EntryPlaced", "EntryFilled", "ProtectionPlaced"]
    sfn_list = sfn.list_executions(stateMachineArn=arn)["executions"]
    assert [e["name"] for e in sfn_list].count(bracket_id) == 1


# ---------- entries that do not fill ----------


def test_a_rejected_entry_is_failed_with_the_brokers_reason(market):
    # Given the broker rejects the next SBIN order for lack of margin
    reason = "Insufficient funds. Required margin is 8000.00"
    rule = {"kind": "reject", "match": {"tradingsymbol": "SBIN"}, "message": reason}
    paper(market, "faults", {"rules": [rule]})
    # When a SBIN bracket is placed
    bracket_id = place(market, "rejected", symbol="SBIN", entry_price="800", sl_price="790", target_price="820")
    # Then it ends FAILED with the broker's reason on its entry leg and in its EntryRejected event
    bracket = wait_for_status(bracket_id, "FAILED")
    assert bracket.entry.message == "Insufficient funds. Required margin is 8000.00"
    rejected = [e for e in events(bracket_id) if e["type"] == "EntryRejected"]
    assert rejected and rejected[0]["message"] == "Insufficient funds. Required margin is 8000.00"
    assert wait_for_execution_end(market, bracket_id)["status"] == "SUCCEEDED"
    assert gtts(market) == []
    assert_every_version_audited(bracket_id)


def test_an_entry_unfilled_by_its_timeout_is_cancelled(market):
    # Given INFY offered at 1500.00, a BUY limit at 1490 that cannot fill
    bracket_id = place(market, "unfilled", entry_price="1490", sl_price="1470", target_price="1530")
    # When its entry timeout passes
    bracket = wait_for_status(bracket_id, "CANCELLED")
    # Then the order was cancelled at the broker and nothing was protected
    order = next(o for o in broker_orders(market, "INFY") if o["order_id"] == bracket.entry.broker_order_id)
    assert order["status"] == "CANCELLED"
    assert bracket.entry.filled_quantity == 0
    assert "EntryCancelled" in event_types(bracket_id)
    assert "ProtectionPlaced" not in event_types(bracket_id)
    assert wait_for_execution_end(market, bracket_id)["status"] == "SUCCEEDED"
    assert_every_version_audited(bracket_id)


def test_a_partial_fill_is_protected_at_once_and_its_rest_cancelled_when_its_validity_runs_out(market):
    # Given only 4 INFY offered at 1500.00, and the exchange filling what is offered
    paper(market, "config", {"partial_fills": True})
    quote(market, "1500", "1499.95", "1500", ask_qty=4, bid_qty=100)
    # When a BUY 10 at 1500 is placed: 4 fill, 6 rest
    bracket_id = place(market, "partial")
    # Then the 4 are protected while the rest still rests
    protected = wait_for_status(bracket_id, "PROTECTED")
    assert protected.entry.filled_quantity == 4
    # And when the entry's timeout passes the rest is cancelled, the GTT still protecting the 4 that filled
    wait_for("the rest cancelled", lambda: bracket(bracket_id).entry.status.value == "EXECUTED")
    done = bracket(bracket_id)
    assert (done.status.value, done.entry.filled_quantity, done.gtt_id) == ("PROTECTED", 4, protected.gtt_id)
    order = next(o for o in broker_orders(market, "INFY") if o["order_id"] == done.entry.broker_order_id)
    assert (order["status"], int(order["filled_quantity"])) == ("CANCELLED", 4)
    gtt = next(g for g in gtts(market) if str(g["id"]) == done.gtt_id)
    assert [int(o["quantity"]) for o in gtt["orders"]] == [4, 4]
    filled = next(e for e in events(bracket_id) if e["type"] == "EntryFilled")
    assert (filled["filled_quantity"], filled["partial"], filled["pending_quantity"]) == (4, True, 6)
    rest = next(e for e in events(bracket_id) if e["type"] == "EntryRestCancelled")
    assert (rest["filled_quantity"], rest["cancelled_quantity"], rest["by"]) == (4, 6, "timeout")
    assert_every_version_audited(bracket_id)


# ---------- protection that cannot be placed ----------


def test_a_gtt_failing_on_every_retry_flattens_the_position(market, capfd):
    # Given the broker answers every GTT placement with a 500
    rule = {"kind": "http_500", "match": {"path": "/gtt/triggers", "method": "POST"}, "count": 100}
    paper(market, "faults", {"rules": [rule]})
    # When a BUY 10 INFY bracket fills
    bracket_id = place(market, "emergency")
    # Then the position is flattened at market and the bracket closes with exit_reason EMERGENCY
    bracket = wait_for_status(bracket_id, "CLOSED", timeout_s=60)
    assert bracket.exit_reason.value == "EMERGENCY"
    assert bracket.exit is not None and bracket.exit.filled_quantity == 10
    exit_order = next(o for o in broker_orders(market, "INFY") if o["order_id"] == bracket.exit.broker_order_id)
    assert (exit_order["order_type"], exit_order["transaction_type"], exit_order["status"]) == (
        "MARKET",
        "SELL",
        "COMPLETE",
    )
    assert Decimal(str(exit_order["market_protection"])) > 0
    assert net_position(market, "INFY") == 0
    assert gtts(market) == []
    # And the trail records why, and the bracket's P&L (sold at the 1499.95 bid, bought at 1500)
    types = event_types(bracket_id)
    for expected in ("ProtectionFailed", "EmergencyExitPlaced", "ExitFilled", "BracketClosed"):
        assert expected in types
    closed = next(e for e in events(bracket_id) if e["type"] == "BracketClosed")
    assert (closed["reason"], Decimal(closed["pnl"])) == ("EMERGENCY", Decimal("-0.50"))
    assert_every_version_audited(bracket_id)
    # And the EmergencyExits metric was emitted
    emitted = capfd.readouterr().out
    assert '"EmergencyExits"' in emitted
    assert wait_for_execution_end(market, bracket_id)["status"] == "SUCCEEDED"
