"""An independent, deliberately plain reading of docs/trailing.md, for checking the streamer against.

It shares no code with the project: its own frames reader, its own byte decoding, its own arithmetic
(Fractions with math.floor/ceil instead of the engine's integer tricks). Slow and obvious on purpose.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction


def paise(x) -> int:
    """P(x) = round(x*100): Python's round, ties to even, on the exact decimal."""
    return int((Decimal(str(x)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def rupees_text(p: int) -> str:
    sign = "-" if p < 0 else ""
    return f"{sign}{abs(p) // 100}.{abs(p) % 100:02d}"


@dataclass
class RefBracket:
    bracket_id: str
    token: int
    long: bool
    mis: bool
    stop: int
    tick: int
    trail_type: str | None
    trail_value: Decimal | None
    activation: int | None
    activated: bool
    done: bool = False


def read_messages(data: bytes) -> list[bytes]:
    messages, i = [], 0
    while i < len(data):
        n = int.from_bytes(data[i : i + 4], "big")
        messages.append(data[i + 4 : i + 4 + n])
        i += 4 + n
    return messages


def read_watchlist(text: str) -> list[RefBracket]:
    out = []
    for w in json.loads(text, parse_float=Decimal):
        trail = w.get("trail")
        out.append(
            RefBracket(
                bracket_id=w["bracket_id"],
                token=w["instrument_token"],
                long=w["side"] == "LONG",
                mis=w["product"] == "MIS",
                stop=paise(w["stop_price"]),
                tick=paise(w["tick_size"]),
                trail_type=trail["type"] if trail else None,
                trail_value=Decimal(str(trail["value"])) if trail else None,
                activation=paise(w["activation_price"]) if trail and w.get("activation_price") is not None else None,
                activated=not (trail and w.get("activation_price") is not None),
            )
        )
    return out


def _step(b: RefBracket, ltp: int, full: bool, bid: int, ask: int) -> bool:
    """One packet for one bracket; True when it exits."""
    if (b.long and ltp <= b.stop) or (not b.long and ltp >= b.stop):
        return True
    if b.trail_type is None:
        return False
    ref = ltp
    if b.mis and full:
        touch = bid if b.long else ask
        if touch > 0:
            ref = touch
    if not b.activated:
        if (b.long and ref >= b.activation) or (not b.long and ref <= b.activation):
            b.activated = True
        else:
            return False
    if b.trail_type == "percent":
        bps = paise(b.trail_value)  # round(v*100)
        if b.long:
            c = math.floor(Fraction(ref * (10000 - bps), 10000))
        else:
            c = math.ceil(Fraction(ref * (10000 + bps), 10000))
    else:
        c = ref - paise(b.trail_value) if b.long else ref + paise(b.trail_value)
    c = math.floor(Fraction(c, b.tick)) * b.tick if b.long else math.ceil(Fraction(c, b.tick)) * b.tick
    b.stop = max(b.stop, c) if b.long else min(b.stop, c)
    return False


def run(frames: bytes, watchlist: str) -> tuple[list[dict], dict[str, int]]:
    """Exits as the replay tool writes them, and the final stops (paise) of brackets still open."""
    brackets = read_watchlist(watchlist)
    exits = []
    for mi, m in enumerate(read_messages(frames)):
        if len(m) < 2 or m[:1] in (b"{", b"["):
            continue  # heartbeat or text
        count = int.from_bytes(m[0:2], "big")
        off = 2
        for pi in range(count):
            if off + 2 > len(m):
                break
            length = int.from_bytes(m[off : off + 2], "big")
            packet = m[off + 2 : off + 2 + length]
            off += 2 + length
            if len(packet) < length:
                break  # the message lied about its length: nothing after this is trusted
            if length < 8:
                continue
            token = int.from_bytes(packet[0:4], "big")
            if token % 256 == 9:
                continue  # index
            ltp = int.from_bytes(packet[4:8], "big", signed=True)
            if ltp <= 0:
                continue  # no price (no trade yet, or a glitch): never a trigger, never a trail
            full = length == 184
            bid = int.from_bytes(packet[68:72], "big", signed=True) if full else 0
            ask = int.from_bytes(packet[128:132], "big", signed=True) if full else 0
            for b in brackets:
                if b.done or b.token != token:
                    continue
                if _step(b, ltp, full, bid, ask):
                    b.done = True
                    exits.append(
                        {
                            "bracket_id": b.bracket_id,
                            "message_index": mi,
                            "packet_index": pi,
                            "ltp": rupees_text(ltp),
                            "stop_price": rupees_text(b.stop),
                        }
                    )
    return exits, {b.bracket_id: b.stop for b in brackets if not b.done}
