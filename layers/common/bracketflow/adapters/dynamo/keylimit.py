"""The per-key placement limits: token buckets kept as one number each (GCRA), updated with conditional writes.

A key has one bucket per scope: "" for REST placements and batches, "ALERT" for TradingView alerts (a screener fires
dozens on one candle close; pacing those is the account-wide order limiter's job at the broker, not the door's).

GCRA stores the "theoretical arrival time" (tat_ms) of the next request. A request at `now` is allowed when
tat <= now + tolerance, and moves tat to max(tat, now) + interval. It is exactly a token bucket of `burst`
tokens refilled at `rate`/s, but needs no read: each branch of max() is one conditional UpdateItem, so
concurrent Lambdas cannot both spend the last token.
"""

from __future__ import annotations

import math

from botocore.exceptions import ClientError

from bracketflow.adapters.dynamo import records as r
from bracketflow.adapters.dynamo.table import table

_TTL_S = 86400


def try_acquire(
    key_hash: str, rate_per_second: float, now_ms: int, *, burst: int | None = None, scope: str = ""
) -> bool:
    """Spend one token of this key's `scope` bucket: `burst` tokens (default: the rate rounded up), refilled at
    `rate_per_second`. False when the bucket is empty."""
    interval = max(1, round(1000 / rate_per_second))
    burst = max(1, burst if burst else math.ceil(rate_per_second))
    tolerance = interval * (burst - 1)
    key = r.key_limit_key(key_hash, scope)
    expires = now_ms // 1000 + _TTL_S
    try:  # idle bucket: tat is in the past (or the key is new)
        table().update_item(
            Key=key,
            UpdateExpression="SET tat_ms = :next, expires_at = :exp",
            ConditionExpression="attribute_not_exists(tat_ms) OR tat_ms <= :now",
            ExpressionAttributeValues={":next": now_ms + interval, ":now": now_ms, ":exp": expires},
        )
        return True
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
    try:  # busy bucket with a token left: tat within the burst tolerance
        table().update_item(
            Key=key,
            UpdateExpression="SET tat_ms = tat_ms + :interval, expires_at = :exp",
            ConditionExpression="tat_ms > :now AND tat_ms <= :limit",
            ExpressionAttributeValues={
                ":interval": interval,
                ":now": now_ms,
                ":limit": now_ms + tolerance,
                ":exp": expires,
            },
        )
        return True
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
    return False  # tat only grows, so failing both means tat > now + tolerance: over the limit
