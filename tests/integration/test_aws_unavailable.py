"""When AWS does not answer (a DynamoDB timeout, a dropped connection), the HTTP routes answer 503 with a message.

TradingView resends an alert answered 5xx, and a REST client may send the request again as it is: a resend is
recognised, so 503 is the honest answer for a failure that passes. It used to be a 500 "internal error", which says
"our bug" and gives the caller nothing to act on. Here AWS is a local socket that accepts connections and then
either never answers (botocore's read timeout runs out) or hangs up at once.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from tests.support.intake import FakeContext, api_event, bracket_request

ALERT = {"apikey": "bf_live_not_checked_before_aws", "symbol": "NSE:INFY", "action": "buy", "quantity": "1",
         "entry_price": "1500", "sl_price": "1480", "target_price": "1550"}  # fmt: skip


class BrokenAws:
    """127.0.0.1:<port> that accepts connections and, per `mode`, never answers ("silent") or closes ("hang_up")."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if self.mode == "hang_up":
                conn.close()
            else:
                self._held.append(conn)

    def close(self) -> None:
        self._sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def broken_aws(request, monkeypatch) -> Iterator[BrokenAws]:
    from bracketflow.adapters.aws import reset_clients
    from bracketflow.adapters.secrets import reset_pepper_cache

    aws = BrokenAws(request.param)
    for name, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{aws.port}",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "TABLE_NAME": "bracketflow-unreachable",
        "BRACKET_STATE_MACHINE_ARN": "arn:aws:states:ap-south-1:123456789012:stateMachine:bracket",
        "BROKER": "paper",
        "STAGE": "local",
    }.items():
        monkeypatch.setenv(name, value)
    reset_clients()
    reset_pepper_cache()
    yield aws
    aws.close()
    reset_clients()
    reset_pepper_cache()


WEBHOOK = ("functions.webhook.app", "/tradingview/webhook/bracket", ALERT)
REST = ("functions.api.app", "/api/v1/placebracketorder", bracket_request())


# A read timeout takes botocore's 5 s times its attempts: once, on the webhook, is enough.
@pytest.mark.parametrize(
    ("broken_aws", "route"),
    [("silent", WEBHOOK), ("hang_up", WEBHOOK), ("hang_up", REST)],
    indirect=["broken_aws"],
    ids=["webhook-timeout", "webhook-hang-up", "rest-hang-up"],
)
def test_aws_not_answering_is_a_503_with_a_message_not_a_500(broken_aws, route):
    import importlib

    module, path, body = route

    handler = importlib.import_module(module).lambda_handler
    # When a valid-looking request arrives while AWS does not answer
    answer = handler(api_event("POST", path, json.dumps(body), headers={"X-API-KEY": ALERT["apikey"]}), FakeContext())
    # Then it is told to send it again, in the error shape, and when
    assert answer["statusCode"] == 503, answer
    payload = json.loads(answer["body"])
    assert payload["status"] == "error"
    assert "did not answer in time; send the request again" in payload["message"]
    assert answer["multiValueHeaders"]["Retry-After"] == ["1"]
