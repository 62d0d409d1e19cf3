"""Live updates from the table's stream: WebSocket messages per account, and Telegram notices.

Input: DynamoDB Streams records (NEW_AND_OLD_IMAGES) of the brackets table, in stream order. What they become:

* a bracket's STATE item whose status changed (or was created) -> one status-change message
    {"type": "bracket_order_update", "status": "<new status, lower case>", "bracket_id", "account_id",
     "bracket_status": "PROTECTED", "previous_status": "ENTRY_FILLED" | null, "version": int, "symbol",
     "exchange", "action", "product", "quantity", "filled_quantity", "average_price", "stop_price",
     "exit_reason", "timestamp"}
  Status changes come from the STATE item's own images because DynamoDB Streams keeps each item's modifications in
  order: a subscriber sees every status of a bracket, in the order it took them (version says so too).
* an audit EVENT item (inserted in the same transaction) of the named kinds -> a named message:
    EntryPlaced -> "entry_order_placed"; BracketClosed -> "completed"; ProtectionFailed, EmergencyExitPlaced ->
    "partial_failure"; EntryRejected, WorkflowFailed -> "error"; BreakevenStopSet -> "breakeven_stop_set"; with
    "event", "version", the event's "data".
* a leg (entry or exit order) on the STATE item whose broker status, filled quantity or average price changed ->
    {"type": "order_update", "account_id", "data": {"order_id", "status" (Kite's words: OPEN, COMPLETE, REJECTED,
     CANCELLED), "filled_quantity", "quantity", "average_price", "role", "bracket_id", "tradingsymbol", "exchange",
     "transaction_type", "product", "status_message"}, "timestamp"}   (the order-update shape)
* EVENT items of the notice kinds (services/telegram.NOTICE_EVENTS) -> Telegram lines, sent after the pushes.
* the account's halt for the day (a HALT item, inserted once a day when the kill switch trips) ->
    {"type": "account_update", "status": "kill_switch", "account_id", "reason": "DAILY_LOSS_HIT" | "FLATTENED",
     "tag": "RISK_BLOCKED:<reason>", "by", "blocked_until", "data": {"pnl", "limit"} (the loss check's figures),
     "timestamp"}
  and a Telegram notice saying the account was flattened and why.

Pushes go to every connection subscribed to the bracket's account; a connection that is gone (410) is forgotten.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from bracketflow.adapters import websocket_api
from bracketflow.adapters.dynamo import connections
from bracketflow.adapters.dynamo import records as r
from bracketflow.adapters.dynamo.table import table
from bracketflow.observability import logger, metrics
from bracketflow.services import telegram

NAMED_EVENTS: dict[str, str] = {
    "EntryPlaced": "entry_order_placed",
    "BracketClosed": "completed",
    "ProtectionFailed": "partial_failure",
    "EmergencyExitPlaced": "partial_failure",
    "EntryRejected": "error",
    "WorkflowFailed": "error",
    "BreakevenStopSet": "breakeven_stop_set",
}

# Our leg statuses in the broker's words, for order_update messages.
KITE_STATUS = {
    "CREATED": "PENDING",
    "SENT_TO_BROKER": "OPEN",
    "EXECUTED": "COMPLETE",
    "FAILED": "REJECTED",
    "CANCELLED": "CANCELLED",
}

_deserializer = TypeDeserializer()


@dataclass
class Outbox:
    """What one stream batch produced, in order."""

    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (account_id, message)
    notices: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (bracket_id, event type, data)
    # kill-switch notices: (account_id, halt fields); their lines need no bracket
    halts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@dataclass(frozen=True)
class Delivery:
    pushed: int
    gone: int
    failed: int
    telegrams: int


def image(record: Mapping[str, Any], which: str) -> dict[str, Any] | None:
    """A stream record's NewImage/OldImage as plain Python (Decimals for numbers), or None."""
    raw = (record.get("dynamodb") or {}).get(which)
    if not raw:
        return None
    return {k: _deserializer.deserialize(_bytes_decoded(v)) for k, v in raw.items()}


def _bytes_decoded(value: Any) -> Any:
    """Lambda's stream events carry binary attributes (B, BS) as base64 text; the deserializer wants bytes."""
    if isinstance(value, dict):
        if isinstance(value.get("B"), str):
            return {"B": base64.b64decode(value["B"])}
        if isinstance(value.get("BS"), list):
            return {"BS": [base64.b64decode(v) if isinstance(v, str) else v for v in value["BS"]]}
        if isinstance(value.get("M"), dict):
            return {"M": {k: _bytes_decoded(v) for k, v in value["M"].items()}}
        if isinstance(value.get("L"), list):
            return {"L": [_bytes_decoded(v) for v in value["L"]]}
    return value


def _item_type(record: Mapping[str, Any]) -> str | None:
    """The `type` attribute of the record's new image, read without decoding the rest of the item."""
    raw = ((record.get("dynamodb") or {}).get("NewImage") or {}).get("type") or {}
    return raw.get("S") if isinstance(raw, dict) else None


def _now() -> str:
    return r.iso(datetime.now(UTC))


def status_message(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> dict[str, Any] | None:
    previous = None if old is None else old.get("status")
    status = new.get("status")
    if not status or status == previous:
        return None
    entry = new.get("entry") or {}
    return r.plain(
        {
            "type": "bracket_order_update",
            "status": str(status).lower(),
            "bracket_id": new.get("bracket_id"),
            "account_id": new.get("account_id"),
            "bracket_status": status,
            "previous_status": previous,
            "version": new.get("version"),
            "symbol": new.get("symbol"),
            "exchange": new.get("exchange"),
            "action": new.get("action"),
            "product": new.get("product"),
            "quantity": new.get("quantity"),
            "filled_quantity": entry.get("filled_quantity"),
            "average_price": entry.get("average_price"),
            "stop_price": new.get("stop_price"),
            "exit_reason": new.get("exit_reason"),
            "tags": list(new.get("tags") or []),
            "timestamp": new.get("updated_at") or _now(),
        }
    )


def order_messages(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """order_update messages for the entry/exit legs whose broker-visible state changed."""
    out = []
    for leg_name in ("entry", "exit"):
        leg = new.get(leg_name) or {}
        order_id = leg.get("broker_order_id")
        if not order_id:
            continue
        before = (old or {}).get(leg_name) or {}
        watched = ("broker_order_id", "status", "filled_quantity", "average_price")
        if all(before.get(k) == leg.get(k) for k in watched):
            continue
        action = new.get("action")
        side = action if leg_name == "entry" else {"BUY": "SELL", "SELL": "BUY"}.get(str(action), action)
        out.append(
            r.plain(
                {
                    "type": "order_update",
                    "account_id": new.get("account_id"),
                    "data": {
                        "order_id": order_id,
                        "status": KITE_STATUS.get(str(leg.get("status")), leg.get("status")),
                        "filled_quantity": leg.get("filled_quantity", 0),
                        "quantity": leg.get("quantity"),
                        "average_price": leg.get("average_price"),
                        "role": leg.get("role", leg_name.upper()),
                        "bracket_id": new.get("bracket_id"),
                        "tradingsymbol": new.get("symbol"),
                        "exchange": new.get("exchange"),
                        "transaction_type": side,
                        "product": new.get("product"),
                        "status_message": leg.get("message"),
                    },
                    "timestamp": new.get("updated_at") or _now(),
                }
            )
        )
    return out


def event_message(item: Mapping[str, Any]) -> dict[str, Any] | None:
    name = NAMED_EVENTS.get(str(item.get("event_type")))
    if name is None:
        return None
    return r.plain(
        {
            "type": "bracket_order_update",
            "status": name,
            "bracket_id": item.get("bracket_id"),
            "account_id": item.get("account_id"),
            "event": item.get("event_type"),
            "version": item.get("version"),
            "data": item.get("data") or {},
            "timestamp": item.get("at") or _now(),
        }
    )


HALT_DETAIL = ("pnl", "limit")  # what the loss check saw, when it was the one that tripped


def halt_message(item: Mapping[str, Any]) -> dict[str, Any]:
    """The account update a kill switch trip makes (the day's HALT item, written once)."""
    reason = str(item.get("reason"))
    return r.plain(
        {
            "type": "account_update",
            "status": "kill_switch",
            "account_id": item.get("account_id"),
            "reason": reason,
            "tag": f"RISK_BLOCKED:{reason}",
            "by": item.get("by"),
            "blocked_until": item.get("until"),
            "data": {k: item[k] for k in HALT_DETAIL if item.get(k) is not None},
            "timestamp": item.get("at") or _now(),
        }
    )


def collect(records: Iterable[Mapping[str, Any]]) -> Outbox:
    """Turn stream records into messages and notices, keeping stream order."""
    box = Outbox()
    for record in records:
        kind = _item_type(record)
        if kind == "HALT" and record.get("eventName") == "INSERT":
            halt = image(record, "NewImage") or {}
            halted = halt_message(halt)
            box.messages.append((str(halt.get("account_id")), halted))
            box.halts.append((str(halt.get("account_id")), halted))
            continue
        if record.get("eventName") not in ("INSERT", "MODIFY") or kind not in ("BRACKET", "EVENT"):
            continue  # connections, dedupe keys, snapshots ...: nothing a trader sees
        new = image(record, "NewImage")
        if not new:
            continue
        kind = new.get("type")
        if kind == "BRACKET" and new.get("sk") == r.STATE:
            old = image(record, "OldImage")
            account = str(new.get("account_id"))
            found = status_message(new, old)
            if found is not None:
                box.messages.append((account, found))
            box.messages += [(account, m) for m in order_messages(new, old)]
        elif kind == "EVENT" and record.get("eventName") == "INSERT":
            account = str(new.get("account_id"))
            found = event_message(new)
            if found is not None:
                box.messages.append((account, found))
            if new.get("event_type") in telegram.NOTICE_EVENTS:
                box.notices.append(
                    (str(new.get("bracket_id")), str(new.get("event_type")), r.plain(new.get("data") or {}))
                )
    return box


def push(messages: list[tuple[str, dict[str, Any]]]) -> tuple[int, int, int]:
    """Fan each message out to its account's subscribers, in order; returns (pushed, gone, failed)."""
    if not messages or not websocket_api.enabled():
        return 0, 0, 0
    subscribers: dict[str, list[str]] = {}
    gone: set[str] = set()
    pushed = failed = 0
    for account, message in messages:
        if account not in subscribers:
            subscribers[account] = connections.subscribers(account)
        for connection_id in subscribers[account]:
            if connection_id in gone:
                continue
            try:
                websocket_api.post(connection_id, message)
                pushed += 1
            except websocket_api.ConnectionGone:
                gone.add(connection_id)
                connections.forget_connection(connection_id, account)
            except websocket_api.PushFailed as exc:
                failed += 1
                logger.warning("websocket push failed", extra={"connection_id": connection_id, "error": str(exc)})
    if pushed:
        metrics.add_metric(name="WebSocketPushes", unit="Count", value=pushed)
    if failed:
        metrics.add_metric(name="WebSocketPushFailures", unit="Count", value=failed)
    return pushed, len(gone), failed


def _facts(bracket_id: str, cache: dict[str, telegram.BracketFacts]) -> telegram.BracketFacts:
    if bracket_id not in cache:
        item = table().get_item(Key=r.bracket_state_key(bracket_id)).get("Item") or {}
        cache[bracket_id] = telegram.BracketFacts(
            bracket_id=bracket_id,
            symbol=str(item.get("symbol") or "?"),
            exchange=str(item.get("exchange") or ""),
            action=str(item.get("action") or ""),
            quantity=r.plain(item.get("quantity", "")),
            strategy=item.get("strategy") or None,
        )
    return cache[bracket_id]


def notice_lines(notices: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    cache: dict[str, telegram.BracketFacts] = {}
    lines = []
    for bracket_id, event_type, data in notices:
        try:
            line = telegram.format_notice(event_type, data, _facts(bracket_id, cache))
        except Exception as exc:  # a notice is never worth failing the batch (and re-pushing its updates)
            logger.warning("notice not formatted", extra={"bracket_id": bracket_id, "error": type(exc).__name__})
            continue
        if line:
            lines.append(line)
    return lines


def halt_lines(halts: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = []
    for account_id, message in halts:
        try:
            lines.append(telegram.format_halt(account_id, message))
        except Exception as exc:  # as for bracket notices: never worth failing the batch
            logger.warning("notice not formatted", extra={"account_id": account_id, "error": type(exc).__name__})
    return lines


def handle_stream_batch(records: Iterable[Mapping[str, Any]]) -> Delivery:
    """Deliver one stream batch: WebSocket pushes first (they are what a screen waits for), then Telegram.

    A kill switch notice goes first among the Telegram lines: it is the one a trader must not miss in a long batch."""
    box = collect(records)
    pushed, gone, failed = push(box.messages)
    lines = halt_lines(box.halts) + (notice_lines(box.notices) if box.notices else [])
    telegrams = telegram.send_notices(lines) if lines else 0
    return Delivery(pushed=pushed, gone=gone, failed=failed, telegrams=telegrams)


# ---------- WebSocket sessions ($connect, subscribe, ping, $disconnect) ----------


def connect(connection_id: str, api_key: str | None, source_ip: str | None = None) -> str:
    """Open a connection for the API key's account (Unauthorized otherwise); returns the account id."""
    from bracketflow.services.accounts import authenticate_api_key

    caller = authenticate_api_key(api_key)
    connections.save_connection(connection_id, caller.account_id, _now(), source_ip)
    metrics.add_metric(name="WebSocketConnects", unit="Count", value=1)
    return caller.account_id


def disconnect(connection_id: str) -> None:
    connections.forget_connection(connection_id)


def _reply(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **fields, "timestamp": _now()}


def on_message(connection_id: str, body: Any) -> dict[str, Any]:
    """A client message ({"action": "subscribe" | "unsubscribe" | "ping", ...}); returns the reply to send back.

    Subscriptions are limited to the account whose API key opened the connection; anything else is answered with
    {"type": "error", "message": ...} and changes nothing.
    """
    if not isinstance(body, dict):
        return _reply("error", message='messages are JSON objects like {"action": "subscribe", "account_id": "..."}')
    action = str(body.get("action") or "").lower()
    if action == "ping":
        return _reply("pong")
    conn = connections.get_connection(connection_id)
    if conn is None:
        return _reply("error", message="unknown connection; connect again with your API key")
    account_id = str(conn["account_id"])
    wanted = body.get("account_id", account_id)
    if action in ("subscribe", "unsubscribe"):
        if not isinstance(wanted, str) or wanted != account_id:
            return _reply("error", message="account_id: you can only subscribe to your own account's updates")
        if action == "subscribe":
            connections.subscribe(connection_id, account_id, _now())
            return _reply("subscribed", account_id=account_id)
        connections.unsubscribe(connection_id, account_id)
        return _reply("unsubscribed", account_id=account_id)
    return _reply("error", message=f"action: must be subscribe, unsubscribe or ping, got {body.get('action')!r}")
