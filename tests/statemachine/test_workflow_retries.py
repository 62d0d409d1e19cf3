"""Errors the bracket workflow must retry, run for real on the local stack (moto's interpreter, our Lambdas, the paper
exchange): a burst that drains the account-wide order rate limiter makes a task fail with RateLimited, which a
moment later would succeed. It must be retried, not end the bracket in NEEDS_REVIEW with its order live.

The burst is staged at the limiter's bucket in DynamoDB (the other Lambdas' grants, as a burst of orders leaves
them): the test keeps the bucket full until the workflow's history shows the task failing with RateLimited.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from local.stack import LocalStack
from tests.support.stack import (
    BRACKET_STACK_ENV,
    bracket,
    broker_orders,
    event_types,
    market_fixture,
    place,
    stack_fixture,
    wait_for,
    wait_for_execution_end,
    wait_for_status,
)

pytestmark = pytest.mark.xdist_group("stack")

API_KEY = "workflow-retries-key"
ENTRY_TIMEOUT_S = 3

stack = stack_fixture(
    API_KEY,
    relay=True,
    extra_env={**BRACKET_STACK_ENV, "ENTRY_TIMEOUT_S": str(ENTRY_TIMEOUT_S), "ORDER_RATE_LIMIT_WAIT_S": "0.2"},
)


market = market_fixture(set_aside=False)


class Burst:
    """Keeps the broker account's order bucket full (every token just spent) until stopped."""

    def __init__(self) -> None:
        from bracketflow.adapters.dynamo.ratelimit import BUCKET_SK, bucket_pk
        from bracketflow.settings import get_settings

        settings = get_settings()
        self.key = {"pk": bucket_pk(settings.broker_account), "sk": BUCKET_SK}
        self.per_minute = settings.order_rate_per_minute
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._hold, name="order-burst", daemon=True)

    def _hold(self) -> None:
        from bracketflow.adapters.dynamo.table import table

        version = 10**9
        while not self.stopped.is_set():
            version += 1
            now_ms = int(time.time() * 1000)
            # A minute's worth of slots given this instant: the next free one is a minute away, far past any wait
            table().put_item(Item={**self.key, "settled": [now_ms] * self.per_minute, "grants": [], "version": version})
            self.stopped.wait(0.05)

    def __enter__(self) -> Burst:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """The burst is over and its minute has passed: the account's slots are free again (a test does not wait
        the real minute the per-minute limit would hold them)."""
        from bracketflow.adapters.dynamo.table import table

        self.stopped.set()
        self.thread.join(5)
        table().put_item(Item={**self.key, "settled": [], "grants": [], "version": 2 * 10**9})


def failed_with(stack: LocalStack, bracket_id: str, error: str) -> bool:
    """Whether the bracket's execution history shows a task failing with `error`."""
    sfn = stack.client("stepfunctions")
    arn = stack.state_machine_arn("BracketStateMachine").replace(":stateMachine:", ":execution:") + f":{bracket_id}"
    history: list[dict[str, Any]] = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return any(
        isinstance(details, dict) and details.get("error") == error
        for event in history
        for name, details in event.items()
        if name.endswith("EventDetails")
    )


def test_an_entry_cancel_refused_by_the_order_limiter_is_retried(market):
    # Given a BUY limit at 1490 that cannot fill with INFY offered at 1500, waiting for its 3 s timeout
    bracket_id = place(market, entry_price="1490", sl_price="1470", target_price="1530")
    placed = wait_for_status(bracket_id, "ENTRY_PENDING")
    # When its cancel at the timeout meets a burst that holds every order token of the account
    with Burst():
        wait_for("CancelEntry failing with RateLimited", lambda: failed_with(market, bracket_id, "RateLimited"))
    # Then the cancel is tried again once tokens are free: the entry is cancelled at the broker, nothing is left
    done = wait_for_status(bracket_id, "CANCELLED", "NEEDS_REVIEW", "FAILED", timeout_s=60)
    order = next(o for o in broker_orders(market, "INFY") if o["order_id"] == placed.entry.broker_order_id)
    assert (done.status.value, order["status"]) == ("CANCELLED", "CANCELLED")
    assert "FlaggedForReview" not in event_types(bracket_id)
    assert wait_for_execution_end(market, bracket_id)["status"] == "SUCCEEDED"
    assert bracket(bracket_id).entry.filled_quantity == 0
