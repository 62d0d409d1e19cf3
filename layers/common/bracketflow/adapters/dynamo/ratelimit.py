"""The account-wide order rate limiter: one bucket per broker account in DynamoDB, shared by every Lambda.

Kite allows 10 orders/s and 400/min per account; we hold every order-placing Lambda together under a configurable
8/s and 350/min. Each limit is a bucket of `limit` tokens in which a spent token comes back exactly `window_s`
later (a token bucket whose tokens return one by one, i.e. a sliding-window log). Why not the classic bucket that
refills continuously: a bucket of 8 refilled at 8/s lets 8 + 8 = 16 orders into one second after an idle spell,
which is exactly what the broker punishes. Here no window of `window_s` ever holds more than `limit` grants, and a
burst of `limit` (an 8-leg batch) still goes out at once.

State: one item, pk="RATELIMIT#<account>", sk="BUCKET", `grants` = the grant times (Unix ms) still inside the
longest window, `version` for optimistic locking. Every grant is a conditional put on the version that was read,
so concurrent Lambdas cannot both take the last token.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from bracketflow.adapters.aws import resource
from bracketflow.errors import RateLimited
from bracketflow.observability import logger, metrics
from bracketflow.settings import get_settings

BUCKET_SK = "BUCKET"


def bucket_pk(account: str) -> str:
    return f"RATELIMIT#{account}"


@dataclass(frozen=True)
class RateLimit:
    limit: int
    window_s: float

    @property
    def window_ms(self) -> int:
        return round(self.window_s * 1000)


@dataclass(frozen=True)
class Decision:
    granted: bool
    wait_s: float  # how long until a token is free (0 when granted)
    grants: tuple[int, ...]  # what to store: the live grant times, plus now when granted


def decide(grants: Sequence[int], now_ms: int, limits: Sequence[RateLimit]) -> Decision:
    """Pure token arithmetic: may an order go at `now_ms`, given the earlier grant times? If not, how long to wait.

    A grant at t holds a token of a limit while now < t + window. Grants stamped in the future (another caller's
    clock runs ahead) still hold their token, so clock skew errs on the side of fewer orders.
    """
    horizon_ms = max(lim.window_ms for lim in limits)
    live = sorted(t for t in grants if t > now_ms - horizon_ms)
    wait_ms = 0
    for lim in limits:
        held = [t for t in live if t > now_ms - lim.window_ms]
        excess = len(held) - lim.limit + 1
        if excess > 0:
            # The excess-th oldest token must come back before one is free.
            wait_ms = max(wait_ms, held[excess - 1] + lim.window_ms - now_ms)
    if wait_ms > 0:
        return Decision(False, wait_ms / 1000, tuple(live))
    return Decision(True, 0.0, (*live, now_ms))


@dataclass(frozen=True)
class Grant:
    granted_at: float  # Unix seconds, as stamped in the bucket
    waited_s: float


class OrderRateLimiter:
    """acquire() before every order-placing broker call; blocks briefly for a token, or raises RateLimited."""

    def __init__(
        self,
        per_second: int,
        per_minute: int,
        *,
        table_name: str | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.limits = (RateLimit(per_second, 1.0), RateLimit(per_minute, 60.0))
        self._table_name = table_name
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter

    @classmethod
    def from_settings(cls) -> OrderRateLimiter:
        settings = get_settings()
        return cls(settings.order_rate_per_second, settings.order_rate_per_minute, table_name=settings.table_name)

    def _table(self) -> Any:
        return resource("dynamodb").Table(self._table_name or get_settings().table_name)

    def acquire(self, account: str, timeout_s: float = 5.0) -> Grant:
        """Take one order token for `account`, waiting up to `timeout_s`; RateLimited if none comes in time."""
        table = self._table()
        key = {"pk": bucket_pk(account), "sk": BUCKET_SK}
        started = self._clock()
        deadline = started + timeout_s
        lost_races = 0
        while True:
            item = table.get_item(Key=key, ConsistentRead=True).get("Item")
            grants = [int(t) for t in item.get("grants", [])] if item else []
            now = self._clock()
            now_ms = int(now * 1000)
            decision = decide(grants, now_ms, self.limits)
            if decision.granted:
                if self._store(table, key, item, decision.grants):
                    waited = now - started
                    metrics.add_metric(name="OrderRateLimitWait", unit="Milliseconds", value=round(waited * 1000, 1))
                    return Grant(granted_at=now_ms / 1000, waited_s=waited)
                # Another caller took a token between our read and write: read again at once, a little apart.
                lost_races += 1
                self._sleep(0.002 * self._jitter() * min(lost_races, 5))
                continue
            remaining = deadline - now
            if decision.wait_s > remaining:
                metrics.add_metric(name="OrderRateLimited", unit="Count", value=1)
                logger.warning(
                    "order rate limit: no token in time",
                    extra={"account": account, "next_token_in_s": round(decision.wait_s, 3), "timeout_s": timeout_s},
                )
                raise RateLimited(
                    f"order rate limit for broker account {account!r} reached "
                    f"({self.limits[0].limit}/s, {self.limits[1].limit}/min): next slot in {decision.wait_s:.2f}s, "
                    f"more than the {timeout_s:.2f}s we may wait"
                )
            # Sleep until a token returns, plus a little jitter so waiting callers do not all wake together.
            self._sleep(decision.wait_s + 0.005 * self._jitter())

    def _store(self, table: Any, key: dict[str, str], item: dict[str, Any] | None, grants: tuple[int, ...]) -> bool:
        version = int(item["version"]) if item else 0
        new_item = {**key, "grants": list(grants), "version": version + 1}
        if item:
            condition: dict[str, Any] = {
                "ConditionExpression": "version = :v",
                "ExpressionAttributeValues": {":v": version},
            }
        else:
            condition = {"ConditionExpression": "attribute_not_exists(pk)"}
        try:
            table.put_item(Item=new_item, **condition)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True
