"""The account-wide order rate limiter: its token arithmetic (pure, injected clock) and its DynamoDB bucket (moto)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws

from bracketflow.adapters.dynamo.ratelimit import (
    OrderRateLimiter,
    RateLimit,
    bucket_pk,
    decide,
    given_slots,
    schedule,
)
from bracketflow.errors import RateLimited

TABLE = "bracketflow-test-brackets"
PER_SECOND = RateLimit(8, 1.0)
PER_MINUTE = RateLimit(350, 60.0)
KITE_DEFAULTS = (PER_SECOND, PER_MINUTE)


class FakeClock:
    """A clock that only moves when someone sleeps (or the test moves it)."""

    def __init__(self, start: float = 1_775_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += max(0.0, seconds)


def max_in_window(times: Sequence[float], window_s: float) -> int:
    """The most grants any half-open window [t, t + window_s) holds. Counted in whole microseconds: in floats,
    1.001 - 0.001 is just under 1.0, which would put two slots a whole window apart in one window."""
    ordered = sorted(round(t * 1_000_000) for t in times)
    window = round(window_s * 1_000_000)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


# ---- token arithmetic ---------------------------------------------------------------------------------------------


def test_a_full_second_refuses_the_ninth_order_until_the_first_token_returns():
    # Given 8 orders granted at t
    t = 1_000_000
    grants = [t] * 8
    # When a ninth asks at t, just before t + 1 s, and at t + 1 s
    at_once = decide(grants, t, KITE_DEFAULTS)
    just_before = decide(grants, t + 999, KITE_DEFAULTS)
    on_time = decide(grants, t + 1000, KITE_DEFAULTS)
    # Then it waits exactly until the oldest token comes back
    assert not at_once.granted and at_once.wait_s == 1.0
    assert not just_before.granted and just_before.wait_s == pytest.approx(0.001)
    assert on_time.granted and on_time.grants[-1] == t + 1000


def test_a_burst_of_eight_goes_at_once():
    grants: list[int] = []
    for _ in range(8):
        decision = decide(grants, 5_000, KITE_DEFAULTS)
        assert decision.granted
        grants = list(decision.grants)
    assert len(grants) == 8


def test_the_minute_limit_holds_even_when_every_second_is_within_its_own_limit():
    # Given 350 orders spread over the last 50 seconds (7 a second: under 8/s)
    start = 10_000_000
    grants = [start + i * (50_000 // 350) for i in range(350)]
    now = start + 50_000
    # When another asks
    decision = decide(grants, now, KITE_DEFAULTS)
    # Then it waits for the first of the minute to age out
    assert not decision.granted
    assert decision.wait_s == pytest.approx((start + 60_000 - now) / 1000)


def test_grants_older_than_the_longest_window_are_dropped_from_the_bucket():
    now = 100_000_000
    decision = decide([now - 61_000, now - 60_000, now - 59_999], now, KITE_DEFAULTS)
    assert decision.granted
    assert decision.grants == (now - 59_999, now)


def test_grants_stamped_ahead_by_a_fast_clock_still_hold_their_tokens():
    # Given another Lambda whose clock runs 300 ms ahead took 8 tokens
    now = 2_000_000
    decision = decide([now + 300] * 8, now, KITE_DEFAULTS)
    # Then we wait for them to return by its clock, rather than sending a ninth order in that second
    assert not decision.granted
    assert decision.wait_s == pytest.approx(1.3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=5_000), min_size=1, max_size=120))
def test_no_window_ever_holds_more_than_its_limit(gaps_ms):
    # Given requests arriving at arbitrary times against small limits (3/s, 7 per 4 s)
    limits = (RateLimit(3, 1.0), RateLimit(7, 4.0))
    grants: list[int] = []
    now = 0
    for gap in gaps_ms:
        now += gap
        decision = decide(grants, now, limits)
        if decision.granted:
            grants.append(now)
        else:
            # and a refused caller is told a wait after which it is served
            assert decision.wait_s > 0
            assert decide(list(decision.grants), now + round(decision.wait_s * 1000), limits).granted
    # Then no 1 s window holds more than 3 grants and no 4 s window more than 7
    assert max_in_window([g / 1000 for g in grants], 1.0) <= 3
    assert max_in_window([g / 1000 for g in grants], 4.0) <= 7


# ---- the DynamoDB bucket --------------------------------------------------------------------------------------------


@pytest.fixture
def table(monkeypatch) -> Iterator[object]:
    """The main table with the template's key schema (pk/sk strings), in moto."""
    monkeypatch.setenv("TABLE_NAME", TABLE)
    with mock_aws():
        ddb = boto3.resource("dynamodb", region_name="ap-south-1")
        created = ddb.create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        )
        yield created


@pytest.fixture
def served_table(monkeypatch) -> Iterator[object]:
    """The same table behind the local stack's moto server, which applies each DynamoDB call atomically as DynamoDB
    does; moto in-process checks a condition and writes without a lock, so racing threads could both pass."""
    from bracketflow.adapters.aws import reset_clients
    from local.aws import MotoServer

    server = MotoServer(port=0)
    server.start()
    try:
        monkeypatch.setenv("TABLE_NAME", TABLE)
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
        reset_clients()
        yield server.client("dynamodb").create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        )
    finally:
        server.stop()
        reset_clients()


def test_n_orders_at_one_instant_never_exceed_the_bucket(table):
    # Given the limiter at its defaults, the clock stopped at t
    clock = FakeClock()
    limiter = OrderRateLimiter(8, 350, clock=clock, sleep=clock.sleep, jitter=lambda: 0.0)
    # When 20 orders ask at t without waiting
    granted, refused = 0, 0
    for _ in range(20):
        try:
            limiter.acquire("acct1", timeout_s=0)
            granted += 1
        except RateLimited as exc:
            refused += 1
            message = exc.message
    # Then exactly 8 go, and the rest are told why
    assert (granted, refused) == (8, 12)
    assert "order rate limit for broker account 'acct1'" in message
    item = table.get_item(Key={"pk": bucket_pk("acct1"), "sk": "BUCKET"})["Item"]
    assert len(item["grants"]) == 8


def test_waiting_callers_are_served_as_tokens_return(table):
    # Given a clock that moves only when the limiter sleeps
    clock = FakeClock()
    limiter = OrderRateLimiter(8, 350, clock=clock, sleep=clock.sleep, jitter=lambda: 0.0)
    # When 20 orders ask one after another, each willing to wait 5 s
    grants = [limiter.acquire("acct1", timeout_s=5.0) for _ in range(20)]
    # Then all are served, 8 per second and no faster, and the waits are reported
    times = [g.granted_at for g in grants]
    assert max_in_window(times, 1.0) == 8
    assert grants[8].waited_s == pytest.approx(1.0)
    assert times[-1] - times[0] == pytest.approx(2.0)


def test_the_minute_limit_is_shared_across_seconds(table):
    clock = FakeClock()
    limiter = OrderRateLimiter(8, 20, clock=clock, sleep=clock.sleep, jitter=lambda: 0.0)
    times = [limiter.acquire("acct1", timeout_s=120).granted_at for _ in range(30)]
    assert max_in_window(times, 60.0) == 20
    assert times[20] - times[0] == pytest.approx(60.0)


def test_accounts_have_their_own_buckets(table):
    clock = FakeClock()
    limiter = OrderRateLimiter(2, 350, clock=clock, sleep=clock.sleep)
    limiter.acquire("acct1", 0)
    limiter.acquire("acct1", 0)
    with pytest.raises(RateLimited):
        limiter.acquire("acct1", 0)
    assert limiter.acquire("acct2", 0).waited_s == 0


def test_concurrent_callers_at_one_instant_share_one_bucket(served_table):
    # Given 4 Lambdas (threads) racing for tokens at the same instant, each trying 10 times without waiting
    clock = FakeClock()
    limiter = OrderRateLimiter(8, 350, clock=clock, sleep=lambda s: None)
    granted: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def caller() -> None:
        start.wait()
        for _ in range(10):
            try:
                limiter.acquire("acct1", timeout_s=0)
            except RateLimited:
                continue
            with lock:
                granted.append(1)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then the conditional writes let exactly 8 through between them
    assert len(granted) == 8


def test_limits_come_from_settings(table, monkeypatch):
    monkeypatch.setenv("ORDER_RATE_LIMIT_PER_SECOND", "3")
    monkeypatch.setenv("ORDER_RATE_LIMIT_PER_MINUTE", "100")
    monkeypatch.setenv("BROKER_ORDER_RATE_LIMIT_PER_SECOND", "5")
    monkeypatch.setenv("ORDER_SEND_WITHIN_S", "0.25")
    from bracketflow.settings import get_settings

    get_settings.cache_clear()
    limiter = OrderRateLimiter.from_settings()
    assert limiter.limits == (RateLimit(3, 1.0), RateLimit(100, 60.0), RateLimit(5, 1.5))
    assert limiter.send_within_s == 0.25
    for _ in range(3):
        limiter.acquire("acct9", timeout_s=0)
    assert table.get_item(Key={"pk": "RATELIMIT#acct9", "sk": "BUCKET"})["Item"]["version"] == 3


# ---- reservations: one booking per order, however many wait ----------------------------------------------------------


class StoppedClock(FakeClock):
    """A clock that never moves: a caller's sleep until its slot passes at once, so every caller books at one
    instant, the strictest case for the bucket."""

    def sleep(self, seconds: float) -> None:
        pass


def count_calls(table) -> dict[str, int]:
    """DynamoDB calls made through the table's client, by operation."""
    calls: dict[str, int] = {}

    def count(event_name: str, **_: object) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        calls[operation] = calls.get(operation, 0) + 1

    table.meta.client.meta.events.register("before-call.dynamodb.*", count)
    return calls


def booked(table, account: str = "acct1") -> list[float]:
    """Every slot the bucket has given, as the limiter itself works them out."""
    item = table.get_item(Key={"pk": bucket_pk(account), "sk": "BUCKET"})["Item"]
    return [t / 1000 for t in given_slots(item, KITE_DEFAULTS)]


def test_a_waiting_order_books_its_slot_with_one_read_and_one_write(table):
    # Given 20 orders, each willing to wait 5 s, and a clock that moves only while they wait
    clock = FakeClock()
    start = clock.now
    limiter = OrderRateLimiter(8, 350, clock=clock, sleep=clock.sleep, jitter=lambda: 0.0)
    calls = count_calls(limiter._table())
    # When they ask one after another
    grants = [limiter.acquire("acct1", timeout_s=5.0) for _ in range(20)]
    # Then each was given its own slot: 8 at once, 8 a second later, 4 two seconds later
    offsets = [round(g.granted_at - start, 3) for g in grants]
    assert offsets == [0.0] * 8 + [1.0] * 8 + [2.0] * 4
    # and booked it with one look and one write, not by asking again and again until a token came back
    assert (calls.get("GetItem"), calls.get("UpdateItem", 0) + calls.get("PutItem", 0)) == (20, 20)
    assert max_in_window(booked(table), 1.0) == 8


def test_a_slot_further_away_than_the_caller_may_wait_is_refused_and_not_booked(table):
    # Given 40 slots booked over the next 5 s by orders waiting for them
    clock = FakeClock()
    now_ms = int(clock.now * 1000)
    before = {"pk": bucket_pk("acct1"), "sk": "BUCKET", "version": 40,
              "settled": [now_ms + second * 1000 for second in range(5) for _ in range(8)]}  # fmt: skip
    table.put_item(Item=before)
    limiter = OrderRateLimiter(8, 350, clock=clock, sleep=clock.sleep, jitter=lambda: 0.0)
    # When an order that may wait only 2 s asks
    with pytest.raises(RateLimited) as refused:
        limiter.acquire("acct1", timeout_s=2.0)
    # Then it is told when the next slot is, and the bucket is as it was: it took nobody's slot
    assert "next slot in 5.00s, more than the 2.00s we may wait" in refused.value.message
    assert table.get_item(Key={"pk": bucket_pk("acct1"), "sk": "BUCKET"})["Item"] == before
    # and an order that may wait long enough gets the slot after the last one booked
    assert limiter.acquire("acct1", timeout_s=10.0).granted_at == pytest.approx(now_ms / 1000 + 5.0)


def test_a_request_pushed_past_its_wait_by_a_concurrent_booking_takes_no_slot():
    # Given 8 requests that took this second, then one that may not wait and one that may wait 2 s
    t = 1_000_000
    slots = schedule([], [(t, t)] * 8 + [(t, t), (t, t + 2000)], KITE_DEFAULTS)
    # Then the impatient one is skipped and the next gets the first slot of the next second, not a later one
    assert slots == [t] * 8 + [None, t + 1000]


def test_concurrent_waiting_callers_each_book_their_own_slot_within_the_limits(served_table):
    # Given 4 Lambdas (threads) each placing 10 orders at the same instant, each willing to wait 10 s
    clock = StoppedClock()
    limiter = OrderRateLimiter(8, 350, clock=clock, sleep=clock.sleep)
    bookings: list[str] = []
    limiter._table().meta.client.meta.events.register(
        "before-parameter-build.dynamodb.UpdateItem",
        lambda params, **_: (
            bookings.append(params["UpdateExpression"]) if "list_append" in params["UpdateExpression"] else None
        ),
    )
    slots: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def caller() -> None:
        start.wait()
        for _ in range(10):
            grant = limiter.acquire("acct1", timeout_s=10.0)
            with lock:
                slots.append(grant.granted_at)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then all 40 are served, 8 to a second, each on a slot that is in the bucket
    assert len(slots) == 40
    assert max_in_window(slots, 1.0) == 8
    assert sorted(booked(limiter._table())) == sorted(slots)
    # and each booked with one write, however many booked at the same moment
    assert len(bookings) == 40


# ---- slots are kept at the moment of sending ----------------------------------------------------------------------

WITH_BROKER_GUARD = (PER_SECOND, PER_MINUTE, RateLimit(10, 1.25))  # Kite's 10/s, 0.125 s to send within


class LateWaker(FakeClock):
    """A busy process: each sleep overruns by the next of `overruns` (then by nothing)."""

    def __init__(self, overruns: list[float]) -> None:
        super().__init__()
        self.overruns = list(overruns)

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds + (self.overruns.pop(0) if self.overruns else 0.0))


def test_orders_sent_a_little_after_their_slots_never_exceed_the_brokers_second():
    # Given 16 orders at one instant, the first 8 of which leave 0.2 s after their slot (a slow process), the rest
    # on time: by the account's own limit alone, 8 slots at t and 8 at t + 1 s
    t = 1_000_000
    unguarded = schedule([], [(t, t + 10_000)] * 16, KITE_DEFAULTS)
    sent = [s + 200 for s in unguarded[:8]] + list(unguarded[8:])
    # Then 16 would reach the broker within one second, as the alert-burst benchmark saw
    assert max_in_window([s / 1000 for s in sent], 1.0) == 16
    # While with the broker's limit held over 1 s + twice the send-within time, at most its 10 do
    guarded = schedule([], [(t, t + 10_000)] * 16, WITH_BROKER_GUARD)
    sent = [s + 200 for s in guarded[:8]] + list(guarded[8:])  # type: ignore[operator]
    assert max_in_window([s / 1000 for s in sent], 1.0) <= 10


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=1_500), st.integers(min_value=0, max_value=250)),
        min_size=1,
        max_size=120,
    )
)
def test_no_second_at_the_broker_holds_more_than_its_limit_when_orders_leave_within_their_slots(requests_):
    # Given requests at arbitrary times, each reaching the broker up to 0.25 s after its slot (0.125 s to wake and
    # send, as much again on the way)
    t, asks = 0, []
    for gap, _ in requests_:
        t += gap
        asks.append((t, t + 100_000))
    slots = schedule([], asks, WITH_BROKER_GUARD)
    arrivals = [slot + late for slot, (_, late) in zip(slots, requests_, strict=True) if slot is not None]
    # Then no 1 s window at the broker holds more than Kite's 10, and our own slots keep our 8 per second
    assert max_in_window([a / 1000 for a in arrivals], 1.0) <= 10
    assert max_in_window([s / 1000 for s in slots if s is not None], 1.0) <= 8


def test_the_broker_guard_keeps_the_steady_rate_at_our_own_limit():
    # Given 100 orders at one instant: by our 8/s alone, the last slot is 12 s later
    slots = schedule([], [(0, 100_000)] * 100, WITH_BROKER_GUARD)
    # Then with the broker guard it is 12.25 s: the same 8 per second, only the second second's burst is smaller
    assert slots[:16] == [0] * 8 + [1000] * 2 + [1250] * 6
    assert slots[-1] == 12_250


def test_a_grant_says_when_the_order_must_have_left(table):
    clock = FakeClock()
    limiter = OrderRateLimiter(8, 350, broker_per_second=10, send_within_s=0.125, clock=clock, sleep=clock.sleep)
    grant = limiter.acquire("acct1")
    assert grant.send_by == pytest.approx(grant.granted_at + 0.125)
    assert limiter.limits == WITH_BROKER_GUARD


def test_a_caller_that_wakes_past_its_send_by_books_a_new_slot(table):
    # Given this second's 8 slots taken, and a caller whose sleep to the next slot overruns by 0.3 s
    clock = LateWaker([0.3])
    now_ms = int(clock.now * 1000)
    table.put_item(Item={"pk": bucket_pk("acct1"), "sk": "BUCKET", "version": 8, "settled": [now_ms] * 8})
    limiter = OrderRateLimiter(8, 350, broker_per_second=10, clock=clock, sleep=clock.sleep)
    # When it asks
    grant = limiter.acquire("acct1", timeout_s=5.0)
    # Then it does not go on the slot it missed (t + 1 s) but on a new one when it woke (t + 1.3 s)
    assert grant.granted_at == pytest.approx(now_ms / 1000 + 1.3)
    assert grant.send_by == pytest.approx(now_ms / 1000 + 1.425)
    # and the missed slot stays spent: no other order can be sent on it late
    assert sorted(booked(table)) == pytest.approx(sorted([now_ms / 1000] * 8 + [now_ms / 1000 + 1.0, grant.granted_at]))


def slow_calls(table, clock: FakeClock, seconds: float, *operations: str) -> None:
    """Each of these DynamoDB operations takes `seconds` on the clock (a loaded process, a slow network)."""
    for operation in operations:
        table.meta.client.meta.events.register(f"before-call.dynamodb.{operation}", lambda **_: clock.sleep(seconds))


def test_a_booking_slower_than_the_send_within_time_is_refused_and_sends_nothing(table):
    # Given a process whose booking writes take 0.3 s, though its reads are quick
    clock = FakeClock()
    limiter = OrderRateLimiter(8, 350, clock=clock, sleep=clock.sleep)
    slow_calls(limiter._table(), clock, 0.3, "UpdateItem")
    # When it asks for a slot, each slot it books is 0.3 s gone before it knows it
    with pytest.raises(RateLimited) as refused:
        limiter.acquire("acct1", timeout_s=5.0)
    # Then after three it gives up: RateLimited, retried by its workflow, and no order went late
    assert "woke too late for 3 slots in a row" in refused.value.message


def test_a_booking_asks_for_a_slot_as_far_ahead_as_its_look_took(table):
    # Given a process whose reads and writes both take 0.3 s
    clock = FakeClock()
    start = clock.now
    limiter = OrderRateLimiter(8, 350, clock=clock, sleep=clock.sleep)
    slow_calls(limiter._table(), clock, 0.3, "GetItem", "UpdateItem")
    # When it asks for a slot
    grant = limiter.acquire("acct1", timeout_s=5.0)
    # Then the slot it books is when its write is done, not when it started: the first one is kept
    assert grant.granted_at == pytest.approx(start + 0.6)
    assert len(booked(table)) == 1
