"""The Kite Ticker binary protocol, parsed with no I/O (docs/trailing.md, "The ticker's bytes").

A binary message is: int16 packet count, then per packet an int16 length and the packet. Everything is
big-endian; prices are int32 paise. Packets by length:
    8 B   ltp mode:   token, ltp
    44 B  quote mode: token, ltp, ... (no depth)
    184 B full mode:  the quote fields, timestamps, then market depth at byte 64: 10 entries of 12 B
                      (int32 qty, int32 price, int16 orders, 2 pad), 5 bids then 5 asks; so the best
                      bid price is at bytes 68..72 and the best ask price at 128..132.
Index packets (token & 0xFF == 9, segment "indices") have their own shorter layouts and are skipped.
A 1-byte message is a heartbeat. Text messages (JSON, e.g. order updates) are told apart by their first
byte: '{' or '['. A binary message can never start with those bytes, because its first byte is the high
byte of the packet count and a connection carries at most 3000 instruments (0x0BB8), far below 0x5B00.

Framing errors never raise: packets are read in order until one claims more bytes than the message has;
that packet and everything after it are dropped and the message is reported malformed.
"""

from __future__ import annotations

import json
import struct
from enum import StrEnum
from typing import Any, NamedTuple

INDEX_SEGMENT = 9
LTP_PACKET_LEN = 8
QUOTE_PACKET_LEN = 44
FULL_PACKET_LEN = 184
BEST_BID_PRICE_AT = 68  # depth starts at 64; the first bid entry's price follows its int32 quantity
BEST_ASK_PRICE_AT = 128  # 64 + 5 bid entries * 12 + 4
TEXT_FIRST_BYTES = frozenset(b"{[")

# Unsigned token, signed int32 prices, as the byte layout says.
TOKEN_LTP = struct.Struct(">Ii")
INT32 = struct.Struct(">i")
UINT16 = struct.Struct(">H")


class MessageKind(StrEnum):
    BINARY = "binary"
    HEARTBEAT = "heartbeat"
    TEXT = "text"
    EMPTY = "empty"


class Tick(NamedTuple):
    """One non-index packet, reduced to what trailing needs. best_bid/best_ask are 0 without depth."""

    packet_index: int
    token: int
    ltp: int
    best_bid: int
    best_ask: int
    has_depth: bool


class ParsedMessage(NamedTuple):
    kind: MessageKind
    ticks: list[Tick]  # non-index packets in order; packet_index counts every packet, index ones included
    packet_count: int  # packets read (index packets included)
    malformed: bool
    text: Any = None  # the decoded JSON of a text message


def is_index_token(token: int) -> bool:
    return token & 0xFF == INDEX_SEGMENT


def message_kind(message: bytes | bytearray | memoryview) -> MessageKind:
    n = len(message)
    if n == 0:
        return MessageKind.EMPTY
    if n == 1:
        return MessageKind.HEARTBEAT
    if message[0] in TEXT_FIRST_BYTES:
        return MessageKind.TEXT
    return MessageKind.BINARY


def iter_packets(message: bytes | bytearray | memoryview) -> tuple[list[tuple[int, memoryview]], bool]:
    """Split a binary message into (packet_index, packet bytes); the flag says the framing broke."""
    view = memoryview(message)
    n = len(view)
    if n < 2:
        return [], n == 1 or n == 0
    count = UINT16.unpack_from(view, 0)[0]
    packets: list[tuple[int, memoryview]] = []
    offset = 2
    for index in range(count):
        if offset + 2 > n:
            return packets, True
        length = UINT16.unpack_from(view, offset)[0]
        start = offset + 2
        offset = start + length
        if offset > n:
            return packets, True
        packets.append((index, view[start:offset]))
    return packets, False


def parse_packet(packet_index: int, packet: bytes | memoryview) -> Tick | None:
    """A Tick, or None for index packets and packets too short to hold a token and an LTP."""
    if len(packet) < LTP_PACKET_LEN:
        return None
    token, ltp = TOKEN_LTP.unpack_from(packet, 0)
    if is_index_token(token):
        return None
    if len(packet) == FULL_PACKET_LEN:
        bid = INT32.unpack_from(packet, BEST_BID_PRICE_AT)[0]
        ask = INT32.unpack_from(packet, BEST_ASK_PRICE_AT)[0]
        return Tick(packet_index, token, ltp, bid, ask, True)
    return Tick(packet_index, token, ltp, 0, 0, False)


def parse_message(message: bytes | bytearray | memoryview) -> ParsedMessage:
    kind = message_kind(message)
    if kind is MessageKind.TEXT:
        try:
            text = json.loads(bytes(message))
        except ValueError:
            return ParsedMessage(kind, [], 0, True, None)
        return ParsedMessage(kind, [], 0, False, text)
    if kind is not MessageKind.BINARY:
        return ParsedMessage(kind, [], 0, False)
    packets, malformed = iter_packets(message)
    ticks = [t for t in (parse_packet(i, p) for i, p in packets) if t is not None]
    return ParsedMessage(kind, ticks, len(packets), malformed)
