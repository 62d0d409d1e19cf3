"""What a deployed function sends to X-Ray (bracketflow.observability), caught as the X-Ray daemon would receive it.

A child interpreter is set up as Lambda runs a function with `Tracing: Active` (LAMBDA_TASK_ROOT, a sampled
_X_AMZN_TRACE_ID, AWS_XRAY_DAEMON_ADDRESS pointing at a UDP socket of this test), so Powertools builds the real
X-Ray tracer and the SDK streams each finished subsegment to the "daemon". The child sends a Telegram message and
makes a Kite call, both to a local HTTP server standing in for the two APIs.

The Telegram Bot API puts the bot token in the URL path, and the X-Ray SDK's `requests` patch records every URL:
so `requests` must not be patched, and broker calls are traced by a subsegment of our own that names no URL.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BOT_TOKEN = "123456:SECRET-bot-token"
KITE_SECRET = "SECRET-query-value"

CHILD = f"""
import json, os, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class StandIn(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "/bot" in self.path:
            body = {{"ok": True, "result": {{"message_id": 1}}}}
        else:
            body = {{"status": "success", "data": {{"order_id": "1"}}}}
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = _answer

server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
threading.Thread(target=server.serve_forever, daemon=True).start()
base = f"http://127.0.0.1:{{server.server_address[1]}}"
os.environ["TELEGRAM_API_BASE_URL"] = base

import requests
from aws_xray_sdk.core import patcher
from bracketflow.observability import tracer
from bracketflow.adapters.broker.kite_http import send_kite_request
from bracketflow.adapters.telegram import TelegramCredentials, send_message

send_message(TelegramCredentials({BOT_TOKEN!r}, "42"), "bracket br_1 CLOSED")
send_kite_request(
    requests.Session(), "GET", base + "/orders?x={KITE_SECRET}", {{"Authorization": "token key:access"}}, (2, 2)
)
server.shutdown()
print(json.dumps({{"tracing": not tracer.disabled, "patched": sorted(patcher._PATCHED_MODULES)}}))
"""


def _run_traced_child() -> tuple[dict, list[str]]:
    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(0.5)
    try:
        env = {
            **os.environ,
            "LAMBDA_TASK_ROOT": str(ROOT / "functions" / "notify"),
            "AWS_LAMBDA_FUNCTION_NAME": "bracketflow-test-NotifyFunction",
            "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{daemon.getsockname()[1]}",
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
            "POWERTOOLS_TRACE_DISABLED": "false",
            "AWS_DEFAULT_REGION": "ap-south-1",
            "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("layers/common", "streamer", ".")),
        }
        child = subprocess.run(
            [sys.executable, "-c", CHILD], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert child.returncode == 0, child.stderr[-3000:]
        report = json.loads(child.stdout.strip().splitlines()[-1])
        received = []
        while True:
            try:
                received.append(daemon.recv(65535).decode())
            except TimeoutError:
                return report, received
    finally:
        daemon.close()


def _subsegments(datagrams: list[str]) -> list[dict]:
    # Each datagram: a header line ({"format":"json","version":1}) and one segment document.
    return [json.loads(d.split("\n", 1)[1]) for d in datagrams if "\n" in d]


def test_a_traced_function_never_sends_a_secret_url_to_xray_and_still_traces_broker_calls():
    # Given a function running as deployed with tracing on, which notifies Telegram and calls Kite
    report, datagrams = _run_traced_child()
    # Then tracing was really on, and the X-Ray SDK patched botocore only (AWS calls), not requests
    assert report == {"tracing": True, "patched": ["botocore"]}
    # And nothing the "daemon" received holds the bot token or a URL's query
    assert datagrams, "the traced child sent X-Ray nothing"
    assert not [d for d in datagrams if BOT_TOKEN in d or KITE_SECRET in d]
    # And the Kite call is one subsegment, annotated with its method and path
    kite = [s for s in _subsegments(datagrams) if s.get("name") == "kite"]
    assert [s["annotations"] for s in kite] == [{"method": "GET", "path": "/orders"}]
    assert all(s["trace_id"] == "1-5759e988-bd862e3fe1be46a994272793" for s in kite)
