"""functions/notify and functions/websocket with moto: stream records come from real repository writes.

The table has its stream on (NEW_AND_OLD_IMAGES, as in template.yaml); pushes go to moto's API Gateway management
API, which keeps what each connection was sent.
"""

from __future__ import annotations

import importlib.util
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.support.intake import FakeContext, brackets_table_schema

ROOT = Path(__file__).resolve().parents[2]
TABLE = "bracketflow-notify-test"
REGION = "ap-south-1"
MANAGEMENT_URL = "https://abc123.execute-api.ap-south-1.amazonaws.com/dev"


def load_handler(folder: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"fn_{folder}_under_test", ROOT / "functions" / folder / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler


class Stream:
    """Reads the table's stream from where it was when the test began.

    Through moto's in-process stream backend: moto's HTTP dispatch of DynamoDB Streams answers "not yet implemented"
    under mock_aws (it works in server mode, which the local stack uses). The records are the ones Lambda gets.
    """

    def __init__(self, table_name: str):
        from moto.dynamodbstreams.models import dynamodbstreams_backends

        self.backend = dynamodbstreams_backends["123456789012"][REGION]
        arn = boto3.client("dynamodb", region_name=REGION).describe_table(TableName=table_name)["Table"][
            "LatestStreamArn"
        ]
        shard = self.backend.describe_stream(arn)["Shards"][0]["ShardId"]
        self.iterator = self.backend.get_shard_iterator(arn, shard, "LATEST").arn

    def records(self) -> list[dict[str, Any]]:
        got = self.backend.get_records(self.iterator, 1000)
        self.iterator = got["NextShardIterator"]
        return json.loads(json.dumps(got["Records"], default=str))  # as the Lambda event carries them


@pytest.fixture
def aws(monkeypatch):
    from bracketflow.adapters.aws import reset_clients
    from bracketflow.adapters.secrets import reset_pepper_cache
    from bracketflow.adapters.telegram import reset_credentials_cache

    with mock_aws():
        ddb = boto3.resource("dynamodb", region_name=REGION)
        table = ddb.create_table(
            TableName=TABLE,
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            **brackets_table_schema(),
        )
        monkeypatch.setenv("TABLE_NAME", TABLE)
        monkeypatch.setenv("STAGE", "local")
        monkeypatch.setenv("WEBSOCKET_MANAGEMENT_URL", MANAGEMENT_URL)
        monkeypatch.delenv("TELEGRAM_SECRET_NAME", raising=False)
        reset_clients()
        reset_pepper_cache()
        reset_credentials_cache()
        yield table
        reset_pepper_cache()
        reset_credentials_cache()


def sent_to(connection_id: str) -> list[dict[str, Any]]:
    """What moto's management API received for one connection (JSON documents back to back), in order."""
    from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends

    data = apigatewaymanagementapi_backends["123456789012"][REGION].connections[connection_id].data.decode()
    decoder, out, at = json.JSONDecoder(), [], 0
    while at < len(data):
        doc, at = decoder.raw_decode(data, at)
        out.append(doc)
    return out


def new_bracket(account_id: str = "acc_asha"):
    from bracketflow.domain.bracket import Bracket, BracketSpec
    from bracketflow.domain.enums import Action, Exchange, Product
    from bracketflow.domain.ids import AccountId

    spec = BracketSpec(
        account_id=AccountId(account_id),
        symbol="INFY",
        exchange=Exchange.NSE,
        product=Product.MIS,
        action=Action.BUY,
        quantity=10,
        entry_price=Decimal("1500"),
        sl_price=Decimal("1480"),
        target_price=Decimal("1550"),
    )
    return Bracket.register(spec)


def live_a_bracket(account_id: str = "acc_asha"):
    """Register a bracket and take it CREATED -> ENTRY_PENDING -> ENTRY_FILLED -> PROTECTED, with its events."""
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.domain.enums import BracketStatus, OrderStatus
    from bracketflow.domain.events import BracketRegistered, EntryFilled, EntryPlaced, ProtectionPlaced
    from bracketflow.domain.ids import BrokerOrderId

    repo = BracketRepository()
    b = new_bracket(account_id)
    repo.create(b, [BracketRegistered(bracket_id=b.id, data={"symbol": "INFY"})])
    leg = b.entry.transition(OrderStatus.SENT_TO_BROKER, broker_order_id=BrokerOrderId("250101000000001"))
    b = repo.transition(
        b, BracketStatus.ENTRY_PENDING, EntryPlaced(b.id, {"broker_order_id": "250101000000001"}), entry=leg
    )
    leg = b.entry.transition(OrderStatus.EXECUTED, filled_quantity=10, average_price=Decimal("1499.5"))
    b = repo.transition(b, BracketStatus.ENTRY_FILLED, EntryFilled(b.id, {"filled_quantity": 10}), entry=leg)
    b = repo.transition(b, BracketStatus.PROTECTED, ProtectionPlaced(b.id, {"gtt_id": "77"}), gtt_id="77")
    return b


def subscribe(connection_id: str, account_id: str) -> None:
    from bracketflow.adapters.dynamo import connections

    connections.save_connection(connection_id, account_id, "2026-01-01T00:00:00Z", None)
    connections.subscribe(connection_id, account_id, "2026-01-01T00:00:00Z")


def test_a_subscriber_gets_every_status_change_of_a_bracket_in_order(aws):
    # Given Asha subscribed on one connection and Ravi on another
    subscribe("asha-1", "acc_asha")
    subscribe("ravi-1", "acc_ravi")
    stream = Stream(TABLE)
    # When Asha's bracket goes from CREATED to PROTECTED and the stream batch reaches notify
    bracket = live_a_bracket("acc_asha")
    result = load_handler("notify")({"Records": stream.records()}, FakeContext())
    # Then Asha got one status-change message per status, in order, each pointing at the one before
    updates = [m for m in sent_to("asha-1") if m["type"] == "bracket_order_update" and "bracket_status" in m]
    assert [m["bracket_status"] for m in updates] == ["CREATED", "ENTRY_PENDING", "ENTRY_FILLED", "PROTECTED"]
    assert [m["previous_status"] for m in updates] == [None, "CREATED", "ENTRY_PENDING", "ENTRY_FILLED"]
    assert [m["status"] for m in updates] == ["created", "entry_pending", "entry_filled", "protected"]
    assert [m["version"] for m in updates] == [1, 2, 3, 4] and updates[-1]["bracket_id"] == bracket.id
    assert updates[2]["filled_quantity"] == 10 and updates[2]["average_price"] == "1499.5"
    assert all(m["timestamp"].endswith("Z") and m["account_id"] == "acc_asha" for m in updates)
    # And the named update for the placed entry came right after the ENTRY_PENDING change
    kinds = [m.get("bracket_status") or m["status"] for m in sent_to("asha-1") if m["type"] == "bracket_order_update"]
    assert kinds.index("entry_order_placed") == kinds.index("ENTRY_PENDING") + 1
    # And Ravi, subscribed to his own account only, got nothing of Asha's
    assert sent_to("ravi-1") == []
    assert result["pushed"] == len(sent_to("asha-1")) and result["gone"] == 0


def test_order_updates_follow_the_streaming_notes_shape(aws):
    subscribe("asha-1", "acc_asha")
    stream = Stream(TABLE)
    live_a_bracket("acc_asha")
    load_handler("notify")({"Records": stream.records()}, FakeContext())
    orders = [m for m in sent_to("asha-1") if m["type"] == "order_update"]
    # the entry was sent (OPEN) and then filled (COMPLETE): two updates of the same order, in that order
    assert [m["data"]["status"] for m in orders] == ["OPEN", "COMPLETE"]
    done = orders[-1]
    assert set(done) == {"type", "account_id", "data", "timestamp"} and done["account_id"] == "acc_asha"
    assert done["data"]["order_id"] == "250101000000001" and done["data"]["filled_quantity"] == 10
    assert done["data"]["average_price"] == "1499.5" and done["data"]["tradingsymbol"] == "INFY"
    assert done["data"]["transaction_type"] == "BUY" and done["data"]["role"] == "ENTRY"


def test_nothing_is_pushed_to_a_connection_that_never_subscribed(aws):
    from bracketflow.adapters.dynamo import connections

    # Given a connection that is open for Asha's account but did not subscribe
    connections.save_connection("asha-quiet", "acc_asha", "2026-01-01T00:00:00Z", None)
    stream = Stream(TABLE)
    live_a_bracket("acc_asha")
    result = load_handler("notify")({"Records": stream.records()}, FakeContext())
    assert result["pushed"] == 0


def test_stream_records_that_are_not_brackets_or_events_make_no_message(aws):
    from bracketflow.services.notify import collect

    subscribe("asha-1", "acc_asha")  # WSCONN/WSSUB items are in the stream too
    stream = Stream(TABLE)
    aws.put_item(Item={"pk": "ORDERUPDATE#1#OPEN#0", "sk": "DEDUPE", "type": "ORDERUPDATE"})
    box = collect(stream.records())
    assert box.messages == [] and box.notices == []


def test_a_blocked_bracket_makes_a_telegram_notice_but_no_named_update(aws):
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.domain.enums import BlockKind
    from bracketflow.domain.events import BracketBlocked, BracketRegistered
    from bracketflow.services.notify import collect

    repo = BracketRepository()
    stream = Stream(TABLE)
    b = new_bracket()
    repo.create(b, [BracketRegistered(bracket_id=b.id)])
    blocked = b.block(BlockKind.RISK_BLOCKED, "DAILY_LOSS_HIT")
    repo.save(b, blocked, [BracketBlocked(b.id, {"kind": "RISK_BLOCKED", "tag": blocked.tags[0]})])
    box = collect(stream.records())
    assert [(kind, data.get("tag")) for _, kind, data in box.notices] == [
        ("BracketBlocked", "RISK_BLOCKED:DAILY_LOSS_HIT")
    ]
    assert [m["status"] for _, m in box.messages] == ["created", "failed"]
    assert box.messages[-1][1]["tags"] == ["RISK_BLOCKED:DAILY_LOSS_HIT"]


# ---------- the WebSocket routes ----------


def ws_event(route: str, connection_id: str, body: Any = None, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "requestContext": {"routeKey": route, "connectionId": connection_id, "identity": {"sourceIp": "10.0.0.1"}},
        **extra,
    }
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
    return event


@pytest.fixture
def asha_key(aws) -> str:
    from bracketflow.services.accounts import create_account

    create_account("Ravi", account_id="acc_ravi")
    return create_account("Asha", account_id="acc_asha")[1]


@pytest.mark.parametrize(
    "auth",
    [{}, {"queryStringParameters": {"apikey": "bfk_wrong"}}, {"headers": {"X-API-KEY": "bfk_wrong"}}],
    ids=["no key", "wrong key in query", "wrong key in header"],
)
def test_connect_without_a_valid_api_key_is_refused_and_records_nothing(aws, asha_key, auth):
    answer = load_handler("websocket")(ws_event("$connect", "c1", **auth), FakeContext())
    assert answer["statusCode"] == 401 and json.loads(answer["body"])["status"] == "error"
    assert "Item" not in aws.get_item(Key={"pk": "WSCONN#c1", "sk": "CONN"})


@pytest.mark.parametrize("where", ["query", "header"])
def test_connect_with_the_api_key_opens_a_connection_for_its_account(aws, asha_key, where):
    auth = {"queryStringParameters": {"apikey": asha_key}} if where == "query" else {"headers": {"x-api-key": asha_key}}
    answer = load_handler("websocket")(ws_event("$connect", "c1", **auth), FakeContext())
    assert answer["statusCode"] == 200
    item = aws.get_item(Key={"pk": "WSCONN#c1", "sk": "CONN"})["Item"]
    assert item["account_id"] == "acc_asha" and item["source_ip"] == "10.0.0.1" and int(item["expires_at"]) > 0


def test_subscribe_ping_and_disconnect(aws, asha_key):
    handler = load_handler("websocket")
    handler(ws_event("$connect", "c1", queryStringParameters={"apikey": asha_key}), FakeContext())
    # subscribing to someone else's account is refused and subscribes nothing
    refused = json.loads(
        handler(ws_event("subscribe", "c1", {"action": "subscribe", "account_id": "acc_ravi"}), FakeContext())["body"]
    )
    assert refused["type"] == "error" and "own account" in refused["message"]
    from bracketflow.adapters.dynamo import connections

    assert connections.subscribers("acc_ravi") == []
    # subscribing to her own (named, or by default) works
    ok = json.loads(
        handler(ws_event("subscribe", "c1", {"action": "subscribe", "account_id": "acc_asha"}), FakeContext())["body"]
    )
    assert ok["type"] == "subscribed" and ok["account_id"] == "acc_asha"
    assert connections.subscribers("acc_asha") == ["c1"]
    pong = json.loads(handler(ws_event("ping", "c1", {"action": "ping"}), FakeContext())["body"])
    assert pong["type"] == "pong" and pong["timestamp"]
    # junk goes to $default and gets a clear error
    junk = json.loads(handler(ws_event("$default", "c1", "not json"), FakeContext())["body"])
    assert junk["type"] == "error" and "JSON" in junk["message"]
    other = json.loads(handler(ws_event("$default", "c1", {"action": "buy"}), FakeContext())["body"])
    assert other["type"] == "error" and "'buy'" in other["message"]
    # disconnect forgets the connection and its subscription
    handler(ws_event("$disconnect", "c1"), FakeContext())
    assert connections.subscribers("acc_asha") == [] and connections.get_connection("c1") is None


def test_an_unknown_connection_cannot_subscribe(aws, asha_key):
    answer = json.loads(
        load_handler("websocket")(ws_event("subscribe", "ghost", {"action": "subscribe"}), FakeContext())["body"]
    )
    assert answer["type"] == "error" and "connect again" in answer["message"]


def test_a_failed_telegram_never_fails_the_batch_or_the_pushes(aws, monkeypatch):
    # Given Telegram configured but its secret unreadable (deleted), and a subscriber
    monkeypatch.setenv("TELEGRAM_SECRET_NAME", "bracketflow/test/telegram-missing")
    subscribe("asha-1", "acc_asha")
    stream = Stream(TABLE)
    live_a_bracket("acc_asha")
    # When notify runs
    result = load_handler("notify")({"Records": stream.records()}, FakeContext())
    # Then the pushes went out and no Telegram message did, without an exception
    assert result["pushed"] > 0 and result["telegrams"] == 0


def test_an_expired_subscription_is_not_pushed_to(aws):
    from bracketflow.adapters.dynamo import connections

    subscribe("asha-old", "acc_asha")
    key = connections.subscription_key("acc_asha", "asha-old")
    aws.update_item(Key=key, UpdateExpression="SET expires_at = :t", ExpressionAttributeValues={":t": 1})
    assert connections.subscribers("acc_asha") == []


def test_leg_updates_without_a_broker_order_make_no_order_update():
    from bracketflow.services.notify import order_messages

    new = {"account_id": "a", "entry": {"role": "ENTRY", "status": "FAILED"}, "updated_at": "t"}
    assert order_messages(new, {"entry": {"role": "ENTRY", "status": "CREATED"}}) == []
    same = {"account_id": "a", "entry": {"broker_order_id": "1", "status": "SENT_TO_BROKER"}}
    assert order_messages(same, same) == []


# ---------- the kill switch ----------


def test_a_kill_switch_trip_reaches_subscribers_once_as_an_account_update(aws):
    from decimal import Decimal

    from bracketflow.services import kill_switch

    # Given Asha and Ravi subscribed to their own accounts
    subscribe("asha-1", "acc_asha")
    subscribe("ravi-1", "acc_ravi")
    stream = Stream(TABLE)
    # When the loss check trips Asha's kill switch, and trips it again a minute later (still halted)
    detail = {"pnl": Decimal("-612.5"), "limit": Decimal("500")}
    assert kill_switch.flatten("acc_asha", kill_switch.DAILY_LOSS_HIT, by="risk_watch", detail=detail)["first_today"]
    assert not kill_switch.flatten("acc_asha", kill_switch.DAILY_LOSS_HIT, by="risk_watch", detail=detail)[
        "first_today"
    ]
    load_handler("notify")({"Records": stream.records()}, FakeContext())
    # Then Asha got one account update saying the kill switch flattened her account, why, and until when
    (update,) = [m for m in sent_to("asha-1") if m["type"] == "account_update"]
    assert update["status"] == "kill_switch" and update["account_id"] == "acc_asha"
    assert update["reason"] == "DAILY_LOSS_HIT" and update["tag"] == "RISK_BLOCKED:DAILY_LOSS_HIT"
    assert update["by"] == "risk_watch" and update["data"] == {"pnl": "-612.5", "limit": 500}
    halt = aws.get_item(Key={"pk": "HALT#acc_asha", "sk": halt_day()})["Item"]
    assert update["blocked_until"] == halt["until"] and update["timestamp"] == halt["at"]
    # And Ravi, whose account trades on, got nothing
    assert sent_to("ravi-1") == []


def test_a_flatten_by_hand_says_so_without_loss_figures(aws):
    from bracketflow.services import kill_switch
    from bracketflow.services.notify import collect

    stream = Stream(TABLE)
    kill_switch.flatten("acc_asha", kill_switch.FLATTENED, by="api")
    box = collect(stream.records())
    ((account, update),) = [(a, m) for a, m in box.messages if m["type"] == "account_update"]
    assert account == "acc_asha" and update["tag"] == "RISK_BLOCKED:FLATTENED" and update["by"] == "api"
    assert update["data"] == {} and [a for a, _ in box.halts] == ["acc_asha"]


def halt_day() -> str:
    from datetime import UTC, datetime

    from bracketflow.domain.calendar import IST

    return datetime.now(UTC).astimezone(IST).date().isoformat()
