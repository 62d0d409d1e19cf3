"""A deterministic generator of recorded ticker sessions and watchlists, for tests, replay and benchmarks.

Same seed and options, same bytes. Standard library only. It exercises everything the parser and the
engine must handle: ltp/quote/full packets mixed in one message, index packets (token & 0xFF == 9, with
their own 8/28/32-byte layouts), heartbeats, text messages (order updates), full packets with an empty
bid or ask side, a token repeated within one message, price gaps through stops, and tokens that carry
two brackets (fan-out in watchlist order).

    python -m streamer.synthetic --seed 7 --instruments 1500 --messages 400 --packets-per-message 500 \
        --watched 1000 --gap-rate 0.002 --modes mixed --frames session.bin --watchlist watchlist.json
"""

from __future__ import annotations

import argparse
import json
import random
import struct
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from streamer.frames import write_frames

NSE_EQ = 1
INDICES = 9
TICK = 5  # paise
MODES = ("ltp", "quote", "full")


@dataclass(frozen=True)
class SessionSpec:
    seed: int = 7
    instruments: int = 1500
    messages: int = 400
    packets_per_message: int = 500
    watched: int = 1000
    gap_rate: float = 0.002  # chance per packet of a 1-4% jump
    modes: str = "mixed"  # "mixed" or one of ltp / quote / full for every equity
    index_instruments: int = 5  # only in mixed sessions
    heartbeat_every: int = 50  # messages; 0 = none
    text_every: int = 97  # an order-update text message every N messages; 0 = none
    twins: int = 50  # up to this many tokens get a second, opposite-side bracket
    drift: float = 0.0  # per-tick trend (each instrument up or down at random): 0.001 makes stops trail constantly


def _quote(token: int, ltp: int, volume: int) -> bytes:
    # token, ltp, last qty, avg price, volume, buy qty, sell qty, open, high, low, close
    return struct.pack(
        ">IiIiIIIiiii", token, ltp, 25, ltp, volume, 1000, 1200, ltp, ltp + 400, max(TICK, ltp - 400), ltp
    )


def _full(token: int, ltp: int, volume: int, bid: int, ask: int) -> bytes:
    head = _quote(token, ltp, volume)
    times = struct.pack(">IIIII", 1_700_000_000, 0, 0, 0, 1_700_000_000)  # last trade time, OI..., exchange time
    # An empty side of the book is all zeros; otherwise 5 levels one tick apart.
    bids = b"".join(struct.pack(">iiHH", (100 + i) * (bid > 0), max(0, bid - i * TICK), 3, 0) for i in range(5))
    asks = b"".join(struct.pack(">iiHH", (90 + i) * (ask > 0), (ask + i * TICK) * (ask > 0), 2, 0) for i in range(5))
    packet = head + times + bids + asks
    assert len(packet) == 184
    return packet


def _index_packet(mode: str, token: int, ltp: int) -> bytes:
    if mode == "ltp":
        return struct.pack(">Ii", token, ltp)
    quote = struct.pack(">Iiiiiii", token, ltp, ltp + 900, ltp - 900, ltp, ltp, 0)  # 28 B
    return quote if mode == "quote" else quote + struct.pack(">I", 1_700_000_000)  # 32 B


def _rupees(paise: int) -> float:
    # JSON numbers; exact as text because paise/100 has at most two decimals.
    return float(Decimal(paise).scaleb(-2))


def _equity_packet(rng: random.Random, spec: SessionSpec, mode: str, token: int, ltp: int, volume: int) -> bytes:
    """An equity's packet in its mode; a full packet's book is a few ticks wide, in mixed sessions now and then
    with one side empty."""
    if mode == "ltp":
        return struct.pack(">Ii", token, ltp)
    if mode == "quote":
        return _quote(token, ltp, volume)
    spread = TICK * rng.randint(1, 4)
    bid, ask = max(TICK, ltp - spread), ltp + spread
    if spec.modes == "mixed" and rng.random() < 0.03:
        bid, ask = (0, ask) if rng.random() < 0.5 else (bid, 0)  # one side of the book empty
    return _full(token, ltp, volume, bid, ask)


def generate(spec: SessionSpec) -> tuple[list[bytes], list[dict[str, Any]]]:
    rng = random.Random(spec.seed)
    equities = [(t << 8) | NSE_EQ for t in rng.sample(range(1_000, 4_000_000), spec.instruments)]
    indices = []
    if spec.modes == "mixed":
        indices = [(t << 8) | INDICES for t in rng.sample(range(100, 999), spec.index_instruments)]
    price = {t: rng.randint(20_00, 6000_00) for t in equities + indices}
    sigma = {t: rng.uniform(0.0001, 0.0008) for t in equities + indices}
    mode = {t: (rng.choice(MODES) if spec.modes == "mixed" else spec.modes) for t in equities}
    mode.update({t: rng.choice(MODES) for t in indices})
    volume = dict.fromkeys(equities, 0)
    trend = {t: rng.choice((-1.0, 1.0)) * spec.drift for t in equities + indices} if spec.drift else None

    watchlist = _watchlist(rng, spec, equities, price)

    universe = equities + indices
    frames: list[bytes] = []
    for m in range(spec.messages):
        if spec.heartbeat_every and m % spec.heartbeat_every == spec.heartbeat_every - 1:
            frames.append(b"\x00")
        if spec.text_every and m % spec.text_every == spec.text_every - 1:
            update = {"type": "order", "data": {"order_id": f"{spec.seed}{m:08d}", "status": "COMPLETE"}}
            frames.append(json.dumps(update).encode())
        batch = rng.sample(universe, min(spec.packets_per_message, len(universe)))
        if spec.modes == "mixed" and len(batch) > 2 and rng.random() < 0.2:
            batch.append(batch[rng.randrange(len(batch))])  # the same token twice in one message
        packets = []
        for t in batch:
            move = rng.gauss(0.0, sigma[t]) + (trend[t] if trend else 0.0)
            if rng.random() < spec.gap_rate:
                move += rng.choice((-1.0, 1.0)) * rng.uniform(0.01, 0.04)
            # Integer paise random walk on the tick; the float only shapes the step, prices stay integers.
            step = round(price[t] * move / TICK) * TICK
            price[t] = max(TICK * 20, price[t] + step)
            ltp = price[t] - price[t] % TICK
            if t in volume:
                volume[t] += rng.randint(1, 500)
            if is_index(t):
                packets.append(_index_packet(mode[t], t, ltp))
            else:
                packets.append(_equity_packet(rng, spec, mode[t], t, ltp, volume[t]))
        frames.append(struct.pack(">H", len(packets)) + b"".join(struct.pack(">H", len(p)) + p for p in packets))
    return frames, watchlist


def is_index(token: int) -> bool:
    return token & 0xFF == INDICES


def _watchlist(
    rng: random.Random, spec: SessionSpec, equities: list[int], price: dict[int, int]
) -> list[dict[str, Any]]:
    watchlist = []
    for i, t in enumerate(rng.sample(equities, min(spec.watched, len(equities)))):
        side = rng.choice(("LONG", "SHORT"))
        entry = price[t] - price[t] % TICK
        distance = entry * rng.randint(50, 300) // 10_000  # 0.5% .. 3%, deliberately not on the tick
        stop = entry - distance if side == "LONG" else entry + distance
        kind = rng.choice(("percent", "points", None))
        trail = None
        if kind == "percent":
            trail = {"type": "percent", "value": rng.randint(40, 300) / 100}
        elif kind == "points":
            trail = {"type": "points", "value": _rupees(max(1, entry * rng.randint(40, 300) // 10_000))}
        activation = None
        if trail and rng.random() < 0.4:
            move = entry * rng.randint(10, 100) // 10_000
            activation = _rupees(entry + move if side == "LONG" else entry - move)
        watchlist.append(
            {
                "bracket_id": f"s{spec.seed}-{i:05d}",
                "instrument_token": t,
                "side": side,
                "product": rng.choice(("MIS", "CNC", "NRML")),
                "entry_price": _rupees(entry),
                "stop_price": _rupees(stop),
                "tick_size": rng.choice((0.05, 0.05, 0.05, 0.1, 0.01)),
                "trail": trail,
                "activation_price": activation,
            }
        )
    for j in range(min(spec.twins, len(watchlist) // 10)):
        twin: dict[str, Any] = dict(watchlist[j])
        twin["bracket_id"] = f"{twin['bracket_id']}-twin"
        twin["side"] = "SHORT" if twin["side"] == "LONG" else "LONG"
        entry = price[int(twin["instrument_token"])]
        twin["stop_price"] = _rupees(entry + entry // 100 if twin["side"] == "SHORT" else entry - entry // 100)
        twin["activation_price"] = None
        watchlist.append(twin)
    return watchlist


def write_session(spec: SessionSpec, frames_path: Path | str, watchlist_path: Path | str) -> tuple[int, int, int]:
    """Generate and write both files; returns (messages, packets, brackets)."""
    frames, watchlist = generate(spec)
    write_frames(frames_path, frames)
    Path(watchlist_path).write_text(json.dumps(watchlist, indent=1))
    packets = sum(struct.unpack_from(">H", f)[0] for f in frames if len(f) > 1 and f[:1] not in (b"{", b"["))
    return len(frames), packets, len(watchlist)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Generate a deterministic ticker recording and watchlist.")
    d = SessionSpec()
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--instruments", type=int, default=d.instruments)
    ap.add_argument("--messages", type=int, default=d.messages)
    ap.add_argument("--packets-per-message", type=int, default=d.packets_per_message)
    ap.add_argument("--watched", type=int, default=d.watched)
    ap.add_argument("--gap-rate", type=float, default=d.gap_rate, help="chance per packet of a 1-4%% price jump")
    ap.add_argument("--modes", choices=("mixed", *MODES), default=d.modes)
    ap.add_argument("--drift", type=float, default=d.drift, help="per-tick trend, e.g. 0.001 (stops trail a lot)")
    ap.add_argument("--frames", type=Path, required=True)
    ap.add_argument("--watchlist", type=Path, required=True)
    a = ap.parse_args(argv)
    spec = SessionSpec(
        seed=a.seed,
        instruments=a.instruments,
        messages=a.messages,
        packets_per_message=a.packets_per_message,
        watched=a.watched,
        gap_rate=a.gap_rate,
        modes=a.modes,
        drift=a.drift,
    )
    messages, packets, brackets = write_session(spec, a.frames, a.watchlist)
    print(f"{messages} messages, {packets} packets, {brackets} brackets -> {a.frames}, {a.watchlist}")


if __name__ == "__main__":
    main()
