"""Benchmark: a burst of TradingView alerts on one candle close, through the whole local stack to the paper exchange.

A screener fires 100 alerts for 100 different instruments (the 22 NSE equities and 78 NFO option contracts of the
instrument master, one lot each, LIMIT at the master's price) from one API key within one second: alert n is sent
at t0 + n * 10 ms, each from its own thread, as TradingView's servers would. Measured:
- alerts accepted (200) of 100, and the answer times (p50, p99, max; TradingView gives up after 3 s);
- the time from t0 to the last entry order at the paper exchange (the floor at 8 orders/s is 12.5 s);
- the highest number of orders the paper exchange received in any one-second window (its arrival times to the
  microsecond) and in any calendar second (how Kite counts), against Kite's 10/s and our account-wide 8/s; and the
  order writes the paper exchange refused for rate (its limit is on, at Kite's 10/s);
- the highest number of slots the account-wide limiter gave in any one-second window (read from its bucket), and
  how many slots it gave in all: those beyond one per entry were missed by orders that could not leave in time
  and took another.
Bounded: it gives up waiting for entries after BOUND_S.
"""

from __future__ import annotations

import csv
import io
import statistics
import threading
import time
from collections import Counter
from decimal import Decimal
from typing import Any

import requests

ALERTS = 100
SPACING_S = 0.01
BOUND_S = 120.0
API_KEY = "bench-burst-key"


def _instruments() -> list[dict[str, str]]:
    from bracketflow.domain.instruments import instruments_csv_text

    rows = csv.DictReader(io.StringIO(instruments_csv_text()))
    return [r for r in rows if r["segment"] in ("NSE", "NFO-OPT")][:ALERTS]


def _alert(row: dict[str, str], n: int) -> dict[str, Any]:
    price = Decimal(row["last_price"])
    return {
        "apikey": API_KEY,
        "symbol": f"{row['exchange']}:{row['tradingsymbol']}",
        "action": "buy",
        "product": "MIS",
        "quantity": str(max(1, int(row["lot_size"]))),
        "entry_price": str(price),
        "sl_percent": "2",
        "target_percent": "4",
        "strategy": f"screener-{n}",
    }


def _sliding_max(times: list[float], window_s: float = 1.0) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


def _limiter_slots(stack: Any) -> list[float]:
    """The slots the account-wide order limiter gave (Unix s), as it works them out from its bucket."""
    from boto3.dynamodb.types import TypeDeserializer

    from bracketflow.adapters.dynamo.ratelimit import BUCKET_SK, OrderRateLimiter, bucket_pk, given_slots
    from bracketflow.settings import get_settings

    settings = get_settings()
    limits = OrderRateLimiter.from_settings().limits
    raw = (
        stack.client("dynamodb")
        .get_item(
            TableName=stack.table_name("BracketsTable"),
            Key={"pk": {"S": bucket_pk(settings.broker_account)}, "sk": {"S": BUCKET_SK}},
            ConsistentRead=True,
        )
        .get("Item", {})
    )
    item = {k: TypeDeserializer().deserialize(v) for k, v in raw.items()}
    return [t / 1000 for t in given_slots(item, limits)]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run() -> dict[str, Any]:
    from local.stack import LocalStack, StackConfig

    config = StackConfig(
        api_port=0,
        moto_port=0,
        paper_port=0,
        schedules=False,
        streamer=False,  # entries only: the streamer's work starts after fills
        local_api_key=API_KEY,
        extra_env={"PAPER_MARKET": "manual", "DEFAULT_MAX_OPEN_BRACKETS": "500", "DEFAULT_MAX_ORDER_VALUE": "10000000"},
    )
    stack = LocalStack(config)
    stack.start()
    try:
        return _measure(stack)
    finally:
        stack.stop()


def _measure(stack: Any) -> dict[str, Any]:
    rows = _instruments()
    url = f"{stack.api_url}/tradingview/webhook/bracket"
    answers: list[tuple[int, float, str]] = [(0, 0.0, "")] * len(rows)
    t0 = time.time() + 0.5

    def send(n: int, row: dict[str, str]) -> None:
        time.sleep(max(0.0, t0 + n * SPACING_S - time.time()))
        started = time.perf_counter()
        try:
            reply = requests.post(url, json=_alert(row, n), timeout=30)
            answers[n] = (reply.status_code, time.perf_counter() - started, reply.text[:200])
        except requests.RequestException as exc:
            answers[n] = (0, time.perf_counter() - started, str(exc))

    threads = [threading.Thread(target=send, args=(n, row)) for n, row in enumerate(rows)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = [a for a in answers if a[0] == 200]
    times = [a[1] for a in answers]

    entries: list[dict[str, Any]] = []
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        state = requests.get(f"{stack.paper_url}/_paper/state", timeout=10).json()["data"]
        entries = [o for o in state["orders"] if o["transaction_type"] == "BUY"]
        if len(entries) >= len(accepted):
            break
        time.sleep(0.25)
    arrivals = [float(o["received_at"]) for o in entries]
    rate_limited = int(state.get("rate_limited", 0))
    slots = _limiter_slots(stack)
    refused = [o for o in entries if o["status"] == "REJECTED"]
    last_s = (max(arrivals) - t0) if arrivals else None
    refusals = sorted({a[2] for a in answers if a[0] != 200})[:3]
    result = {
        "alerts": len(rows),
        "sent_over_s": round((len(rows) - 1) * SPACING_S, 2),
        "accepted": len(accepted),
        "refused_answers": refusals,
        "answer_p50_ms": round(statistics.median(times) * 1000, 1),
        "answer_p99_ms": round(_pct(times, 0.99) * 1000, 1),
        "answer_max_ms": round(max(times) * 1000, 1),
        "answers_over_3s": sum(1 for t in times if t > 3.0),
        "entries_at_paper": len(entries),
        "entries_rejected": len(refused),
        "last_entry_after_s": None if last_s is None else round(last_s, 2),
        "floor_at_8_per_s": round(len(rows) / 8, 1),
        "max_orders_in_any_1s": _sliding_max(arrivals),
        "max_orders_in_any_calendar_second": max(Counter(int(t) for t in arrivals).values(), default=0),
        "refused_for_rate_at_paper": rate_limited,
        "max_limiter_slots_in_any_1s": _sliding_max(slots),
        "limiter_slots_given": len(slots),
    }
    result["headline"] = (
        f"{result['accepted']}/{result['alerts']} accepted, p99 answer {result['answer_p99_ms']} ms, "
        f"last entry at the paper exchange after {result['last_entry_after_s']} s, "
        f"at most {result['max_orders_in_any_1s']} orders in any 1 s there, "
        f"{result['refused_for_rate_at_paper']} refused for rate "
        f"(the limiter gave at most {result['max_limiter_slots_in_any_1s']} slots in any 1 s)"
    )
    return result
