"""Replay a recorded ticker session through the live trailing engine and write the exits it decides.

    python -m streamer.replay --frames session.bin --watchlist watchlist.json --exits exits.jsonl

Exits are written one JSON object per line, in the order they happen:
    {"bracket_id": "...", "message_index": 12, "packet_index": 40, "ltp": "1479.95", "stop_price": "1480.00"}
- message_index: the message's 0-based position in the frames file, counting every message (heartbeats
  and text messages included);
- packet_index: the packet's 0-based position within its message (index packets included);
- ltp and stop_price: rupees as exact decimal strings with two decimals (never floats: this is money).
The throughput (packets/s through parse + trailing, file reading excluded) goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from bracketflow.domain.trailing import to_rupees
from streamer.engine import ExitIntent, TrailingEngine
from streamer.frames import read_frames
from streamer.watchlist import WatchedBracket, load_watchlist


def exit_to_json(e: ExitIntent) -> str:
    return json.dumps(
        {
            "bracket_id": e.bracket_id,
            "message_index": e.message_index,
            "packet_index": e.packet_index,
            "ltp": str(to_rupees(e.ltp)),
            "stop_price": str(to_rupees(e.stop_price)),
        }
    )


def replay(messages: Sequence[bytes], brackets: Iterable[WatchedBracket]) -> tuple[list[ExitIntent], TrailingEngine]:
    engine = TrailingEngine(brackets)
    exits: list[ExitIntent] = []
    feed = engine.feed
    for message in messages:
        found = feed(message)
        if found:
            exits.extend(found)
    return exits, engine


def write_exits(exits: Iterable[ExitIntent], out: TextIO) -> None:
    for e in exits:
        out.write(exit_to_json(e))
        out.write("\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Replay a frames file through the trailing engine.")
    ap.add_argument("--frames", type=Path, required=True)
    ap.add_argument("--watchlist", type=Path, required=True)
    ap.add_argument("--exits", type=Path, help="where to write the exits (JSON lines); default stdout")
    a = ap.parse_args(argv)
    try:
        messages = read_frames(a.frames)
        brackets = load_watchlist(a.watchlist)
    except (OSError, ValueError) as e:
        print(f"replay: {e}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    exits, engine = replay(messages, brackets)
    elapsed = time.perf_counter() - started
    if a.exits:
        with a.exits.open("w") as out:
            write_exits(exits, out)
    else:
        write_exits(exits, sys.stdout)
    rate = engine.packets_seen / elapsed if elapsed > 0 else float("inf")
    print(
        f"replayed {len(messages)} messages, {engine.packets_seen} packets, {len(brackets)} brackets: "
        f"{len(exits)} exits, {len(engine)} still open, {elapsed:.3f} s, {rate:,.0f} packets/s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
