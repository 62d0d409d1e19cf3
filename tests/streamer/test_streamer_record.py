"""Recording a ticker feed: a tiny local websocket server stands in for the broker's ticker."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from aiohttp import WSMsgType, web

from streamer import record
from streamer.frames import read_frames
from tests.streamer.packets import HEARTBEAT, full_packet, ltp_packet, message

INFY = (408065 << 8) | 1
FEED = [
    message(full_packet(INFY, 150000, 149995, 150010)),
    HEARTBEAT,
    b'{"type":"order","data":{"order_id":"1","status":"COMPLETE"}}',
    message(ltp_packet(INFY, 150005)),
]


@pytest.fixture
def ticker():
    """A ticker on 127.0.0.1:<free port> that checks the credentials, waits for subscribe + mode, then
    sends FEED and waits for the client to leave. Always stopped at the end of the test."""
    seen: dict = {"commands": [], "query": None}
    started = threading.Event()
    loop = asyncio.new_event_loop()
    state: dict = {}

    async def socket(request: web.Request) -> web.WebSocketResponse:
        seen["query"] = dict(request.query)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                seen["commands"].append(json.loads(msg.data))
                if len(seen["commands"]) == 2:
                    for m in FEED:
                        await (ws.send_str(m.decode()) if m[:1] == b"{" else ws.send_bytes(m))
        return ws

    async def start() -> None:
        app = web.Application()
        app.router.add_get("/ws", socket)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["runner"] = runner
        state["port"] = runner.addresses[0][1]
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert started.wait(10)
    yield f"ws://127.0.0.1:{state['port']}/ws", seen
    asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_record_writes_every_message_as_a_frame_after_subscribing_in_full_mode(ticker, tmp_path):
    url, seen = ticker
    out = tmp_path / "session.bin"
    # When the recorder runs against the ticker for as many messages as the feed has
    code = record.main(["--out", str(out), "--url", url, "--tokens", str(INFY), "--max-messages", str(len(FEED)),
                        "--seconds", "20"])  # fmt: skip
    # Then it authenticated, subscribed and asked for full mode, as Kite expects
    assert code == 0
    assert seen["query"] == {"api_key": "paper", "access_token": "paper-token"}
    assert seen["commands"] == [{"a": "subscribe", "v": [INFY]}, {"a": "mode", "v": ["full", [INFY]]}]
    # And the frames file holds every message byte for byte, text and heartbeats included
    assert read_frames(out) == FEED


def test_record_stops_at_the_deadline_when_the_feed_goes_quiet(ticker, tmp_path):
    url, _ = ticker
    out = tmp_path / "quiet.bin"
    written = record.record(record.ticker_url(url, "paper", "paper-token"), out, [INFY], seconds=1.5)
    assert written == len(FEED)
    assert read_frames(out) == FEED


def test_record_reports_a_feed_it_cannot_reach(tmp_path, capsys):
    code = record.main(["--out", str(tmp_path / "x.bin"), "--url", "ws://127.0.0.1:9/ws", "--tokens", "1"])
    assert code == 1
    assert "cannot record" in capsys.readouterr().err


def test_default_subscription_is_the_instrument_masters_equities():
    tokens = record.equity_tokens()
    assert tokens
    assert len(tokens) <= record.MAX_TOKENS_PER_CONNECTION
    assert all(t & 0xFF != 9 for t in tokens)
