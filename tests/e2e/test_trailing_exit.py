"""Trailing exits on the local stack (issue 6's acceptance): a real bracket placed through the API is filled and
protected at the paper exchange, trailed by the streamer child process as the price rises (its stop visible in
GET /api/v1/brackets/{id}), survives a kill -9 of the streamer mid-trail (the stack restarts it, as ECS would, and
/health says so), and when the price falls is exited exactly once, for TRAIL_STOP; an exit message delivered again
afterwards places nothing."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import requests

from local.stack import LocalStack
from tests.support.stack import get_bracket, paper, quote, wait_for

BOUND_S = 90  # an upper bound for a slow machine, never a timing assertion


def exit_orders(stack: LocalStack, bracket_id: str) -> list[dict[str, Any]]:
    from bracketflow.domain.ids import order_tag

    tag = order_tag(bracket_id, "EXIT")
    return [o for o in paper(stack, "state", method="GET")["orders"] if o.get("tag") == tag]


def streamer_child(stack: LocalStack) -> Any:
    return next(c for c in stack.children if c.spec.name == "streamer")


def queue_empty(stack: LocalStack, logical_id: str) -> bool:
    attrs = stack.client("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url(logical_id),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_a_bracket_is_trailed_survives_a_streamer_kill_and_exits_once_for_trail_stop(manual_market, dev_api_key):
    stack = manual_market
    assert streamer_child(stack).alive, "the local stack should run the streamer"
    # Given a long MIS bracket with a 1% trail, placed through the API, filled and protected at the paper exchange
    placed = requests.post(
        f"{stack.api_url}/api/v1/placebracketorder",
        json={
            "symbol": "INFY",
            "exchange": "NSE",
            "product": "MIS",
            "action": "BUY",
            "quantity": 2,
            "entry_price": "1500",
            "sl_price": "1480",
            "target_price": "1600",
            "trail": {"type": "percent", "value": "1"},
            "strategy": "trailing-exit-e2e",
        },
        headers={"X-API-KEY": dev_api_key},
        timeout=30,
    )
    assert placed.status_code == 200, placed.text
    bracket_id = placed.json()["bracket_id"]
    wait_for(
        "PROTECTED", lambda: get_bracket(stack, dev_api_key, bracket_id)["status"] == "PROTECTED", timeout_s=BOUND_S
    )

    # When the price rises, the stop trails 1% under the best bid and GET shows it
    quote(stack, "1520", "1519.95", "1520")
    wait_for(
        "the trailed stop 1504.75 in GET /api/v1/brackets/{id}",
        lambda: Decimal(str(get_bracket(stack, dev_api_key, bracket_id)["stop_price"])) == Decimal("1504.75"),
        timeout_s=BOUND_S,
    )

    # When the streamer is killed outright mid-trail (nobody starts it again by hand)
    restarts_before = requests.get(f"{stack.api_url}/health", timeout=10).json()["restarts"]["streamer"]
    seen: list[tuple[str, str]] = []
    stack.components.subscribe(lambda change: seen.append((change.name, change.state)))
    child = streamer_child(stack)
    killed_pid = child.proc.pid
    child.proc.kill()
    # Then the stack restarts it, as ECS would: reported down meanwhile, up again, the restart counted in /health
    wait_for(
        "the streamer restarted and reported up",
        lambda: child.alive and child.proc.pid != killed_pid and ("streamer", "up") in seen,
        timeout_s=BOUND_S,
    )
    streamer_states = [state for name, state in seen if name == "streamer"]
    assert streamer_states[:2] == ["down", "up"], streamer_states
    health = requests.get(f"{stack.api_url}/health", timeout=10).json()
    assert health["components"]["streamer"] == "up" and health["restarts"]["streamer"] == restarts_before + 1, health
    # And the new streamer resumes the bracket from the stored stop and keeps trailing it
    quote(stack, "1530", "1530", "1530.05")
    wait_for(
        "the restarted streamer to trail the stop to 1514.70",
        lambda: Decimal(str(get_bracket(stack, dev_api_key, bracket_id)["stop_price"])) == Decimal("1514.70"),
        timeout_s=BOUND_S,
    )

    # When the price falls through the trailed stop (and on below it)
    quote(stack, "1512", "1511.95", "1512")
    quote(stack, "1508", "1507.95", "1508")
    # Then exactly one exit order reaches the paper exchange, and the bracket records TRAIL_STOP
    orders = wait_for("an exit order at the paper exchange", lambda: exit_orders(stack, bracket_id), timeout_s=BOUND_S)
    assert len(orders) == 1
    assert (orders[0]["transaction_type"], orders[0]["order_type"], orders[0]["quantity"]) == ("SELL", "MARKET", 2)
    view = wait_for(
        "the exit recorded on the bracket",
        lambda: (v := get_bracket(stack, dev_api_key, bracket_id))["exit"] and v["exit"]["order_id"] and v,
        timeout_s=BOUND_S,
    )
    assert view["exit"]["reason"] == "TRAIL_STOP"
    assert view["exit"]["order_id"] == orders[0]["order_id"]
    assert Decimal(str(view["stop_price"])) == Decimal("1514.70")
    gtts = [g for g in paper(stack, "state", method="GET")["gtts"] if g.get("tradingsymbol") == "INFY"]
    assert all(g["status"] != "active" for g in gtts if str(g["id"]) == str(view.get("gtt_id", g["id"])))

    # When the exit intent is delivered again (SQS Standard may), after the first was handled
    stack.client("sqs").send_message(
        QueueUrl=stack.queue_url("ExitQueue"),
        MessageBody=json.dumps(
            {
                "bracket_id": bracket_id,
                "reason": "TRAIL_STOP",
                "ltp": "1512.00",
                "stop_price": "1514.70",
                "detected_at": "2026-04-01T04:00:00.000000Z",
                "message_index": 0,
                "packet_index": 0,
            }
        ),
    )
    wait_for("the exit queue to drain", lambda: queue_empty(stack, "ExitQueue"), timeout_s=BOUND_S)
    # Then still exactly one exit order exists
    assert len(exit_orders(stack, bracket_id)) == 1
