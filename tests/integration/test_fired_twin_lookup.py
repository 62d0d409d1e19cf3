"""Looking for a fired GTT of an earlier protection attempt reads the claims of its few look-alikes only.

Before flattening, EmergencyExit asks whether a GTT exactly like the bracket's protection, created since its fill,
already fired (services/protect.py adopt_fired_twin): its order would then be the exit. The broker lists every GTT that
fired today, and checking which bracket claimed each one cost one consistent read per GTT: late in a busy session the
look took longer than the function's 45 s, and every emergency flatten timed out before it was placed, leaving the
positions it was for unprotected. Against the paper exchange (its GTT book) and moto (the claims table).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
import pytest
from moto import mock_aws

from bracketflow.adapters.aws import resource
from bracketflow.adapters.broker.kite import KiteBroker
from bracketflow.adapters.broker.kite_http import static_credentials
from bracketflow.adapters.broker.port import GttLeg, GttRequest
from bracketflow.domain.bracket import Bracket, BracketSpec
from bracketflow.domain.enums import Action, BracketStatus, Exchange, OrderStatus, Product
from bracketflow.domain.ids import AccountId
from bracketflow.services.protect import adopt_fired_twin
from tests.support.intake import REGION, brackets_table_schema

TABLE = "bracketflow-twin-lookup"
FIRED_TODAY = 30


@pytest.fixture
def broker(monkeypatch, paper_exchange) -> Any:
    monkeypatch.setenv("TABLE_NAME", TABLE)
    paper_exchange.set_quotes(
        [
            {"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500.05},
            {"exchange": "NSE", "tradingsymbol": "TCS", "ltp": 4000, "bid": 3999.9, "ask": 4000.1},
        ]
    )
    with mock_aws():
        boto3.resource("dynamodb", region_name=REGION).create_table(TableName=TABLE, **brackets_table_schema())
        credentials = static_credentials(paper_exchange.api_key, paper_exchange.access_token)
        yield KiteBroker(paper_exchange.base_url, credentials)


def filled_bracket() -> Bracket:
    spec = BracketSpec(
        account_id=AccountId("acc_1"),
        symbol="INFY",
        exchange=Exchange.NSE,
        product=Product.MIS,
        action=Action.BUY,
        quantity=10,
        entry_price=Decimal("1500"),
        sl_price=Decimal("1480"),
        target_price=Decimal("1550"),
    )
    now = datetime.now(UTC) - timedelta(seconds=5)
    b = Bracket.register(spec, now=now)
    b = b.transition(BracketStatus.ENTRY_PENDING, now=now, entry=b.entry.transition(OrderStatus.SENT_TO_BROKER))
    filled = b.entry.transition(OrderStatus.EXECUTED, filled_quantity=10, average_price=Decimal("1500"))
    return b.transition(BracketStatus.ENTRY_FILLED, now=now, entry=filled)


def test_the_look_for_a_fired_twin_reads_no_claim_of_an_unrelated_gtt(broker, paper_exchange):
    # Given a session in which many other GTTs fired (TCS sell-stops the market went through)
    for n in range(FIRED_TODAY):
        leg = GttLeg("SELL", 1, Decimal("3980") - n, "MIS")
        broker.create_gtt(GttRequest("NSE", "TCS", (Decimal("3990") - n,), Decimal("4000"), (leg,)))
    paper_exchange.set_quotes([{"exchange": "NSE", "tradingsymbol": "TCS", "ltp": 3900, "bid": 3899.9, "ask": 3900.1}])
    assert sum(g.status == "triggered" for g in broker.gtts()) == FIRED_TODAY
    reads: list[str] = []
    events = resource("dynamodb").meta.client.meta.events
    events.register("before-call.dynamodb.GetItem", lambda **_: reads.append("GetItem"))
    # When an INFY bracket whose protection failed looks for a fired GTT of its own before flattening
    found = adopt_fired_twin(broker, filled_bracket())
    # Then there is none, and no GTT's claim was read to learn it
    assert found is None
    assert reads == []
