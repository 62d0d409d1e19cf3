"""Duplicate keys and the order log (the request/response record of every authenticated placement call)."""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from bracketflow.adapters.dynamo import records as r
from bracketflow.adapters.dynamo.brackets import ConditionalPut
from bracketflow.adapters.dynamo.table import table
from bracketflow.domain.accounts import OrderLogEntry


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


def claim_signal(key: dict[str, str], signal: dict[str, Any], request_hash: str, now_s: int, window_s: int) -> bool:
    """Write a strategy signal's dedupe record (not yet done) if its key is free or expired; False when taken."""
    item = {
        **key,
        "type": "DEDUPE",
        **signal,
        "request_hash": request_hash,
        "done": False,
        "expires_at": now_s + window_s,
    }
    try:
        table().put_item(
            Item=item,
            ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
            ExpressionAttributeValues={":now": now_s},
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
            return False
        raise
    return True


def mark_signal_done(key: dict[str, str], signal_id: str, brackets: list[dict[str, Any]]) -> None:
    """The signal was acted on in full: a resend is answered from this record and does nothing."""
    table().update_item(
        Key=key,
        UpdateExpression="SET done = :t, brackets = :b",
        ConditionExpression="signal_id = :id",
        ExpressionAttributeValues={":t": True, ":b": brackets, ":id": signal_id},
    )


def put_order_log(entry: OrderLogEntry, retention_days: int, now_s: int) -> None:
    table().put_item(Item=r.order_log_to_item(entry, expires_at=now_s + retention_days * 86400))


def query_order_logs(account_id: str, day: str, limit: int = 500) -> list[OrderLogEntry]:
    page = table().query(
        KeyConditionExpression=Key("pk").eq(r.order_log_pk(account_id, day)), ScanIndexForward=False, Limit=limit
    )
    return [r.order_log_from_item(i) for i in page["Items"]]
