"""Benchmark: what the console's live chart costs on AWS, per open bracket-hour, from billable operations counted on
the local stack (the same meter and list prices as bench_cost).

Two parts, each measured for FEED_S seconds of a moving paper market and scaled to an hour:
- recording: the streamer appends the last price of each watched instrument every STREAMER_PRICE_INTERVAL_S (2 s)
  when it changed. One open bracket without a trail (so no stop writes mix in), the market moving every 0.5 s. This is
  paid whether or not anyone looks.
- viewing: a console tab on the bracket polls GET /api/v1/brackets/{id} and GET /api/v1/brackets/{id}/prices every
  2 s (API Gateway requests, the API function's invocations, DynamoDB reads). Paid only while a tab is open on it.
The streamer's own resync reads are in the recording figure too (they are there with or without the console).
Price items carry no `type`, so in AWS the table stream's filter (NotifyFunction's FilterCriteria: BRACKET and EVENT
items only) keeps them from invoking anything; the local stream poller does not filter, so the Notify invocations the
local stack makes for them (which ignore them) are left out of the recording figure.
"""

from __future__ import annotations

import random
import time
from typing import Any

import requests

from benchmarks.bench_cost import PRICES, Meter, _eventually, _price, _quote, start_stack

FEED_S = 60.0
POLL_EVERY_S = 2.0
MOVE_EVERY_S = 0.5


def _place(stack: Any, api_key: str) -> str:
    _quote(stack, "1500", "1499.95", "1500")
    answer = requests.post(
        f"{stack.api_url}/api/v1/placebracketorder",
        json={
            "symbol": "INFY",
            "exchange": "NSE",
            "product": "MIS",
            "action": "BUY",
            "quantity": 1,
            "entry_price": "1500",
            "sl_price": "1400",
            "target_price": "1600",
            "pricetype": "MARKET",
            "strategy": "bench-console",
        },
        headers={"X-API-KEY": api_key},
        timeout=30,
    )
    answer.raise_for_status()
    bracket_id = answer.json()["bracket_id"]
    _eventually(lambda: _get(stack, api_key, f"/api/v1/brackets/{bracket_id}")["status"] == "PROTECTED", "PROTECTED")
    return str(bracket_id)


def _get(stack: Any, api_key: str, path: str) -> dict[str, Any]:
    answer = requests.get(f"{stack.api_url}{path}", headers={"X-API-KEY": api_key}, timeout=30)
    answer.raise_for_status()
    return dict(answer.json()["data"])


def _walk(stack: Any, seconds: float, rng: random.Random) -> None:
    price = 150000  # paise, away from the stop and the target
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        price += rng.choice((-10, -5, 5, 10))
        ltp = f"{price / 100:.2f}"
        _quote(stack, ltp, f"{(price - 5) / 100:.2f}", ltp)
        time.sleep(MOVE_EVERY_S)


def run() -> dict[str, Any]:
    meter = Meter()
    stack = start_stack()
    api_key = stack.config.local_api_key
    try:
        from tests.support.stack import paper

        paper(stack, "config", {"market": "manual"})
        bracket_id = _place(stack, api_key)
        meter.install(stack)
        try:
            rng = random.Random(7)
            with meter.counting("recording"):
                _walk(stack, FEED_S, rng)
            points = len(_get(stack, api_key, f"/api/v1/brackets/{bracket_id}/prices")["points"])
            with meter.counting("viewing"):
                polls = 0
                end = time.monotonic() + FEED_S
                while time.monotonic() < end:
                    _get(stack, api_key, f"/api/v1/brackets/{bracket_id}")
                    _get(stack, api_key, f"/api/v1/brackets/{bracket_id}/prices")
                    polls += 1
                    time.sleep(POLL_EVERY_S)
        finally:
            meter.uninstall()
    finally:
        stack.stop()
    per_hour = 3600.0 / FEED_S
    recording = _price(meter, "recording", 0)
    viewing = _price(meter, "viewing", 0)
    recording_usd = recording["usd"]["dynamodb_writes"] + recording["usd"]["dynamodb_reads"]
    recording_hour = round(recording_usd * per_hour, 6)
    viewing_hour = round(viewing["usd_total"] * per_hour, 6)
    updates = recording["aws_requests"].get("dynamodb.UpdateItem", 0)
    return {
        "headline": (
            f"console chart: USD {recording_hour:.4f} per open bracket-hour to record prices "
            f"({updates * per_hour:.0f} price writes/h), + USD {viewing_hour:.4f} per hour a tab watches it"
        ),
        "usd_per_open_bracket_hour_recording": recording_hour,
        "usd_per_hour_watching_one_bracket": viewing_hour,
        "price_points_recorded": points,
        "price_writes_per_hour": round(updates * per_hour),
        "polls": polls,
        "seconds_measured_each": FEED_S,
        "recording": recording,
        "viewing": viewing,
        "prices_usd": PRICES,
    }
