"""The account-wide order rate limiter: one bucket per broker account in DynamoDB, shared by every Lambda.

Kite allows 10 orders/s and 400/min per account; we hold every order-placing Lambda together under a configurable
8/s and 350/min. Each limit is a bucket of `limit` tokens in which a spent token comes back exactly `window_s`
later (a token bucket whose tokens return one by one, i.e. a sliding-window log). Why not the classic bucket that
refills continuously: a bucket of 8 refilled at 8/s lets 8 + 8 = 16 orders into one second after an idle spell,
which is exactly what the broker punishes. Here no window of `window_s` ever holds more than `limit` grants, and a
burst of `limit` (an 8-leg batch) still goes out at once.

A slot is a promise about when the order reaches the broker, not only when the caller wakes: a caller that wakes
late (a busy process, a slow thread) and sends then lands in the next window on top of that window's own orders. So
each grant carries a `send_by` (the slot plus `send_within_s`); the caller sends no later than that or books again
(`acquire` does so itself when it wakes too late, and the broker adapter checks once more right before sending).
With a broker limit configured, a third limit keeps any window of 1 s + 2 x `send_within_s` (one share for waking
late, one for the way to the broker) within the broker's per-second limit: the orders that reach the broker in any
1 s then came from slots inside such a window. At 8/s ours and 10/s Kite's with 0.125 s, both come to 8/s steady.

A caller reserves a slot and sleeps until it. Slots are given in order, like a queue: each is at or after every
earlier one and at least `window_s` after the limit-th latest, so any `limit` + 1 consecutive grants span a full
window (`next_slot`). The booking is one atomic append, which never fails and never has to be repeated: the caller
appends its request (its arrival time and how long it may wait) to the bucket's list and gets the list back as it
stands after the append. Every caller works the slots out from that list the same way (`schedule`), so each knows its
own without asking again, however many book at once. (An optimistic read-then-conditional-write lets one booking
through per round trip: a burst of a hundred entries cost thousands of failed writes.) A request whose slot would
come later than it may wait is refused (RateLimited) and takes no slot: it is checked first on a plain read, so
usually nothing is written, and the schedule skips a request that a concurrent booking pushed past its wait.

State: one item, pk="RATELIMIT#<account>", sk="BUCKET": `grants` = the requests appended since the last compaction
(maps: t = arrival, d = the latest slot it accepts, Unix ms), `settled` = the slots given to older requests that are
still inside the longest window, `version` = bookings made. Now and then a caller folds the requests into `settled`
(a conditional update on `compactions`, which only another compaction can change), keeping the item small.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from botocore.exceptions import ClientError

from bracketflow import metrics_names
from bracketflow.adapters.aws import resource
from bracketflow.errors import RateLimited
from bracketflow.observability import logger, metrics
from bracketflow.settings import get_settings

BUCKET_SK = "BUCKET"
COMPACT_AT = 32  # fold the appended requests into `settled` once there are this many
CLOCK_MARGIN_MS = 5_000  # a settled slot is kept this much past the longest window, for callers whose clock lags
DEFAULT_SEND_WITHIN_S = 0.125  # how late after its slot an order may still leave
MAX_LEAD_MS = 1_000  # the most a booking asks for a slot ahead of now (see _book)
MAX_SLOT_MISSES = 3  # slots a caller may wake too late for before it is refused (RateLimited: nothing was sent)


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
    send_by: float  # Unix seconds: the order must leave by then, or book a new slot


class OrderRateLimiter:
    """acquire() before every order-placing broker call: books a slot and sleeps until it, or raises RateLimited."""

    def __init__(
        self,
        per_second: int,
        per_minute: int,
        *,
        broker_per_second: int | None = None,
        send_within_s: float = DEFAULT_SEND_WITHIN_S,
        table_name: str | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.limits: tuple[RateLimit, ...] = (RateLimit(per_second, 1.0), RateLimit(per_minute, 60.0))
        if broker_per_second:
            self.limits += (RateLimit(broker_per_second, 1.0 + 2 * send_within_s),)
        self.send_within_s = send_within_s
        self._table_name = table_name
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter

    @classmethod
    def from_settings(cls) -> OrderRateLimiter:
        settings = get_settings()
        return cls(
            settings.order_rate_per_second,
            settings.order_rate_per_minute,
            broker_per_second=settings.broker_order_rate_per_second,
            send_within_s=settings.order_send_within_s,
            table_name=settings.table_name,
        )

    def _table(self) -> Any:
        return resource("dynamodb").Table(self._table_name or get_settings().table_name)

    def acquire(self, account: str, timeout_s: float = 5.0) -> Grant:
        """Book the next order slot for `account` and sleep until it; RateLimited (no slot taken) if it is more than
        `timeout_s` away. A caller that wakes past its slot's `send_by` books again (the missed slot stays spent)."""
        started = self._clock()
        deadline_ms = int((started + timeout_s) * 1000)
        for _ in range(MAX_SLOT_MISSES):
            slot_ms = self._book(account, deadline_ms, timeout_s)
            wait_s = slot_ms / 1000 - self._clock()
            if wait_s > 0:
                self._sleep(wait_s)
            late_s = self._clock() - slot_ms / 1000
            if late_s <= self.send_within_s:
                waited = max(0.0, self._clock() - started)
                metrics.add_metric(name="OrderRateLimitWait", unit="Milliseconds", value=round(waited * 1000, 1))
                return Grant(granted_at=slot_ms / 1000, waited_s=waited, send_by=slot_ms / 1000 + self.send_within_s)
            self._slot_missed(account, late_s)
        self._refuse(account, 0.0, timeout_s, why=f"woke too late for {MAX_SLOT_MISSES} slots in a row")

    def _slot_missed(self, account: str, late_s: float) -> None:
        """Count and log an order that could not leave within its slot's `send_by` (it books another)."""
        metrics.add_metric(name=metrics_names.ORDER_RATE_SLOT_MISSED, unit="Count", value=1)
        logger.info(
            "order rate limit: woke too late for the slot, booking another",
            extra={"account": account, "late_s": round(late_s, 3), "send_within_s": self.send_within_s},
        )

    def _book(self, account: str, deadline_ms: int, timeout_s: float) -> int:
        """Book one slot (Unix ms) no later than `deadline_ms` (or now, if a slot is free now), or raise RateLimited."""
        table = self._table()
        key = {"pk": bucket_pk(account), "sk": BUCKET_SK}
        # A look first: when the next slot is already too far, refuse without writing anything.
        looked_at = self._clock()
        item = table.get_item(Key=key, ConsistentRead=True).get("Item") or {}
        now_ms = int(self._clock() * 1000)
        slot_ms = next_slot(given_slots(item, self.limits), now_ms, self.limits)
        if slot_ms > max(now_ms, deadline_ms):  # a free slot now is always taken
            self._refuse(account, (slot_ms - now_ms) / 1000, timeout_s)
        # The earliest slot asked for is as far ahead as the look took: the booking write takes about as long, and a
        # slot that has passed by the time the caller knows it would be sent late.
        lead_ms = min(int((self._clock() - looked_at) * 1000), MAX_LEAD_MS)
        arrival_ms = int(self._clock() * 1000) + lead_ms
        latest_ms = max(arrival_ms, deadline_ms)
        item = table.update_item(
            Key=key,
            UpdateExpression="SET grants = list_append(if_not_exists(grants, :none), :me) ADD version :one",
            ExpressionAttributeValues={":none": [], ":me": [{"t": arrival_ms, "d": latest_ms}], ":one": 1},
            ReturnValues="ALL_NEW",
        )["Attributes"]
        mine = schedule(_settled(item), _requests(item), self.limits)[-1]
        if len(item.get("grants", [])) >= COMPACT_AT:
            self._compact(table, key, item, now_ms)
        if mine is None:  # others booked the slots we saw between our look and our append
            slot_ms = next_slot(given_slots(item, self.limits), now_ms, self.limits)
            self._refuse(account, (slot_ms - now_ms) / 1000, timeout_s)
        return mine

    def _compact(self, table: Any, key: dict[str, str], item: dict[str, Any], now_ms: int) -> None:
        """Fold the appended requests into `settled` and drop what has left the longest window. Best effort: if
        another caller compacted first, its result is the same, so a lost condition is simply left alone."""
        requests = _requests(item)
        slots = schedule(_settled(item), requests, self.limits)
        # What can no longer bind a later request (arrivals come later; a margin for clocks that lag ours).
        horizon_ms = now_ms - max(lim.window_ms for lim in self.limits) - CLOCK_MARGIN_MS
        settled = sorted(t for t in [*_settled(item), *(s for s in slots if s is not None)] if t > horizon_ms)
        done = int(item.get("compactions", 0))
        removes = ", ".join(f"grants[{i}]" for i in range(len(requests)))
        try:
            table.update_item(
                Key=key,
                UpdateExpression=f"SET settled = :settled, compactions = :next REMOVE {removes}",
                ConditionExpression="attribute_not_exists(compactions) OR compactions = :done",
                ExpressionAttributeValues={":settled": settled, ":next": done + 1, ":done": done},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    def _refuse(self, account: str, next_slot_in_s: float, timeout_s: float, why: str = "") -> NoReturn:
        metrics.add_metric(name="OrderRateLimited", unit="Count", value=1)
        logger.warning(
            "order rate limit: no slot in time",
            extra={"account": account, "next_slot_in_s": round(next_slot_in_s, 3), "timeout_s": timeout_s},
        )
        reason = why or f"next slot in {next_slot_in_s:.2f}s, more than the {timeout_s:.2f}s we may wait"
        raise RateLimited(
            f"order rate limit for broker account {account!r} reached "
            f"({self.limits[0].limit}/s, {self.limits[1].limit}/min): {reason}"
        )


def _settled(item: dict[str, Any]) -> list[int]:
    return [int(t) for t in item.get("settled", [])]


def _requests(item: dict[str, Any]) -> list[tuple[int, int]]:
    return [(int(r["t"]), int(r["d"])) for r in item.get("grants", [])]


def given_slots(item: dict[str, Any], limits: Sequence[RateLimit]) -> list[int]:
    """Every slot given so far: the settled ones and those of the appended requests."""
    slots = schedule(_settled(item), _requests(item), limits)
    return [*_settled(item), *(s for s in slots if s is not None)]


def schedule(
    settled: Sequence[int], requests: Sequence[tuple[int, int]], limits: Sequence[RateLimit]
) -> list[int | None]:
    """The slot of each request (arrival, latest accepted slot), in order, or None for one that would wait too long
    (it takes no slot). Pure and deterministic: every caller that sees the same list gives the same answers."""
    given = sorted(settled)
    slots: list[int | None] = []
    for arrival, latest in requests:
        slot = next_slot(given, arrival, limits)
        if slot > latest:
            slots.append(None)
            continue
        given.append(slot)  # slots are given in order, so `given` stays sorted
        slots.append(slot)
    return slots
