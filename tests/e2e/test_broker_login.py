"""The daily Kite login on the local stack, in a real headless Chromium: from the login link to "session valid".

The paper exchange plays Kite: its /connect/login page has a login button that sends the browser to the stack's
/broker/callback with a one-time request_token; the callback trades it for the day's access token and stores it in
the stage's broker secret. The paper exchange then refuses the previous token and closes its ticker connections, as a
replaced Kite session does, so the test also shows the streamer and a warm Lambda moving to the new session by
themselves. Before that, with nobody logged in, the pre-market check publishes its alarm metric and sends Telegram
(a Bot API stand-in on 127.0.0.1) once.

The screenshot of the "session valid" page is the README's (docs/images/kite-login-session-valid.png): written there
when UPDATE_SCREENSHOTS=1, as the console's tests do; otherwise to the test's temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from local.stack import LocalStack, StackConfig
from tests.support.stack import wait_for

pytestmark = pytest.mark.xdist_group("stack")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "kite-login-session-valid.png"
BOT_TOKEN = "123456:login-test-token"
CHAT = "-1009876543210"


class BotApi:
    """Telegram's Bot API on 127.0.0.1: sendMessage answered as the real one answers, every request kept."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                ok = self.path == f"/bot{BOT_TOKEN}/sendMessage"
                if ok:
                    api.messages.append(body)
                answer = {"ok": True, "result": {"message_id": len(api.messages), "chat": {"id": int(CHAT)}}}
                data = json.dumps(answer if ok else {"ok": False, "error_code": 401, "description": "Unauthorized"})
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data.encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="bot-api", daemon=True)


@pytest.fixture(scope="module")
def bot() -> Iterator[BotApi]:
    api = BotApi()
    api.thread.start()
    yield api
    api.server.shutdown()
    api.server.server_close()


@pytest.fixture(scope="module")
def stack(bot: BotApi) -> Iterator[LocalStack]:
    """The whole stack with the streamer, schedules off (the test runs the pre-market check itself)."""
    config = StackConfig(
        api_port=0,
        moto_port=0,
        paper_port=0,
        local_api_key="login-test-key",
        schedules=False,
        extra_env={"TELEGRAM_API_BASE_URL": bot.url, "TELEGRAM_MIN_INTERVAL_S": "0"},
    )
    local = LocalStack(config)
    local.start()
    try:
        yield local
    finally:
        local.stop()


def _paper_state(stack: LocalStack) -> dict[str, Any]:
    return requests.get(f"{stack.paper_url}/_paper/state", timeout=10).json()["data"]


def _published_metric(out: str, name: str) -> list[float]:
    values = []
    for line in out.splitlines():
        if line.startswith('{"_aws"') and name in line:
            value = json.loads(line)[name]  # EMF: one number, or a list of them
            values.extend(value if isinstance(value, list) else [value])
    return values


def _session_check(stack: LocalStack) -> dict[str, Any]:
    assert stack.runtime is not None
    return stack.runtime.invoke("SessionCheckFunction", {"source": "aws.events", "detail-type": "Scheduled Event"})


def test_without_a_login_the_premarket_check_raises_its_alarm_and_telegram_once(stack, bot, capsys, monkeypatch):
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    from bracketflow.adapters.telegram import reset_credentials_cache

    # Given the trader's Telegram bot is configured and nobody has logged in to Kite today
    telegram_secret = stack.template.functions["SessionCheckFunction"].environment["TELEGRAM_SECRET_NAME"]
    stack.client("secretsmanager").put_secret_value(
        SecretId=telegram_secret, SecretString=json.dumps({"bot_token": BOT_TOKEN, "chat_id": CHAT})
    )
    reset_credentials_cache()
    capsys.readouterr()

    # When the pre-market check runs, twice (a schedule may fire more than once before the open)
    first = _session_check(stack)
    second = _session_check(stack)

    # Then both runs find no session and publish the alarm's metric at 1
    assert first["ok"] is False and second["ok"] is False
    assert "nobody has logged in" in first["problem"]
    assert _published_metric(capsys.readouterr().out, "BrokerSessionMissing") == [1.0, 1.0]
    # And Telegram got one message, with the login link, not one per run
    assert len(bot.messages) == 1
    message = bot.messages[0]
    assert message["chat_id"] == CHAT and "No Kite session" in message["text"]
    assert "/broker/login" in message["text"]
    # And /health says there is no session
    health = requests.get(f"{stack.api_url}/health", timeout=10).json()
    assert health["broker_session"]["state"] == "none"


def test_the_login_link_in_a_headless_browser_ends_on_a_valid_session(stack, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    from playwright.sync_api import sync_playwright

    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium package")
    assert stack.runtime is not None
    # Given a warm Lambda that has been using the paper exchange's built-in session, and the streamer on its ticker
    stack.runtime.invoke("ReconcileSnapshotFunction", {})
    wait_for("the streamer on the ticker", lambda: _paper_state(stack)["ticker_connections"] == 1)

    # When the trader opens the login link in a browser and presses the broker's login button
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 240})
            page.goto(f"{stack.api_url}/broker/login")
            assert page.url.startswith(f"{stack.paper_url}/connect/login?api_key=paper&v=3")
            page.click("#login")
            page.wait_for_selector("h1")
            # Then the browser ends on the stack's callback, which says the session is valid until 06:00 IST
            assert page.url.startswith(f"{stack.api_url}/broker/callback?")
            assert "status=success" in page.url and "request_token=" in page.url
            assert page.inner_text("h1") == "Kite session valid"
            assert "valid until 06:00 IST" in page.inner_text("#message")
            target = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path / SCREENSHOT.name
            target.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(target))
            assert target.stat().st_size > 0
        finally:
            browser.close()

    # And /health shows the session and when it ends (06:00 IST next morning)
    health = requests.get(f"{stack.api_url}/health", timeout=10).json()
    session = health["broker_session"]
    assert session["state"] == "valid"
    expires = datetime.fromisoformat(session["expires_at"])
    assert (expires.hour, expires.minute, expires.utcoffset().total_seconds()) == (6, 0, 19800)
    assert expires > datetime.fromisoformat(session["login_time"])

    # And the old token is dead at the broker, yet the warm Lambda carries on with the new session, no redeploy
    old = requests.get(
        f"{stack.paper_url}/user/profile",
        headers={"Authorization": "token paper:paper-token", "X-Kite-Version": "3"},
        timeout=10,
    )
    assert old.status_code == 403
    snapshot = stack.runtime.invoke("ReconcileSnapshotFunction", {})
    assert snapshot is not None
    # And the streamer, whose ticker connection the new session closed, is back on the ticker with the new token
    wait_for(
        "the streamer back on the ticker with the new token", lambda: _paper_state(stack)["ticker_connections"] == 1
    )

    # And the pre-market check now verifies the session with the broker: no alarm
    capsys.readouterr()
    checked = _session_check(stack)
    assert checked["ok"] is True and checked["session"]["state"] == "valid"
    assert _published_metric(capsys.readouterr().out, "BrokerSessionMissing") == [0.0]
