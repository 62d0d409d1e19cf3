"""WebSocket connections of the live-updates API, in the single table.

pk                             sk                        what
WSCONN#<connection_id>         CONN                      account_id (whose API key opened it), connected_at,
                                                         source_ip, expires_at (TTL)
ACCOUNT#<account_id>           WSCONN#<connection_id>    one subscription: notify fans an account's updates out by
                                                         querying this partition (no index needed), expires_at (TTL)

A connection exists from $connect; it receives updates only once it subscribed. $disconnect, or a push answered
410 Gone, deletes both items; the TTL (API Gateway closes a connection after 2 hours) sweeps any left behind.
"""

from __future__ import annotations

import time
from typing import Any

from boto3.dynamodb.conditions import Key

from bracketflow.adapters.dynamo import records as r
from bracketflow.adapters.dynamo.table import table
from bracketflow.settings import get_settings

CONN = "CONN"
SUBSCRIPTION_PREFIX = "WSCONN#"


def connection_key(connection_id: str) -> dict[str, str]:
    return {"pk": f"WSCONN#{connection_id}", "sk": CONN}


def subscription_key(account_id: str, connection_id: str) -> dict[str, str]:
    return {"pk": r.account_pk(account_id), "sk": f"{SUBSCRIPTION_PREFIX}{connection_id}"}


def _expires_at() -> int:
    return int(time.time()) + get_settings().websocket_connection_ttl_s


def save_connection(connection_id: str, account_id: str, connected_at: str, source_ip: str | None) -> None:
    item: dict[str, Any] = {
        **connection_key(connection_id),
        "type": "WSCONN",
        "connection_id": connection_id,
        "account_id": account_id,
        "connected_at": connected_at,
        "expires_at": _expires_at(),
    }
    if source_ip:
        item["source_ip"] = source_ip
    table().put_item(Item=item)


def get_connection(connection_id: str) -> dict[str, Any] | None:
    item = table().get_item(Key=connection_key(connection_id), ConsistentRead=True).get("Item")
    return r.plain(item) if item else None


def subscribe(connection_id: str, account_id: str, at: str) -> None:
    table().put_item(
        Item={
            **subscription_key(account_id, connection_id),
            "type": "WSSUB",
            "connection_id": connection_id,
            "account_id": account_id,
            "subscribed_at": at,
            "expires_at": _expires_at(),
        }
    )


def unsubscribe(connection_id: str, account_id: str) -> None:
    table().delete_item(Key=subscription_key(account_id, connection_id))


def subscribers(account_id: str) -> list[str]:
    """Connection ids subscribed to `account_id`, oldest subscription first is not promised (id order)."""
    now = int(time.time())
    cond = Key("pk").eq(r.account_pk(account_id)) & Key("sk").begins_with(SUBSCRIPTION_PREFIX)
    kwargs: dict[str, Any] = {"KeyConditionExpression": cond}
    ids: list[str] = []
    while True:
        page = table().query(**kwargs)
        # TTL deletes lazily (up to days later): an expired item is a connection API Gateway already closed.
        ids += [i["connection_id"] for i in page["Items"] if int(i.get("expires_at") or now + 1) > now]
        if "LastEvaluatedKey" not in page:
            return ids
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def forget_connection(connection_id: str, account_id: str | None = None) -> None:
    """Delete the connection and its subscription (on $disconnect, or when a push finds it gone)."""
    if account_id is None:
        found = get_connection(connection_id)
        account_id = None if found is None else found.get("account_id")
    if account_id:
        unsubscribe(connection_id, account_id)
    table().delete_item(Key=connection_key(connection_id))
