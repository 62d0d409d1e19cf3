"""Lifecycle acceptance gaps, on the local stack (moto's Step Functions, our Lambdas in-process, the paper exchange
with a manual market as the broker), order updates relayed from the paper ticker to OrderEventsQueue as the
streamer would:

(a) a second start of a bracket while its first execution waits for the entry fill changes nothing;
(b) a bracket that goes all the way to CLOSED has, for every status change, its audit event — and the right one;
(c) a GTT child order filling at the exchange is matched by the watcher to its bracket, which ends CLOSED (TARGET).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError

from bracketflow.domain.ids import order_tag
from local.stack import LocalStack
from tests.support.stack import (
    bracket,
    broker_orders,
    events,
    fresh_strategy,
    market_fixture,
    place,
    protected_bracket,
    quote,
    stack_fixture,
    token_stored,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "lifecycle-gaps-key"
# How long a bracket may take to reach a status: a bound, not a speed claim (a busy 2-core machine runs several
# stacks at once).
STATUS_BOUND_S = 90

# What each status change MEANS, from the domain (docs/state-machines.md, the event names), written here, not read
# from the code: the audit event(s) that may be recorded with the version that made the change.
EXPECTED_EVENTS = {
    (None, "CREATED"): {"BracketRegistered"},  # the request was accepted
    ("CREATED", "ENTRY_PENDING"): {"EntryPlaced"},  # the entry order is at the broker
    ("ENTRY_PENDING", "ENTRY_FILLED"): {"EntryFilled"},  # the broker filled it
    ("ENTRY_FILLED", "PROTECTED"): {"ProtectionPlaced"},  # the GTT OCO is live
    # an exit is under way: we claimed one (a stop seen by the streamer, EOD, the trader's DELETE) — or the broker's
    # GTT child already filled it and the bracket waits only for Finalize's P&L
    ("PROTECTED", "EXITING"): {"ExitRequested", "ExitFilled"},
    ("EXITING", "CLOSED"): {"BracketClosed"},  # the exit filled; P&L booked
    ("PROTECTED", "CLOSED"): {"BracketClosed"},  # the GTT's stop or target filled at the broker
}


# no reconcile runs (the stack has no schedules): whatever closes a bracket here is the watcher
stack = stack_fixture(API_KEY, relay=True)


market = market_fixture()


def status_changes(stack: LocalStack, bracket_id: str) -> list[tuple[str | None, str, int]]:
    """Every write of the bracket's STATE item that changed its status, from the table's own stream (not from our
    code's idea of it): (old status, new status, new version), in order."""
    streams = stack.client("dynamodbstreams")
    table = stack.client("dynamodb").describe_table(TableName=stack.table_name("BracketsTable"))["Table"]
    out: list[tuple[str | None, str, int]] = []
    for shard in streams.describe_stream(StreamArn=table["LatestStreamArn"])["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=table["LatestStreamArn"], ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            for record in page["Records"]:
                change = record["dynamodb"]
                keys = change["Keys"]
                if keys["pk"]["S"] != f"BRACKET#{bracket_id}" or keys["sk"]["S"] != "STATE" or "NewImage" not in change:
                    continue
                old = change.get("OldImage", {}).get("status", {}).get("S")
                new = change["NewImage"]["status"]["S"]
                if old != new:
                    out.append((old, new, int(change["NewImage"]["version"]["N"])))
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    return out


# ---------- (a) a second start while the first waits for the entry fill ----------


def test_a_second_start_while_the_entry_waits_for_its_fill_changes_nothing(market):
    # Given a bracket whose entry rests below the market, its execution waiting on the fill
    bracket_id = place(
        market, fresh_strategy("again-waiting"), entry_price="1490", sl_price="1470", target_price="1540"
    )
    before = wait_for_status(bracket_id, "ENTRY_PENDING", timeout_s=STATUS_BOUND_S)
    wait_for("the entry wait's token", lambda: token_stored(bracket_id, "entry_task_token"))
    trail_before = events(bracket_id)
    # When the workflow is started again for it (same name, same input), and its PlaceEntry step runs again
    sfn = market.client("stepfunctions")
    arn = market.state_machine_arn("BracketStateMachine")
    payload = json.dumps({"bracket_id": bracket_id, "account_id": before.account_id})
    try:
        sfn.start_execution(stateMachineArn=arn, name=bracket_id, input=payload)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ExecutionAlreadyExists"
    assert market.runtime is not None
    again = market.runtime.invoke("PlaceEntryFunction", {"bracket_id": bracket_id})
    # Then PlaceEntry reports the entry already at the broker, with the first order's id
    assert again["outcome"] == "PLACED" and again["broker_order_id"] == before.entry.broker_order_id
    # And there is still exactly one entry order at the paper exchange, and one execution of that name
    entries = [o for o in broker_orders(market) if o["tag"] == order_tag(bracket_id, "ENTRY")]
    assert [o["order_id"] for o in entries] == [before.entry.broker_order_id]
    assert [e["name"] for e in sfn.list_executions(stateMachineArn=arn)["executions"]].count(bracket_id) == 1
    # And the bracket and its audit trail are exactly as they were
    after = bracket(bracket_id)
    assert (after.version, after.status, after.entry) == (before.version, before.status, before.entry)
    assert events(bracket_id) == trail_before
    # And the first execution still owns the wait: the fill it was waiting for protects the position
    quote(market, "1490", "1489.95", "1490")
    done = wait_for_status(bracket_id, "PROTECTED", timeout_s=STATUS_BOUND_S)
    assert done.entry.filled_quantity == 10
    assert [e["type"] for e in events(bracket_id)].count("EntryPlaced") == 1


# ---------- (b) every status change has the right audit event ----------


def assert_every_status_change_has_its_event(stack: LocalStack, bracket_id: str) -> list[str]:
    by_version = {e["version"]: e["type"] for e in events(bracket_id)}
    changes = status_changes(stack, bracket_id)
    assert changes, "the table's stream showed no status change"
    for old, new, version in changes:
        assert (old, new) in EXPECTED_EVENTS, f"unexpected status change {old} -> {new}"
        assert by_version.get(version) in EXPECTED_EVENTS[(old, new)], (
            f"{old} -> {new} (version {version}) was audited as {by_version.get(version)!r}, "
            f"expected one of {sorted(EXPECTED_EVENTS[(old, new)])}"
        )
    # and no version of the bracket went unaudited
    assert set(by_version) == set(range(1, bracket(bracket_id).version + 1))
    return [new for _, new, _ in changes]


def event_at_change(stack: LocalStack, bracket_id: str, old: str, new: str) -> str:
    version = next(v for o, n, v in status_changes(stack, bracket_id) if (o, n) == (old, new))
    return next(e["type"] for e in events(bracket_id) if e["version"] == version)


def test_a_stop_exit_to_closed_audits_every_status_change_with_the_right_event(market):
    # Given a protected bracket
    b = protected_bracket(market, fresh_strategy("audited-stop"), timeout_s=STATUS_BOUND_S)
    # When the streamer reports its stop crossed (an exit intent on the ExitQueue) and the exit fills
    market.client("sqs").send_message(
        QueueUrl=market.queue_url("ExitQueue"),
        MessageBody=json.dumps(
            {
                "bracket_id": b.id,
                "reason": "STOP",
                "ltp": "1479.95",
                "stop_price": "1480",
                "detected_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "message_index": 0,
                "packet_index": 0,
            }
        ),
    )
    done = wait_for_status(b.id, "CLOSED", timeout_s=STATUS_BOUND_S)
    assert done.exit_reason.value == "STOP"
    # Then the walk was CREATED .. PROTECTED -> EXITING -> CLOSED, each step audited by the event that means it
    walk = assert_every_status_change_has_its_event(market, b.id)
    assert walk == ["CREATED", "ENTRY_PENDING", "ENTRY_FILLED", "PROTECTED", "EXITING", "CLOSED"]
    assert event_at_change(market, b.id, "PROTECTED", "EXITING") == "ExitRequested"  # our claim, not a fill


# ---------- (c) a GTT child order filling closes the bracket through the watcher ----------


def test_a_gtt_child_filling_at_the_target_is_matched_by_the_watcher_and_closes_the_bracket(market):
    # Given a protected BUY 10 INFY, stop 1480, target 1550
    b = protected_bracket(market, fresh_strategy("gtt-target"), timeout_s=STATUS_BOUND_S)
    # When the market trades through the target: the GTT fires and its target child order fills at the exchange
    quote(market, "1551", "1550.95", "1551")
    # Then the watcher, fed only the child order's update, matches it to the bracket: CLOSED with reason TARGET
    done = wait_for_status(b.id, "CLOSED", timeout_s=STATUS_BOUND_S)
    assert done.exit_reason.value == "TARGET"
    child = next(o for o in broker_orders(market) if o["order_id"] == done.exit.broker_order_id)
    assert (child["transaction_type"], child["status"], int(child["filled_quantity"])) == ("SELL", "COMPLETE", 10)
    assert done.exit.filled_quantity == 10 and done.exit.average_price >= 1550
    # And it was the order update that did it (no reconcile ran in this stack), with P&L for 10 shares from 1500
    types = [e["type"] for e in events(b.id)]
    assert "Reconciled" not in types and "ExitFilled" in types
    closed = next(e for e in events(b.id) if e["type"] == "BracketClosed")
    assert closed["reason"] == "TARGET" and float(closed["pnl"]) >= 500
    # And every status change on the way has its right event; leaving PROTECTED was the fill itself, never a claim
    walk = assert_every_status_change_has_its_event(market, b.id)
    assert walk[:4] == ["CREATED", "ENTRY_PENDING", "ENTRY_FILLED", "PROTECTED"] and walk[-1] == "CLOSED"
    assert walk[4] in ("EXITING", "CLOSED")
    assert event_at_change(market, b.id, "PROTECTED", walk[4]) in ("ExitFilled", "BracketClosed")
