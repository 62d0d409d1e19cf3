"""Reconciliation's broker snapshot, kept for the length of one run so every ReconcileBracket task sees the same view.

pk                          sk          what
RECONCILE#<run_id>          SNAPSHOT    taken_at, body (zlib-compressed JSON of the broker's orders, positions and
                                        GTTs; Step Functions payloads stop at 256 KB), expires_at (TTL, a day)
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
