"""Benchmark: does the account-wide order rate limiter hold 8 orders/s with 4 Lambdas hammering it, and would the
broker (Kite: 10 orders/s) see more than it allows when callers wake late?

Four threads (standing in for four concurrent order-placing Lambdas) call acquire() back to back for ~5 s against
a DynamoDB table with the template's key schema on the local stack's moto server, which applies each call
atomically as DynamoDB does (moto in-process does not: two threads' appends to one list could interleave). We
record each grant's slot and report the most grants in any sliding 1 s window and in any calendar second, the mean
rate, how long callers waited, and how many DynamoDB calls each grant cost (the look, the booking, compactions).
The broker sees an order when its caller wakes and sends it, not at its slot: the most wake-ups in any 1 s window is
what the broker's own limit is held against (the limiter's third rule, BROKER_ORDER_RATE_LIMIT_PER_SECOND per
1 + 2 x ORDER_SEND_WITHIN_S seconds, with a late waker booking again, is what keeps it there).

Run alone: `python -m benchmarks.bench_rate_limiter`; `make bench` runs it with the others.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bracketflow.adapters.dynamo.ratelimit import OrderRateLimiter
from bracketflow.errors import RateLimited

RESULTS = Path(__file__).parent / "results" / "rate_limiter.json"
TABLE = "bracketflow-bench-brackets"
REGION = "ap-south-1"


def _max_in_window(times: list[float], window_s: float) -> int:
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def _hammer(
    limiter: OrderRateLimiter, callers: int, duration_s: float
) -> tuple[list[float], list[float], list[float], int]:
    """`callers` threads acquiring as fast as they can for `duration_s`: the grant times, the times each caller woke
    to send, the waits, the give-ups."""
    grants: list[float] = []
    sent: list[float] = []
    waits: list[float] = []
    timeouts = 0
    lock = threading.Lock()
    stop_at = time.time() + duration_s
    barrier = threading.Barrier(callers)

    def caller() -> None:
        nonlocal timeouts
        barrier.wait()
        while time.time() < stop_at:
            try:
                grant = limiter.acquire("bench", timeout_s=2.0)
            except RateLimited:
                with lock:
                    timeouts += 1
                continue
            woke = time.time()
            with lock:
                grants.append(grant.granted_at)
                sent.append(woke)
                waits.append(grant.waited_s)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return grants, sent, waits, timeouts


def run(
    duration_s: float = 5.0, callers: int = 4, per_second: int = 8, per_minute: int = 350, broker_per_second: int = 10
) -> dict[str, Any]:
    """Hammer the limiter; write and return the achieved rates."""
    from bracketflow.adapters.aws import reset_clients
    from local.aws import MotoServer

    server = MotoServer(port=0)
    server.start()
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ENDPOINT_URL=server.endpoint, AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local")
    reset_clients()
    try:
        server.client("dynamodb").create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        )
        limiter = OrderRateLimiter(per_second, per_minute, broker_per_second=broker_per_second, table_name=TABLE)
        dynamo_calls: Counter[str] = Counter()
        client = limiter._table().meta.client  # the cached client the limiter uses

        def count(event_name: str, **_: Any) -> None:
            dynamo_calls[event_name.rsplit(".", 1)[-1]] += 1

        client.meta.events.register("before-call.dynamodb.*", count)

        grants, sent, waits, timeouts = _hammer(limiter, callers, duration_s)
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_clients()

    span = max(grants) - min(grants) if len(grants) > 1 else 0.0
    per_calendar_second = Counter(int(t) for t in grants)
    results: dict[str, Any] = {
        "benchmark": "order rate limiter, DynamoDB bucket (local moto server)",
        "callers": callers,
        "duration_s": duration_s,
        "configured_per_second": per_second,
        "configured_per_minute": per_minute,
        "grants": len(grants),
        "max_in_any_1s_window": _max_in_window(grants, 1.0),
        "max_in_any_calendar_second": max(per_calendar_second.values()) if grants else 0,
        "max_in_any_60s_window": _max_in_window(grants, 60.0),
        "broker_limit_per_second": broker_per_second,
        "max_sent_in_any_1s_window": _max_in_window(sent, 1.0),
        "send_delay_p99_ms": round(
            sorted(s - g for s, g in zip(sent, grants, strict=True))[int(0.99 * (len(sent) - 1))] * 1000, 1
        )
        if sent
        else None,
        "mean_rate_per_s": round((len(grants) - 1) / span, 3) if span else None,
        "wait_p50_ms": round(statistics.median(waits) * 1000, 1) if waits else None,
        "wait_p99_ms": round(sorted(waits)[int(0.99 * (len(waits) - 1))] * 1000, 1) if waits else None,
        "gave_up_after_2s": timeouts,
        "dynamodb_calls_per_grant": round(sum(dynamo_calls.values()) / len(grants), 2) if grants else None,
        "note": (
            "mean_rate_per_s includes the opening burst of configured_per_second grants, which the limit allows; "
            "a 5 s run cannot reach the per-minute limit, so max_in_any_60s_window is the run's total"
        ),
    }
    results["headline"] = (
        f"{results['max_in_any_1s_window']} max in any 1 s window (limit {per_second}/s), "
        f"{results['max_sent_in_any_1s_window']} sent in any 1 s (broker's limit {broker_per_second}/s), "
        f"{callers} callers x {duration_s:g} s, {results['grants']} grants, "
        f"wait p50 {results['wait_p50_ms']} ms / p99 {results['wait_p99_ms']} ms"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
