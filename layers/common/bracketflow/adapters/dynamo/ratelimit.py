"""The account-wide order rate limiter: one bucket per broker account in DynamoDB, shared by every Lambda.

Kite allows 10 orders/s and 400/min per account; we hold every order-placing Lambda together under a configurable
8/s and 350/min. Each limit is a bucket of `limit` tokens in which a spent token comes back exactly `window_s`
later (a token bucket whose tokens return one by one, i.e. a sliding-window log). Why not the classic bucket that
refills continuously: a bucket of 8 refilled at 8/s lets 8 + 8 = 16 orders into one second after an idle spell,
which is exactly what the broker punishes. Here no window of `window_s` ever holds more than `limit` grants, and a
burst of `limit` (an 8-leg batch) still goes out at once.

A caller reserves: it reads the bucket, books the earliest free slot (now, or later when the limits are reached) with
one conditional write, and sleeps until that slot. Slots are booked in order, like a queue: each new slot is at or
after every slot already booked and at least `window_s` after the limit-th latest one, so any `limit` + 1 consecutive
grants span a full window. One read and one write per order, however many wait; a write is repeated only when
another caller booked between our read and write. A slot further away than the caller may wait is not booked: the
caller is refused (RateLimited) and takes nothing from anyone.

State: one item, pk="RATELIMIT#<account>", sk="BUCKET", `grants` = the booked slot times (Unix ms), past ones still
inside the longest window and future ones, `version` for optimistic locking. Every booking is a conditional put on
the version that was read, so concurrent Lambdas cannot both book the same slot.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

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
    wait_s: float  # how long until the caller's slot (0 when granted now)
    grants: tuple[int, ...]  # what to store: the live grant times, plus the slot when granted or booked
    slot_ms: int  # the earliest slot the caller may book


def next_slot(grants: Sequence[int], now_ms: int, limits: Sequence[RateLimit]) -> int:
    """The earliest time (Unix ms) at or after `now_ms` an order may go, given the slots already booked.

    Booked in order: at or after the latest booked slot, and for each limit at least one window after the
    limit-th latest slot (that slot has left the window by then). Slots stamped in the future (booked by a waiting
    caller, or by another caller whose clock runs ahead) hold their tokens, so clock skew errs on the side of fewer
    orders.
    """
    ordered = sorted(grants)
    slot = max(now_ms, ordered[-1]) if ordered else now_ms
    for lim in limits:
        if len(ordered) >= lim.limit:
            slot = max(slot, ordered[-lim.limit] + lim.window_ms)
    return slot


def live_grants(grants: Sequence[int], now_ms: int, limits: Sequence[RateLimit]) -> list[int]:
    """The grants that still hold a token at `now_ms` or later (older ones have left the longest window)."""
    horizon_ms = max(lim.window_ms for lim in limits)
    return sorted(t for t in grants if t > now_ms - horizon_ms)


def decide(grants: Sequence[int], now_ms: int, limits: Sequence[RateLimit]) -> Decision:
    """Pure token arithmetic: may an order go at `now_ms`, given the booked grant times? If not, how long to wait."""
    live = live_grants(grants, now_ms, limits)
    slot = next_slot(live, now_ms, limits)
    if slot > now_ms:
        return Decision(False, (slot - now_ms) / 1000, tuple(live), slot)
    return Decision(True, 0.0, (*live, now_ms), slot)


@dataclass(frozen=True)
class Grant:
    granted_at: float  # Unix seconds, as stamped in the bucket
    waited_s: float


class OrderRateLimiter:
    """acquire() before every order-placing broker call: books a slot and sleeps until it, or raises RateLimited."""

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
        """Book the next order slot for `account` and sleep until it; RateLimited (nothing booked) if it is more than
        `timeout_s` away."""
        table = self._table()
        key = {"pk": bucket_pk(account), "sk": BUCKET_SK}
        started = self._clock()
        deadline_ms = int((started + timeout_s) * 1000)
        lost_races = 0
        while True:
            item = table.get_item(Key=key, ConsistentRead=True).get("Item")
            now_ms = int(self._clock() * 1000)
            live = live_grants([int(t) for t in item.get("grants", [])] if item else [], now_ms, self.limits)
            slot_ms = next_slot(live, now_ms, self.limits)
            if slot_ms > max(now_ms, deadline_ms):  # a free slot now is always taken
                self._refuse(account, (slot_ms - now_ms) / 1000, timeout_s)
            if self._store(table, key, item, (*live, slot_ms)):
                break
            # Another caller booked between our read and write: read again at once, a little apart.
            lost_races += 1
            self._sleep(0.002 * self._jitter() * min(lost_races, 5))
        wait_s = slot_ms / 1000 - self._clock()
        if wait_s > 0:
            self._sleep(wait_s)
        waited = max(0.0, self._clock() - started)
        metrics.add_metric(name="OrderRateLimitWait", unit="Milliseconds", value=round(waited * 1000, 1))
        return Grant(granted_at=slot_ms / 1000, waited_s=waited)

    def _refuse(self, account: str, next_slot_in_s: float, timeout_s: float) -> NoReturn:
        metrics.add_metric(name="OrderRateLimited", unit="Count", value=1)
        logger.warning(
            "order rate limit: no slot in time",
            extra={"account": account, "next_slot_in_s": round(next_slot_in_s, 3), "timeout_s": timeout_s},
        )
        raise RateLimited(
            f"order rate limit for broker account {account!r} reached "
            f"({self.limits[0].limit}/s, {self.limits[1].limit}/min): next slot in {next_slot_in_s:.2f}s, "
            f"more than the {timeout_s:.2f}s we may wait"
        )

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
