"""Reconciliation's broker snapshot, kept for the length of one run so every ReconcileBracket task sees the same view.

pk                          sk          what
RECONCILE#<run_id>          SNAPSHOT    taken_at, body (zlib-compressed JSON of the broker's orders, positions and
                                        GTTs; Step Functions payloads stop at 256 KB), expires_at (TTL, a day)
RECONCILE#LAST              SUMMARY     last_run: the latest run's summary (when, brackets checked, repairs by kind,
                                        errors, orphan GTTs, the brackets repaired); last_repair: the latest run
                                        that repaired something, kept when later runs repair nothing
"""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

from boto3.dynamodb.types import Binary

from bracketflow.adapters.dynamo.table import table

SNAPSHOT = "SNAPSHOT"
_KEEP_S = 86400
LAST_KEY = {"pk": "RECONCILE#LAST", "sk": "SUMMARY"}


def snapshot_key(run_id: str) -> dict[str, str]:
    return {"pk": f"RECONCILE#{run_id}", "sk": SNAPSHOT}


def put_snapshot(run_id: str, taken_at: str, body: dict[str, Any]) -> None:
    data = zlib.compress(json.dumps(body, separators=(",", ":")).encode())
    table().put_item(
        Item={
            **snapshot_key(run_id),
            "type": "RECONCILE_SNAPSHOT",
            "taken_at": taken_at,
            "body": Binary(data),
            "expires_at": int(time.time()) + _KEEP_S,
        }
    )


def get_snapshot(run_id: str) -> dict[str, Any] | None:
    item = table().get_item(Key=snapshot_key(run_id), ConsistentRead=True).get("Item")
    if not item:
        return None
    raw = item["body"]
    data = raw.value if isinstance(raw, Binary) else bytes(raw)
    return dict(json.loads(zlib.decompress(data)))


def put_last_run(run: dict[str, Any]) -> None:
    """Record a finished run's summary as the latest; also as the latest repair when it repaired anything."""
    repaired = bool(run.get("repairs"))
    sets = "last_run = :run" + (", last_repair = :run" if repaired else "")
    table().update_item(
        Key=LAST_KEY,
        UpdateExpression=f"SET #type = :type, {sets}",
        ExpressionAttributeNames={"#type": "type"},
        ExpressionAttributeValues={":type": "RECONCILE_LAST", ":run": run},
    )


def get_last_run() -> dict[str, Any]:
    """{"last_run": ..., "last_repair": ...} (each absent until a run recorded it)."""
    item = table().get_item(Key=LAST_KEY).get("Item") or {}
    return {k: item[k] for k in ("last_run", "last_repair") if k in item}
