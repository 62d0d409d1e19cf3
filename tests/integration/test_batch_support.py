"""Shared fixtures for the batch API and batch service tests (no tests of its own).

moto holds the brackets table (from template.yaml) and a stand-in batch state machine (one Pass state), so the API
can start executions without running the saga; the service tests drive the saga's steps themselves, against the
paper exchange.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import boto3
import pytest
from test_intake_support import REGION, Trader, _invoke, api_event, aws  # noqa: F401

LONG_PUT, SHORT_PUT, SHORT_CALL, LONG_CALL = (
    "NIFTY26DEC23000PE",
    "NIFTY26DEC23500PE",
    "NIFTY26DEC24500CE",
    "NIFTY26DEC25000CE",
)
QUOTES = {LONG_PUT: "102.15", SHORT_PUT: "228.65", SHORT_CALL: "236.85", LONG_CALL: "114.20"}


@pytest.fixture
def batch_aws(aws, monkeypatch):  # noqa: F811
    """The intake test AWS plus a stand-in batch state machine; POST wait is cut to a fraction of a second."""
    from bracketflow.adapters.aws import reset_clients

    definition = {"StartAt": "Hold", "States": {"Hold": {"Type": "Pass", "End": True}}}
    iam = boto3.client("iam", region_name=REGION)
    role_arn = iam.create_role(RoleName="sfn-batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    arn = aws.sfn.create_state_machine(name="batch", definition=json.dumps(definition), roleArn=role_arn)[
        "stateMachineArn"
    ]
    monkeypatch.setenv("BATCH_STATE_MACHINE_ARN", arn)
    monkeypatch.setenv("BATCH_WAIT_SECONDS", "0.3")
    reset_clients()
    aws.batch_state_machine_arn = arn
    return aws


def batch_executions(env: Any) -> list[dict[str, Any]]:
    return env.sfn.list_executions(stateMachineArn=env.batch_state_machine_arn)["executions"]


def batch_items(env: Any) -> list[dict[str, Any]]:
    return [i for i in env.table.scan()["Items"] if i["pk"].startswith("BATCH#")]


def leg(symbol: str = LONG_PUT, side: str = "BUY", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tradingsymbol": symbol,
        "exchange": "NFO",
        "transaction_type": side,
        "quantity": 75,
        "order_type": "MARKET",
        "product": "NRML",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def iron_condor() -> list[dict[str, Any]]:
    return [leg(LONG_PUT, "BUY"), leg(SHORT_PUT, "SELL"), leg(SHORT_CALL, "SELL"), leg(LONG_CALL, "BUY")]


def call_batch_api(method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
    return _invoke("functions.batch.app", api_event(method, path, body, **kwargs))


def post_batch(trader: Trader, orders: Any, **extra: Any) -> Any:
    return call_batch_api(
        "POST", "/api/v1/batchorders", {"orders": orders, **extra}, headers={"X-API-KEY": trader.api_key}
    )


def quote_condor(paper: Any) -> None:
    quotes = []
    for symbol, ltp in QUOTES.items():
        price = Decimal(ltp)
        quotes.append(
            {"exchange": "NFO", "tradingsymbol": symbol, "ltp": ltp, "bid": str(price - Decimal("0.05")),
             "ask": str(price + Decimal("0.05"))}
        )  # fmt: skip
    paper.set_quotes(quotes)
