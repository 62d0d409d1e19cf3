"""Duplicate keys and the order log (the request/response record of every authenticated placement call)."""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.conditions import Key

from bracketflow.adapters.dynamo import records as r
from bracketflow.adapters.dynamo.brackets import ConditionalPut
from bracketflow.adapters.dynamo.table import table
from bracketflow.services.models import OrderLogEntry


def dedupe_put(key: dict[str, str], bracket_id: str, request_hash: str, now_s: int, window_s: int) -> ConditionalPut:
    """A dedupe key to write with the bracket: it wins only if absent or expired (TTL deletion lags by hours)."""
    item = {
        **key,
        "type": "DEDUPE",
        "bracket_id": bracket_id,
        "request_hash": request_hash,
        "expires_at": now_s + window_s,
    }
    return ConditionalPut(
        item=item,
        condition="attribute_not_exists(pk) OR expires_at < :now",
        values={":now": now_s},
    )


def get_dedupe(key: dict[str, str], now_s: int) -> dict[str, Any] | None:
    """The live dedupe record under `key`, or None (absent or expired)."""
    item = table().get_item(Key=key, ConsistentRead=True).get("Item")
    if item is None or int(item.get("expires_at", 0)) < now_s:
        return None
    return item


def put_order_log(entry: OrderLogEntry, retention_days: int, now_s: int) -> None:
    table().put_item(Item=r.order_log_to_item(entry, expires_at=now_s + retention_days * 86400))


def query_order_logs(account_id: str, day: str, limit: int = 500) -> list[OrderLogEntry]:
    page = table().query(
        KeyConditionExpression=Key("pk").eq(r.order_log_pk(account_id, day)), ScanIndexForward=False, Limit=limit
    )
    return [r.order_log_from_item(i) for i in page["Items"]]
