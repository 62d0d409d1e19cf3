"""Live updates on the local stack: a websocket-client connected to the template's WebSocket API (served locally)
receives every status change of a bracket, in order, while the bracket really runs against the paper exchange.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
import websocket

from local.stack import LocalStack


def connect(stack: LocalStack, api_key: str) -> websocket.WebSocket:
    return websocket.create_connection(f"{stack.websocket_url}?apikey={api_key}", timeout=5)


def ask(ws: websocket.WebSocket, message: dict[str, Any]) -> dict[str, Any]:
    ws.send(json.dumps(message))
    return json.loads(ws.recv())


def test_a_websocket_without_a_valid_api_key_is_refused(local_stack):
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        connect(local_stack, "bfk_not-a-key")
    assert refused.value.status_code == 401


def test_ping_and_subscribing_only_to_your_own_account(local_stack, dev_api_key):
    ws = connect(local_stack, dev_api_key)
    try:
        assert ask(ws, {"action": "ping"})["type"] == "pong"
        refused = ask(ws, {"action": "subscribe", "account_id": "someone-else"})
        assert refused["type"] == "error" and "own account" in refused["message"]
        ok = ask(ws, {"action": "subscribe", "account_id": "local"})
        assert ok["type"] == "subscribed" and ok["account_id"] == "local"
    finally:
        ws.close()


def test_a_subscriber_receives_every_status_change_of_a_bracket_in_order(manual_market, dev_api_key):
    from bracketflow.adapters.dynamo import connections
    from bracketflow.adapters.dynamo.brackets import BracketRepository

    stack = manual_market
    ws = connect(stack, dev_api_key)
    try:
        assert ask(ws, {"action": "subscribe"})["type"] == "subscribed"
        # a subscription whose socket is long gone (no $disconnect ever came): the first push finds it 410 Gone
        connections.subscribe("GoneConnection1", "local", "2026-01-01T00:00:00Z")
        # When a bracket is placed at the market: it fills and gets its GTT
        placed = requests.post(
            f"{stack.api_url}/api/v1/placebracketorder",
            json={
                "symbol": "INFY",
                "exchange": "NSE",
                "product": "CNC",
                "action": "BUY",
                "quantity": 1,
                "entry_price": "1500",
                "sl_price": "1480",
                "target_price": "1550",
                "strategy": "live-updates-e2e",
            },
            headers={"X-API-KEY": dev_api_key},
            timeout=30,
        )
        assert placed.status_code == 200, placed.text
        bracket_id = placed.json()["bracket_id"]
        received = receive_until(ws, bracket_id, "PROTECTED", bound_s=90)
    finally:
        ws.close()
    # Then the status changes came one per status, in order, each naming the one before it, versions rising
    changes = [m for m in received if m["type"] == "bracket_order_update" and "bracket_status" in m]
    assert [m["bracket_status"] for m in changes] == ["CREATED", "ENTRY_PENDING", "ENTRY_FILLED", "PROTECTED"]
    assert [m["previous_status"] for m in changes] == [None, "CREATED", "ENTRY_PENDING", "ENTRY_FILLED"]
    versions = [m["version"] for m in changes]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    # And they agree with the bracket as stored and its audit trail
    stored = BracketRepository().get(bracket_id)
    assert stored is not None and stored.status.value == "PROTECTED" and versions[-1] <= stored.version
    trail_versions = {e["version"] for e in BracketRepository().events(bracket_id)}
    assert set(versions) <= trail_versions
    # And the placed entry was announced, and its fill came as an order_update in the order-update shape
    assert any(m.get("status") == "entry_order_placed" for m in received)
    fills = [m for m in received if m["type"] == "order_update" and m["data"]["status"] == "COMPLETE"]
    assert fills and fills[0]["data"]["order_id"] == stored.entry.broker_order_id
    assert fills[0]["account_id"] == "local" and fills[0]["data"]["filled_quantity"] == 1
    # And the gone connection was forgotten
    assert "GoneConnection1" not in connections.subscribers("local")


def receive_until(ws: websocket.WebSocket, bracket_id: str, status: str, bound_s: float) -> list[dict[str, Any]]:
    """This bracket's messages, until the one saying it reached `status` (bounded: fails naming what it saw)."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        try:
            message = json.loads(ws.recv())
        except websocket.WebSocketTimeoutException:
            continue
        of_bracket = message.get("bracket_id") or (message.get("data") or {}).get("bracket_id")
        if of_bracket != bracket_id:
            continue
        seen.append(message)
        if message.get("bracket_status") == status:
            return seen
    raise AssertionError(f"no {status} update for {bracket_id}; got {[m.get('status') for m in seen]}")
