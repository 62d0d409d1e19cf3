"""Helpers for the exit, stop-sync and live-streamer tests (no tests here): moto with the real table schema and the
queues, the paper exchange as the broker, and a PROTECTED bracket seeded the way the bracket workflow leaves one:
an entry filled at the paper exchange, a two-leg GTT protecting it, and the bracket stored with that GTT's id.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.support.intake import REGION, brackets_table_schema

TABLE = "bracketflow-exit-test"
INFY_TOKEN = 408065


@dataclass
class ExitWorld:
    paper: Any
    table: Any
    sqs: Any
    queues: dict[str, str]

    def orders(self, tag: str | None = None) -> list[dict[str, Any]]:
        orders = self.paper.state()["orders"]
        return [o for o in orders if tag is None or o.get("tag") == tag]

    def gtt(self, gtt_id: str | int) -> dict[str, Any]:
        return next(g for g in self.paper.state()["gtts"] if str(g["id"]) == str(gtt_id))

    def messages(self, name: str, wait_s: int = 0) -> list[dict[str, Any]]:
        out = self.sqs.receive_message(QueueUrl=self.queues[name], MaxNumberOfMessages=10, WaitTimeSeconds=wait_s)
        return [json.loads(m["Body"]) for m in out.get("Messages") or []]


@pytest.fixture
def world(monkeypatch, paper_exchange) -> Any:
    """moto (table + exit/stop-sync/order-events/control queues) and settings that point at the paper exchange."""
    from bracketflow.adapters.aws import reset_clients

    env = {
        "TABLE_NAME": TABLE,
        "BROKER": "paper",
        "BROKER_BASE_URL": paper_exchange.base_url,
        "BROKER_TICKER_URL": paper_exchange.ws_url,
        "BROKER_SECRET_NAME": "bracketflow/exit-test-broker",
        "BROKER_LOOKUP_PAUSE_S": "0.05",
        "BROKER_TIMEOUT_S": "1",
        "BROKER_MAX_ATTEMPTS": "2",
        "STAGE": "local",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        boto3.resource("dynamodb", region_name=REGION).create_table(TableName=TABLE, **brackets_table_schema())
        sqs = boto3.client("sqs", region_name=REGION)
        queues = {}
        for name, var in (
            ("exits", "EXIT_QUEUE_URL"),
            ("stop-sync", "STOP_SYNC_QUEUE_URL"),
            ("order-events", "ORDER_EVENTS_QUEUE_URL"),
            ("control", "STREAMER_CONTROL_QUEUE_URL"),
        ):
            queues[name] = sqs.create_queue(QueueName=f"bf-{name}")["QueueUrl"]
            monkeypatch.setenv(var, queues[name])
        reset_clients()
        yield ExitWorld(paper_exchange, boto3.resource("dynamodb", region_name=REGION).Table(TABLE), sqs, queues)
        reset_clients()


_ids = itertools.count(1)


def seed_protected(
    paper: Any,
    *,
    ltp: Decimal = Decimal("1500"),
    sl: Decimal = Decimal("1480"),
    target: Decimal = Decimal("1560"),
    quantity: int = 10,
    trail: dict[str, str] | None = None,
    side: str = "BUY",
    breakeven_at: Decimal | None = None,
) -> Any:
    """A PROTECTED INFY bracket: entry filled at the paper exchange, a real two-leg GTT, stored in the table."""
    from bracketflow.adapters.broker import get_broker
    from bracketflow.adapters.broker.port import GttLeg, GttRequest, OrderRequest
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.domain.bracket import Bracket, BracketSpec, LegOrder, TrailSpec
    from bracketflow.domain.enums import Action, BracketStatus, Exchange, LegRole, OrderStatus, Product, TrailType
    from bracketflow.domain.events import ProtectionPlaced
    from bracketflow.domain.ids import AccountId, order_tag

    trail = {"type": "percent", "value": "1"} if trail is None else trail
    paper.set_quotes(
        [
            {
                "exchange": "NSE",
                "tradingsymbol": "INFY",
                "ltp": str(ltp),
                "bid": str(ltp),
                "ask": str(ltp + Decimal("0.05")),
            }
        ]
    )
    spec = BracketSpec(
        account_id=AccountId("acc_asha"),
        symbol="INFY",
        exchange=Exchange.NSE,
        product=Product.MIS,
        action=Action(side),
        quantity=quantity,
        entry_price=ltp,
        sl_price=sl,
        target_price=target,
        trail=TrailSpec(TrailType(trail["type"]), Decimal(trail["value"])) if trail else None,
        breakeven_at=breakeven_at,
    )
    created = Bracket.register(spec, now=datetime.now(UTC))
    broker = get_broker()
    entry_id = broker.place_order(
        OrderRequest("NSE", "INFY", side, quantity, "MIS", "MARKET", tag=order_tag(created.id, "ENTRY"))
    )
    exit_side = "SELL" if side == "BUY" else "BUY"
    lower, upper = (sl, target) if side == "BUY" else (target, sl)
    stop_limit = sl - Decimal("5") if side == "BUY" else sl + Decimal("5")
    legs = (
        (GttLeg(exit_side, quantity, stop_limit, "MIS"), GttLeg(exit_side, quantity, target, "MIS"))
        if side == "BUY"
        else (GttLeg(exit_side, quantity, target, "MIS"), GttLeg(exit_side, quantity, stop_limit, "MIS"))
    )
    gtt_id = broker.create_gtt(GttRequest("NSE", "INFY", (lower, upper), ltp, legs))
    protected = dataclasses.replace(
        created,
        status=BracketStatus.PROTECTED,
        version=4,
        entry=LegOrder(LegRole.ENTRY, OrderStatus.EXECUTED, entry_id, quantity, quantity, ltp),  # type: ignore[arg-type]
        gtt_id=str(gtt_id),
    )
    event = ProtectionPlaced(protected.id, data={"gtt_id": str(gtt_id), "stop_price": sl}, bracket_version=4)
    BracketRepository().create(protected, [event])
    return protected


def exit_message(bracket_id: str, *, stop: str, ltp: str, reason: str = "TRAIL_STOP") -> dict[str, Any]:
    return {
        "bracket_id": bracket_id,
        "reason": reason,
        "ltp": ltp,
        "stop_price": stop,
        "detected_at": "2026-04-01T04:00:00.000000Z",
        "message_index": 7,
        "packet_index": 0,
    }


def sqs_event(*bodies: tuple[str, dict[str, Any] | str]) -> dict[str, Any]:
    """An SQS Lambda event; each body comes with its message id (the same id = a redelivery)."""
    return {
        "Records": [
            {
                "messageId": message_id,
                "receiptHandle": f"rh-{next(_ids)}",
                "body": body if isinstance(body, str) else json.dumps(body),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:ap-south-1:123456789012:bf-exits",
                "awsRegion": REGION,
            }
            for message_id, body in bodies
        ]
    }
