"""Kite Ticker binary packets, byte for byte (big-endian), so the real streamer's parser can read the paper feed.

Message: int16 packet count, then per packet int16 length + packet. A 1-byte message is a heartbeat.
Packets: ltp 8 B (token, ltp); quote 44 B (token, ltp, last qty, average price, volume, total buy qty,
total sell qty, open, high, low, close); full 184 B = quote + last trade time, oi, oi day high, oi day low,
exchange time, then depth at byte 64: 10 entries of 12 B (int32 qty, int32 price, int16 orders, 2 pad),
bids first. Index packets (token & 0xFF == 9): quote 28 B (token, ltp, high, low, open, close, change),
full 32 B (+ exchange time). Prices are integer paise (NSE/NFO divisor 100).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from bracketflow.domain.instruments import Instrument, is_index_token
from paper.engine import DEFAULT_TICK, Quote

MODE_LTP = "ltp"
MODE_QUOTE = "quote"
MODE_FULL = "full"
MODES = (MODE_LTP, MODE_QUOTE, MODE_FULL)
HEARTBEAT = b"\x00"

LTP_PACKET = struct.Struct(">II")
QUOTE_PACKET = struct.Struct(">11I")
FULL_EXTRA = struct.Struct(">5I")
DEPTH_ENTRY = struct.Struct(">IIH2x")
INDEX_QUOTE_PACKET = struct.Struct(">6Ii")
INDEX_FULL_EXTRA = struct.Struct(">I")
PACKET_HEADER = struct.Struct(">H")


def to_paise(value: Decimal) -> int:
    return int((value * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(frozen=True, slots=True)
class TickSnapshot:
    """One instrument's market data in wire units (paise, quantities, epoch seconds)."""

    token: int
    ltp: int
    last_qty: int = 0
    average_price: int = 0
    volume: int = 0
    buy_qty: int = 0
    sell_qty: int = 0
    open: int = 0
    high: int = 0
    low: int = 0
    close: int = 0
    last_trade_time: int = 0
    oi: int = 0
    oi_day_high: int = 0
    oi_day_low: int = 0
    exchange_time: int = 0
    # Five (qty, price paise, orders) levels each; bids best first, asks best first.
    bids: tuple[tuple[int, int, int], ...] = ()
    asks: tuple[tuple[int, int, int], ...] = ()


def snapshot_from_quote(instrument: Instrument, quote: Quote) -> TickSnapshot:
    bids, asks = quote.depth(instrument.tick_size if instrument.tick_size > 0 else DEFAULT_TICK)
    epoch = int(quote.timestamp.timestamp()) if quote.timestamp else 0
    return TickSnapshot(
        token=instrument.instrument_token,
        ltp=to_paise(quote.ltp),
        last_qty=quote.last_qty,
        average_price=to_paise(quote.ltp),
        volume=quote.volume,
        buy_qty=sum(level.quantity for level in bids),
        sell_qty=sum(level.quantity for level in asks),
        open=to_paise(quote.open),
        high=to_paise(quote.high),
        low=to_paise(quote.low),
        close=to_paise(quote.close),
        last_trade_time=epoch,
        exchange_time=epoch,
        bids=tuple((level.quantity, to_paise(level.price), level.orders) for level in bids),
        asks=tuple((level.quantity, to_paise(level.price), level.orders) for level in asks),
    )


def encode_packet(tick: TickSnapshot, mode: str) -> bytes:
    if mode == MODE_LTP:
        return LTP_PACKET.pack(tick.token, tick.ltp)
    if is_index_token(tick.token):
        packet = INDEX_QUOTE_PACKET.pack(
            tick.token, tick.ltp, tick.high, tick.low, tick.open, tick.close, tick.ltp - tick.close
        )
        return packet + INDEX_FULL_EXTRA.pack(tick.exchange_time) if mode == MODE_FULL else packet
    packet = QUOTE_PACKET.pack(
        tick.token,
        tick.ltp,
        tick.last_qty,
        tick.average_price,
        tick.volume,
        tick.buy_qty,
        tick.sell_qty,
        tick.open,
        tick.high,
        tick.low,
        tick.close,
    )
    if mode != MODE_FULL:
        return packet
    extra = FULL_EXTRA.pack(tick.last_trade_time, tick.oi, tick.oi_day_high, tick.oi_day_low, tick.exchange_time)
    empty = (0, 0, 0)
    levels = [*tick.bids[:5], *[empty] * (5 - len(tick.bids[:5])), *tick.asks[:5], *[empty] * (5 - len(tick.asks[:5]))]
    depth = b"".join(DEPTH_ENTRY.pack(qty, price, orders) for qty, price, orders in levels)
    return packet + extra + depth


def encode_message(packets: list[bytes]) -> bytes:
    parts = [PACKET_HEADER.pack(len(packets))]
    for packet in packets:
        parts.append(PACKET_HEADER.pack(len(packet)))
        parts.append(packet)
    return b"".join(parts)


def split_message(message: bytes) -> list[bytes]:
    """The packets of one message (none for a heartbeat); raises ValueError on a truncated message."""
    if len(message) < 2:
        return []
    (count,) = PACKET_HEADER.unpack_from(message, 0)
    packets = []
    offset = 2
    for _ in range(count):
        if offset + 2 > len(message):
            raise ValueError("truncated ticker message")
        (length,) = PACKET_HEADER.unpack_from(message, offset)
        offset += 2
        if offset + length > len(message):
            raise ValueError("truncated ticker message")
        packets.append(message[offset : offset + length])
        offset += length
    return packets


@dataclass(frozen=True, slots=True)
class DecodedTouch:
    """What the paper exchange needs back from a replayed packet to move its book."""

    token: int
    ltp: int
    bid: int | None
    ask: int | None


def decode_touch(packet: bytes) -> DecodedTouch | None:
    if len(packet) < 8:
        return None
    token, ltp = LTP_PACKET.unpack_from(packet, 0)
    if len(packet) == 184:
        _, bid, _ = DEPTH_ENTRY.unpack_from(packet, 64)
        _, ask, _ = DEPTH_ENTRY.unpack_from(packet, 124)
        return DecodedTouch(token, ltp, bid or None, ask or None)
    return DecodedTouch(token, ltp, None, None)
