"""Record the live ticker feed to a frames file, for replay, tests, benchmarks and tuning trails.

    python -m streamer.record --out session.bin [--seconds 60] [--tokens 408065 ...] [--max-messages N]

Connects to BROKER_TICKER_URL (settings; the paper exchange's ws://127.0.0.1:8700/ws by default), subscribes
in full mode to the tokens given, or to every equity in the instrument master (at most 3000, Kite's limit per
connection), and appends every message as it arrives (binary ticks, heartbeats and text order updates alike)
until the duration passes, N messages were written, or Ctrl-C / SIGTERM. Each frame is flushed as written,
so an interrupted recording is still replayable up to its last whole frame.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import websocket

from bracketflow.domain.instruments import default_master
from bracketflow.settings import get_settings
from streamer.frames import FrameWriter, read_frames

MAX_TOKENS_PER_CONNECTION = 3000
PAPER_API_KEY = "paper"  # the paper exchange's defaults; a real Kite session needs its own
PAPER_ACCESS_TOKEN = "paper-token"


def ticker_url(base: str, api_key: str, access_token: str) -> str:
    parts = urlsplit(base)
    query = "&".join(q for q in (parts.query, urlencode({"api_key": api_key, "access_token": access_token})) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def equity_tokens() -> list[int]:
    """Every equity of the instrument master, in its order, capped at one connection's limit."""
    tokens = [i.instrument_token for i in default_master() if i.instrument_type == "EQ" and i.tradable]
    return tokens[:MAX_TOKENS_PER_CONNECTION]


def subscribe_commands(tokens: Sequence[int]) -> list[str]:
    return [
        json.dumps({"a": "subscribe", "v": list(tokens)}),
        json.dumps({"a": "mode", "v": ["full", list(tokens)]}),
    ]


class _Stop(Exception):
    pass


def record(
    url: str,
    out_path: Path,
    tokens: Sequence[int],
    *,
    seconds: float | None = None,
    max_messages: int | None = None,
    connect_timeout_s: float = 10.0,
) -> int:
    """Record until the duration or message count is reached (or an interrupt); returns messages written."""
    deadline = None if seconds is None else time.monotonic() + seconds
    ws = websocket.create_connection(url, timeout=connect_timeout_s, enable_multithread=False)

    def on_term(signum, frame):  # SIGTERM stops like Ctrl-C: the file is whole up to the last frame
        raise _Stop

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_term) if in_main_thread else None
    try:
        for command in subscribe_commands(tokens):
            ws.send(command)
        with out_path.open("wb") as out:
            writer = FrameWriter(out)
            while max_messages is None or writer.count < max_messages:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    ws.settimeout(min(left, 1.0))
                else:
                    ws.settimeout(1.0)
                try:
                    opcode, data = ws.recv_data()
                except websocket.WebSocketTimeoutException:
                    continue
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    break
                if opcode in (websocket.ABNF.OPCODE_BINARY, websocket.ABNF.OPCODE_TEXT):
                    writer.write(bytes(data))
                    out.flush()
            return writer.count
    except (KeyboardInterrupt, _Stop):
        return _count_frames(out_path)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        ws.close()


def _count_frames(path: Path) -> int:
    try:
        return len(read_frames(path, strict=False))
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Record the ticker feed to a frames file.")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--url", help="ticker URL (default: BROKER_TICKER_URL from settings)")
    ap.add_argument("--tokens", type=int, nargs="*", help="instrument tokens (default: the master's equities)")
    ap.add_argument("--seconds", type=float, help="stop after this long (default: until Ctrl-C)")
    ap.add_argument("--max-messages", type=int, help="stop after this many messages")
    ap.add_argument("--api-key", default=PAPER_API_KEY)
    ap.add_argument("--access-token", default=PAPER_ACCESS_TOKEN)
    a = ap.parse_args(argv)
    tokens = a.tokens or equity_tokens()
    if not tokens:
        print("record: no instruments to subscribe to", file=sys.stderr)
        return 2
    if len(tokens) > MAX_TOKENS_PER_CONNECTION:
        print(f"record: at most {MAX_TOKENS_PER_CONNECTION} tokens per connection, got {len(tokens)}", file=sys.stderr)
        return 2
    base = a.url or get_settings().broker_ticker_url
    try:
        written = record(
            ticker_url(base, a.api_key, a.access_token),
            a.out,
            tokens,
            seconds=a.seconds,
            max_messages=a.max_messages,
        )
    except (OSError, websocket.WebSocketException) as e:
        print(f"record: cannot record from {base}: {e}", file=sys.stderr)
        return 1
    print(f"recorded {written} messages from {base} ({len(tokens)} instruments) -> {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
