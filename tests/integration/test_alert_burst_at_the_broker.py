"""A burst of TradingView alerts on the local stack reaches the paper exchange paced within Kite's order rate limit.

The paper exchange enforces Kite's 10 order writes per second (any sliding second) and answers 429 past it, as
Kite does. The account-wide limiter gives 8 slots a second; here a busy process wakes late for every slot in an odd
Unix second (by 0.6 s), which, were late orders sent on the slot they missed, would put one second's orders on top
of the next second's at the broker. Every alert must still become exactly one entry at the broker, none refused
there for rate and no second holding more than 10.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from local.stack import LocalStack
from tests.support.stack import BRACKET_STACK_ENV, paper, stack_fixture, wait_for

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "burst-dev-key"
ALERTS = 40
KITE_ORDERS_PER_SECOND = 10

stack = stack_fixture(
    API_KEY,
    relay=False,
    extra_env={**BRACKET_STACK_ENV, "DEFAULT_MAX_OPEN_BRACKETS": "500", "DEFAULT_MAX_ORDER_VALUE": "100000000"},
)


def wakes_late_in_odd_seconds(sleep: Callable[[float], None] = time.sleep) -> Callable[[float], None]:
    """A sleep that overruns by 0.6 s whenever it should end in an odd Unix second (a process too busy to wake)."""

    def late_sleep(seconds: float) -> None:
        overrun = 0.6 if int(time.time() + seconds) % 2 else 0.0
        sleep(seconds + overrun)

    return late_sleep


@pytest.fixture
def late_waking_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack's order limiter (its Lambdas run in this process) sleeps with wakes_late_in_odd_seconds."""
    from bracketflow.adapters import broker
    from bracketflow.adapters.dynamo.ratelimit import OrderRateLimiter

    built = OrderRateLimiter.from_settings

    def from_settings(cls: type[OrderRateLimiter]) -> OrderRateLimiter:
        limiter = built()
        limiter._sleep = wakes_late_in_odd_seconds()
        return limiter

    monkeypatch.setattr(OrderRateLimiter, "from_settings", classmethod(from_settings))
    monkeypatch.setattr(broker, "_built", None)  # the next order builds the broker, and its limiter, anew


def alert(n: int) -> dict[str, Any]:
    # Below the market, so each entry rests OPEN: the entries are the only orders
    return {"apikey": API_KEY, "symbol": "NSE:INFY", "action": "buy", "product": "MIS", "quantity": "1",
            "entry_price": "1400", "sl_percent": "2", "target_percent": "4", "strategy": f"burst-{n}"}  # fmt: skip


def most_in_any_second(times: list[float]) -> int:
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_a_burst_of_alerts_reaches_the_broker_within_its_rate_limit(stack: LocalStack, late_waking_limiter):
    # Given the paper exchange at Kite's order limit, its book at INFY 1500
    paper(stack, "reset")
    settings = paper(stack, "config", {"market": "manual"})
    assert settings["order_rate_per_second"] == KITE_ORDERS_PER_SECOND
    paper(stack, "quotes", {"quotes": [{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95,
                                        "ask": 1500.05}]})  # fmt: skip
    # When a screener fires 40 alerts at once, each from its own connection
    url = f"{stack.api_url}/tradingview/webhook/bracket"
    answers: list[int] = [0] * ALERTS

    def send(n: int) -> None:
        answers[n] = requests.post(url, json=alert(n), timeout=60).status_code

    threads = [threading.Thread(target=send, args=(n,)) for n in range(ALERTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * ALERTS

    # Then every alert's entry reaches the broker, exactly once
    def entries() -> list[dict[str, Any]]:
        orders = paper(stack, "state", method="GET")["orders"]
        return [o for o in orders if o["transaction_type"] == "BUY"]

    placed = wait_for(f"{ALERTS} entries at the paper exchange", lambda: len(entries()) >= ALERTS, timeout_s=180)
    assert placed
    found = entries()
    assert len(found) == ALERTS
    assert len({o["tag"] for o in found}) == ALERTS
    # And the broker refused none of them for rate, nor saw more than its limit in any second
    assert paper(stack, "state", method="GET")["rate_limited"] == 0
    assert most_in_any_second([float(o["received_at"]) for o in found]) <= KITE_ORDERS_PER_SECOND
