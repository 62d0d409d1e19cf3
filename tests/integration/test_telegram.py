"""Telegram notices against a local fake Bot API server that answers in the real Bot API's shapes.

Real shapes: {"ok": true, "result": {...message...}}; errors {"ok": false, "error_code": 429, "description":
"Too Many Requests: retry after 3", "parameters": {"retry_after": 3}}, 400 "Bad Request: chat not found",
401 "Unauthorized", 403 "Forbidden: bot was blocked by the user".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from moto import mock_aws

REGION = "ap-south-1"
TOKEN = "123456:ABC-test-token"
CHAT = "-1001234567890"

ERRORS = {
    429: {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 3",
        "parameters": {"retry_after": 3},
    },
    400: {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"},
    401: {"ok": False, "error_code": 401, "description": "Unauthorized"},
    403: {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"},
}


@dataclass
class FakeBotApi:
    """Answers sendMessage from a script (status codes, in order; 200 once the script runs out)."""

    url: str = ""
    script: list[int] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    retry_after: int = 3


def _handler(api: FakeBotApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            api.requests.append({"path": self.path, "body": body, "content_type": self.headers.get("Content-Type")})
            status = api.script.pop(0) if api.script else 200
            if not self.path.startswith(f"/bot{TOKEN}/"):
                status = 401  # Telegram answers a wrong token with 401 Unauthorized
            if status == 200:
                answer: dict[str, Any] = {
                    "ok": True,
                    "result": {
                        "message_id": len(api.requests),
                        "date": 1767225600,
                        "chat": {"id": int(body["chat_id"]), "type": "supergroup", "title": "trades"},
                        "text": body["text"],
                    },
                }
            else:
                answer = dict(ERRORS[status])
                if status == 429:
                    answer["parameters"] = {"retry_after": api.retry_after}
                    answer["description"] = f"Too Many Requests: retry after {api.retry_after}"
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def bot_api() -> Iterator[FakeBotApi]:
    api = FakeBotApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def telegram_env(bot_api, monkeypatch):
    """moto with the bot's secret in Secrets Manager; Telegram's base URL at the fake."""
    from bracketflow.adapters.aws import reset_clients
    from bracketflow.adapters.telegram import reset_credentials_cache

    with mock_aws():
        boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name="bracketflow/test/telegram", SecretString=json.dumps({"bot_token": TOKEN, "chat_id": CHAT})
        )
        monkeypatch.setenv("TELEGRAM_SECRET_NAME", "bracketflow/test/telegram")
        monkeypatch.delenv("TELEGRAM_PARAMETER_NAME", raising=False)
        monkeypatch.setenv("TELEGRAM_API_BASE_URL", bot_api.url)
        monkeypatch.setenv("TELEGRAM_MAX_WAIT_S", "5")
        reset_clients()
        reset_credentials_cache()
        yield bot_api
        reset_credentials_cache()


class RecordingPacer:
    """The real pacing rules on a fake clock: sleeps are recorded (and advance the clock), never slept."""

    def __init__(self) -> None:
        from bracketflow.services.telegram import ChatPacer

        self.now = 1000.0
        self.sleeps: list[float] = []

        def sleep(seconds: float) -> None:
            self.sleeps.append(round(seconds, 3))
            self.now += seconds

        self.pacer = ChatPacer(clock=lambda: self.now, sleep=sleep)


def test_a_notice_is_sent_as_the_bot_api_expects(telegram_env):
    from bracketflow.services.telegram import send_notices

    sent = send_notices(["✅ Order placed <b>INFY</b> BUY 10"], RecordingPacer().pacer)
    assert sent == 1
    (request,) = telegram_env.requests
    assert request["path"] == f"/bot{TOKEN}/sendMessage" and request["content_type"] == "application/json"
    assert request["body"]["chat_id"] == CHAT and request["body"]["parse_mode"] == "HTML"
    assert request["body"]["text"] == "✅ Order placed <b>INFY</b> BUY 10"


def test_a_429_is_waited_out_for_its_retry_after_then_sent(telegram_env):
    from bracketflow.services.telegram import send_notices

    telegram_env.script = [429]
    clock = RecordingPacer()
    assert send_notices(["line"], clock.pacer) == 1
    # the same message twice, and between them exactly the wait Telegram asked for
    assert [r["body"]["text"] for r in telegram_env.requests] == ["line", "line"]
    assert clock.sleeps == [3]


def test_a_429_asking_for_too_long_a_wait_drops_the_message_without_raising(telegram_env):
    from bracketflow.services.telegram import send_notices

    telegram_env.script, telegram_env.retry_after = [429], 30
    clock = RecordingPacer()
    assert send_notices(["line"], clock.pacer) == 0
    assert len(telegram_env.requests) == 1 and clock.sleeps == []


def test_a_second_429_in_a_row_drops_the_message(telegram_env):
    from bracketflow.services.telegram import send_notices

    telegram_env.script = [429, 429]
    assert send_notices(["line"], RecordingPacer().pacer) == 0
    assert len(telegram_env.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 403], ids=["chat not found", "unauthorized", "bot blocked"])
def test_refusals_are_dropped_once_never_retried_never_raised(telegram_env, status):
    from bracketflow.services.telegram import send_notices

    telegram_env.script = [status]
    assert send_notices(["line"], RecordingPacer().pacer) == 0
    assert len(telegram_env.requests) == 1


def test_the_bot_api_error_is_read_from_the_real_shape(telegram_env):
    from bracketflow.adapters.telegram import TelegramError, credentials, send_message

    telegram_env.script = [429]
    with pytest.raises(TelegramError) as caught:
        send_message(credentials(), "x")
    assert caught.value.error_code == 429 and caught.value.retry_after == 3
    assert caught.value.description == "Too Many Requests: retry after 3"


def test_messages_to_one_chat_are_paced_a_second_apart(telegram_env):
    from bracketflow.services.telegram import send_notices

    clock = RecordingPacer()
    # more text than one message holds: it goes as two messages, the second a full interval after the first
    lines = [f"{i:04d} " + "x" * 995 for i in range(6)]
    assert send_notices(lines, clock.pacer) == 2
    texts = [r["body"]["text"] for r in telegram_env.requests]
    assert all(len(t) <= 4096 for t in texts) and "\n".join(texts).split("\n") == lines
    assert clock.sleeps == [1.0]


def test_an_unreachable_bot_api_is_dropped_not_raised(telegram_env, monkeypatch):
    from bracketflow.services.telegram import send_notices

    monkeypatch.setenv("TELEGRAM_API_BASE_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    from bracketflow.adapters.aws import reset_clients

    reset_clients()
    assert send_notices(["line"], RecordingPacer().pacer) == 0


def test_credentials_can_come_from_an_ssm_securestring(telegram_env, monkeypatch):
    from bracketflow.adapters.telegram import credentials, reset_credentials_cache

    boto3.client("ssm", region_name=REGION).put_parameter(
        Name="/bracketflow/test/telegram",
        Type="SecureString",
        Value=json.dumps({"bot_token": "999:other", "chat_id": "42"}),
    )
    monkeypatch.setenv("TELEGRAM_SECRET_NAME", "")
    monkeypatch.setenv("TELEGRAM_PARAMETER_NAME", "/bracketflow/test/telegram")
    from bracketflow.adapters.aws import reset_clients

    reset_clients()
    reset_credentials_cache()
    found = credentials()
    assert found is not None and (found.bot_token, found.chat_id) == ("999:other", "42")
    assert "999:other" not in repr(found)


def test_an_empty_bot_token_keeps_telegram_off(telegram_env, monkeypatch):
    from bracketflow.adapters.telegram import reset_credentials_cache
    from bracketflow.services.telegram import send_notices

    boto3.client("secretsmanager", region_name=REGION).put_secret_value(
        SecretId="bracketflow/test/telegram", SecretString=json.dumps({"bot_token": "", "chat_id": ""})
    )
    reset_credentials_cache()
    assert send_notices(["line"], RecordingPacer().pacer) == 0 and telegram_env.requests == []


def test_notices_name_the_bracket_in_the_traders_words():
    from bracketflow.services.telegram import BracketFacts, format_notice

    facts = BracketFacts(bracket_id="br_1", symbol="M&M", action="BUY", quantity=10)
    blocked = format_notice("BracketBlocked", {"tag": "RISK_BLOCKED:DAILY_LOSS_HIT"}, facts)
    assert blocked is not None and "M&amp;M" in blocked and "RISK_BLOCKED:DAILY_LOSS_HIT" in blocked
    closed = format_notice("BracketClosed", {"reason": "TARGET", "exit_price": "1550", "pnl": "500"}, facts)
    assert closed is not None and "TARGET @ 1550" in closed and "P&amp;L 500" in closed
    filled = format_notice("EntryFilled", {"filled_quantity": 10, "average_price": "1499.5"}, facts)
    assert filled is not None and "10 @ 1499.5" in filled
    breakeven = format_notice("BreakevenStopSet", {"after_share": 1, "old_stop": "1480", "new_stop": "1501"}, facts)
    assert breakeven is not None and "breakeven" in breakeven and "target 1 hit" in breakeven
    assert "1480 → 1501" in breakeven and "br_1" in breakeven
    at_price = {"breakeven_at": "1520.5", "price": "1520.5", "old_stop": "1480", "new_stop": "1501"}
    reached = format_notice("BreakevenStopSet", at_price, facts)
    assert reached is not None and "1520.5 reached" in reached and "1480 → 1501" in reached and "target" not in reached
    assert format_notice("StopTrailed", {}, facts) is None


def test_a_blocked_bracket_reaches_telegram_through_notify(telegram_env, monkeypatch):
    # Given the brackets table with its stream, and Telegram pointed at the fake
    from test_notify import Stream, load_handler, new_bracket

    from bracketflow.adapters.aws import reset_clients
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.domain.enums import BlockKind
    from bracketflow.domain.events import BracketBlocked, BracketRegistered
    from tests.support.intake import FakeContext, brackets_table_schema

    boto3.resource("dynamodb", region_name=REGION).create_table(
        TableName="bracketflow-telegram-test",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        **brackets_table_schema(),
    )
    monkeypatch.setenv("TABLE_NAME", "bracketflow-telegram-test")
    monkeypatch.setenv("WEBSOCKET_MANAGEMENT_URL", "")
    monkeypatch.setenv("TELEGRAM_MIN_INTERVAL_S", "0")
    reset_clients()
    stream = Stream("bracketflow-telegram-test")
    # When a bracket is blocked by the risk check and the stream reaches notify
    repo = BracketRepository()
    b = new_bracket()
    repo.create(b, [BracketRegistered(bracket_id=b.id)])
    blocked = b.block(BlockKind.RISK_BLOCKED, "DAILY_LOSS_HIT")
    repo.save(b, blocked, [BracketBlocked(b.id, {"kind": "RISK_BLOCKED", "tag": blocked.tags[0]})])
    result = load_handler("notify")({"Records": stream.records()}, FakeContext())
    # Then one Telegram message names the symbol, the block tag and the bracket
    assert result["telegrams"] == 1
    (request,) = telegram_env.requests
    text = request["body"]["text"]
    assert "Blocked" in text and "INFY" in text and "RISK_BLOCKED:DAILY_LOSS_HIT" in text and b.id in text


def test_a_kill_switch_trip_reaches_telegram_through_notify_before_the_brackets_notices(telegram_env, monkeypatch):
    # Given the brackets table with its stream, and Telegram pointed at the fake
    from decimal import Decimal

    from test_notify import Stream, load_handler, new_bracket

    from bracketflow.adapters.aws import reset_clients
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.domain.enums import BlockKind
    from bracketflow.domain.events import BracketBlocked, BracketRegistered
    from bracketflow.services import kill_switch
    from tests.support.intake import FakeContext, brackets_table_schema

    boto3.resource("dynamodb", region_name=REGION).create_table(
        TableName="bracketflow-telegram-test",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        **brackets_table_schema(),
    )
    monkeypatch.setenv("TABLE_NAME", "bracketflow-telegram-test")
    monkeypatch.setenv("WEBSOCKET_MANAGEMENT_URL", "")
    monkeypatch.setenv("TELEGRAM_MIN_INTERVAL_S", "0")
    reset_clients()
    stream = Stream("bracketflow-telegram-test")
    # When the loss check trips the kill switch and the next alert is then refused, in one stream batch
    detail = {"pnl": Decimal("-612.5"), "limit": Decimal("500")}
    kill_switch.flatten("acc_asha", kill_switch.DAILY_LOSS_HIT, by="risk_watch", detail=detail)
    repo = BracketRepository()
    b = new_bracket()
    repo.create(b, [BracketRegistered(bracket_id=b.id)])
    blocked = b.block(BlockKind.RISK_BLOCKED, "DAILY_LOSS_HIT")
    repo.save(b, blocked, [BracketBlocked(b.id, {"kind": "RISK_BLOCKED", "tag": blocked.tags[0]})])
    result = load_handler("notify")({"Records": stream.records()}, FakeContext())
    # Then one Telegram message carries both lines, the kill switch first, with the account, the why and the figures
    assert result["telegrams"] == 1
    (request,) = telegram_env.requests
    first, second = request["body"]["text"].split("\n")
    assert "Kill switch" in first and "acc_asha" in first and "daily loss limit" in first
    assert "-612.5" in first and "limit 500" in first and "RISK_BLOCKED:DAILY_LOSS_HIT" in first
    assert "Blocked" in second and b.id in second


def test_a_flatten_by_hand_notice_says_it_was_by_hand():
    from bracketflow.services.telegram import format_halt

    line = format_halt("acc_<asha>", {"reason": "FLATTENED", "tag": "RISK_BLOCKED:FLATTENED", "data": {}})
    assert "flattened by hand" in line and "acc_&lt;asha&gt;" in line and "P&amp;L" not in line
