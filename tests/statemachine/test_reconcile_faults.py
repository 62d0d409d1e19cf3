"""Reconciliation recovers an order update lost on purpose while the watcher's feed IS running.

The local stack runs with the order-update relay (paper ticker -> OrderEventsQueue, as the streamer would), so every
update reaches the watcher — except the one the paper exchange's `drop_order_update` fault swallows. The next
reconcile run must then complete what that update would have: the bracket goes on exactly as if it had arrived.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests
from kiteconnect import KiteConnect

from local.stack import LocalStack, StackConfig
from tests.statemachine.test_lifecycle_gaps import (
    OrderUpdateRelay,
    bracket,
    events,
    paper,
    quote,
    token_stored,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "reconcile-faults-key"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    config = StackConfig(
        api_port=0,
        moto_port=0,
        paper_port=0,
        local_api_key=API_KEY,
        streamer=False,
        schedules=False,  # reconcile runs when the test starts it
        parameter_overrides={"BracketOrderDelaySeconds": "1"},
        extra_env={
            "PAPER_MARKET": "manual",
            "BROKER_MAX_ATTEMPTS": "2",
            "BROKER_LOOKUP_PAUSE_S": "0.05",
            "BROKER_TIMEOUT_S": "2",
        },
    )
    local = LocalStack(config)
    local.start()
    try:
        assert local.dev_account_seeded
        with OrderUpdateRelay(local):
            yield local
    finally:
        local.stop()


@pytest.fixture
def market(stack: LocalStack) -> LocalStack:
    """A clean paper exchange at INFY 1499.95 / 1500.00 and no bracket left open by an earlier test (reconcile
    would repair those too and muddle the counts)."""
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.domain.enums import BracketStatus

    paper(stack, "reset")
    paper(stack, "config", {"partial_fills": False})
    quote(stack, "1500", "1499.95", "1500")
    repo = BracketRepository()
    for leftover in repo.list_open():  # NEEDS_REVIEW -> CANCELLED is a human's resolution
        if leftover.status is not BracketStatus.NEEDS_REVIEW:
            leftover = repo.transition(leftover, BracketStatus.NEEDS_REVIEW, {"type": "TestCleanup"})
        repo.transition(leftover, BracketStatus.CANCELLED, {"type": "TestCleanup"})
    return stack


@pytest.fixture
def kite(stack: LocalStack) -> KiteConnect:
    client = KiteConnect(api_key="paper", root=stack.paper_url, timeout=5)
    client.set_access_token("paper-token")
    return client


def place(stack: LocalStack, **fields: Any) -> str:
    body = {"symbol": "INFY", "exchange": "NSE", "product": "MIS", "action": "BUY", "quantity": 10,
            "entry_price": "1500", "sl_price": "1480", "target_price": "1550",
            "strategy": f"fault-{time.monotonic_ns()}", **fields}  # fmt: skip
    answer = requests.post(
        f"{stack.api_url}/api/v1/placebracketorder", json=body, headers={"X-API-KEY": API_KEY}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["bracket_id"])


def run_reconcile(stack: LocalStack) -> dict[str, Any]:
    sfn = stack.client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=stack.state_machine_arn("ReconcileStateMachine"), name=f"run-{time.time_ns()}", input="{}"
    )["executionArn"]
    done = wait_for(
        "the reconcile run to end",
        lambda: (lambda e: e if e["status"] != "RUNNING" else None)(sfn.describe_execution(executionArn=arn)),
    )
    assert done["status"] == "SUCCEEDED", done
    return json.loads(done["output"])


def dropped(stack: LocalStack) -> int:
    state = requests.get(f"{stack.paper_url}/_paper/state", timeout=10).json()["data"]
    return sum(r["fired"] for r in state["faults"] if r["kind"] == "drop_order_update")


def test_an_entry_fill_update_dropped_by_the_exchange_is_recovered_by_reconciliation(market, kite):
    # Given a bracket whose entry rests below the market, its workflow waiting on the fill, the watcher's feed up
    bracket_id = place(market, entry_price="1490", sl_price="1470", target_price="1540")
    wait_for_status(bracket_id, "ENTRY_PENDING")
    wait_for("the entry wait's token", lambda: token_stored(bracket_id, "entry_task_token"))
    # (the task that stored the token looks at the broker once more right after; let that look finish first, or it
    # — not reconciliation — would be what sees the fill)
    time.sleep(1.5)
    # When the exchange fills it but drops the fill's order update (and only INFY's: the feed itself stays up)
    paper(market, "faults", {"rules": [{"kind": "drop_order_update", "match": {"tradingsymbol": "INFY"}, "count": 5}]})
    quote(market, "1490", "1489.95", "1490")
    order_id = bracket(bracket_id).entry.broker_order_id
    assert kite.order_history(order_id)[-1]["status"] == "COMPLETE"
    assert dropped(market) >= 1
    paper(market, "faults", {"rules": []})
    assert bracket(bracket_id).status.value == "ENTRY_PENDING", events(bracket_id)  # nothing else could tell it
    # And reconciliation runs
    summary = run_reconcile(market)
    # Then it recorded the fill and the workflow went on to protect the position
    assert summary["repairs"].get("MISSED_ENTRY_UPDATE") == 1
    done = wait_for_status(bracket_id, "PROTECTED")
    assert done.entry.filled_quantity == 10 and done.entry.average_price == Decimal("1490")
    types = [e["type"] for e in events(bracket_id)]
    assert types.index("EntryFilled") < types.index("Reconciled") < types.index("ProtectionPlaced")


def test_a_gtt_child_fill_update_dropped_is_recovered_and_the_bracket_closes_at_its_target(market, kite):
    # Given a protected bracket, the watcher's feed up
    bracket_id = place(market)
    b = wait_for_status(bracket_id, "PROTECTED")
    wait_for("the exit wait's token", lambda: token_stored(bracket_id, "exit_task_token"))
    time.sleep(1.5)  # (as above: the exit wait's own look at the broker finishes first)
    # When the market reaches the target, the GTT fires and its child fills, but the child's updates are dropped
    paper(market, "faults", {"rules": [{"kind": "drop_order_update", "match": {"tradingsymbol": "INFY"}, "count": 5}]})
    quote(market, "1551", "1550.95", "1551")
    assert kite.get_gtt(int(b.gtt_id))["status"] == "triggered"
    assert dropped(market) >= 1
    paper(market, "faults", {"rules": []})
    assert bracket(bracket_id).status.value == "PROTECTED"
    summary = run_reconcile(market)
    # Then reconciliation closes it at the target with the broker's fill
    done = wait_for_status(bracket_id, "CLOSED")
    assert done.exit_reason.value == "TARGET" and done.exit.average_price >= Decimal("1550")
    assert summary["repairs"].get("GTT_TRIGGERED") == 1
