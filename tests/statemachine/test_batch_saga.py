"""The batch saga (statemachine/batch.asl.json) run for real: moto's Step Functions interpreter, our task Lambdas
in-process, the paper exchange as the broker, all through the local stack and its API on 127.0.0.1.

What must hold (issue 7): a 4-leg NIFTY iron condor is placed in full; when the broker rejects the third leg, every
other leg ends cancelled (if open) or squared off (if filled) and the batch is ROLLED_BACK; with rollback off the
partial result is reported as it is; a compensation that fails transiently is retried until it succeeds.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests

from local.stack import LocalStack, StackConfig

API_KEY = "batch-saga-key"
LONG_PUT, SHORT_PUT, SHORT_CALL, LONG_CALL = (
    "NIFTY26DEC23000PE",
    "NIFTY26DEC23500PE",
    "NIFTY26DEC24500CE",
    "NIFTY26DEC25000CE",
)
QUOTES = {LONG_PUT: "102.15", SHORT_PUT: "228.65", SHORT_CALL: "236.85", LONG_CALL: "114.20"}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """The whole stack on free ports; compensation retries made short (1 s, 4 attempts) so a test can see them."""
    config = StackConfig(
        api_port=0,
        moto_port=0,
        paper_port=0,
        local_api_key=API_KEY,
        streamer=False,
        schedules=False,
        parameter_overrides={"BatchRollbackRetryIntervalSeconds": "1", "BatchRollbackMaxAttempts": "4"},
        extra_env={"BATCH_WAIT_SECONDS": "20", "BROKER_MAX_ATTEMPTS": "2", "BROKER_LOOKUP_PAUSE_S": "0.05"},
    )
    local = LocalStack(config)
    local.start()
    try:
        assert local.dev_account_seeded
        yield local
    finally:
        local.stop()


def paper(stack: LocalStack, method: str, path: str, body: Any = None) -> Any:
    response = requests.request(method, f"{stack.paper_url}/_paper/{path}", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["data"]


@pytest.fixture
def market(stack: LocalStack) -> LocalStack:
    """A clean paper exchange with the condor's strikes quoted (a 0.05 spread around the master's price)."""
    paper(stack, "POST", "reset")
    quotes = []
    for symbol, ltp in QUOTES.items():
        price = Decimal(ltp)
        quotes.append(
            {"exchange": "NFO", "tradingsymbol": symbol, "ltp": ltp, "bid": str(price - Decimal("0.05")),
             "ask": str(price + Decimal("0.05"))}
        )  # fmt: skip
    paper(stack, "POST", "quotes", {"quotes": quotes})
    return stack


def leg(symbol: str, side: str, order_type: str = "MARKET", price: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tradingsymbol": symbol,
        "exchange": "NFO",
        "transaction_type": side,
        "quantity": 75,
        "order_type": order_type,
        "product": "NRML",
    }
    if price is not None:
        out["price"] = price
    return out


def iron_condor(**kinds: tuple[str, str | None]) -> list[dict[str, Any]]:
    legs = [(LONG_PUT, "BUY"), (SHORT_PUT, "SELL"), (SHORT_CALL, "SELL"), (LONG_CALL, "BUY")]
    return [leg(symbol, side, *kinds.get(symbol, ("MARKET", None))) for symbol, side in legs]


def post_batch(stack: LocalStack, orders: list[dict[str, Any]], rollback: bool = True) -> requests.Response:
    return requests.post(
        f"{stack.api_url}/api/v1/batchorders",
        json={"orders": orders, "rollback_on_failure": rollback, "wait": True},
        headers={"X-API-KEY": API_KEY},
        timeout=60,
    )


def broker_orders(stack: LocalStack) -> list[dict[str, Any]]:
    response = requests.get(
        f"{stack.paper_url}/orders", headers={"Authorization": "token paper:paper-token", "X-Kite-Version": "3"},
        timeout=10,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return response.json()["data"]


def net_positions(stack: LocalStack) -> dict[str, int]:
    response = requests.get(
        f"{stack.paper_url}/portfolio/positions",
        headers={"Authorization": "token paper:paper-token", "X-Kite-Version": "3"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return {row["tradingsymbol"]: int(row["quantity"]) for row in response.json()["data"]["net"]}


def test_a_four_leg_iron_condor_is_placed_in_full(market):
    # Given a quoted market for the four strikes
    # When the trader sends the iron condor as one batch and waits for it
    answer = post_batch(market, iron_condor())
    # Then it is final and PLACED, every leg accepted and filled at the broker
    body = answer.json()
    assert answer.status_code == 200, body
    assert body["batch_status"] == "PLACED" and body["total_orders"] == 4
    assert body["succeeded"] == 4 and body["failed"] == 0 and len(body["order_ids"]) == 4
    assert body["completed_at"] and body["created_at"] <= body["completed_at"]
    assert [leg["status"] for leg in body["legs"]] == ["PLACED"] * 4
    # And the broker holds exactly those four orders, long the wings and short the body
    orders = {o["order_id"]: o for o in broker_orders(market)}
    assert set(orders) == set(body["order_ids"])
    assert net_positions(market) == {LONG_PUT: 75, SHORT_PUT: -75, SHORT_CALL: -75, LONG_CALL: 75}
