"""Hand-built ticker messages for tests, straight from the byte layout in docs/trailing.md (no project code)."""

from __future__ import annotations

import struct


def ltp_packet(token: int, ltp: int) -> bytes:
    return struct.pack(">Ii", token, ltp)


def quote_packet(token: int, ltp: int) -> bytes:
    return struct.pack(">Ii", token, ltp) + bytes(36)


def full_packet(token: int, ltp: int, bid: int, ask: int) -> bytes:
    packet = bytearray(184)
    struct.pack_into(">Ii", packet, 0, token, ltp)
    for level in range(5):
        struct.pack_into(">iiHH", packet, 64 + 12 * level, 10, max(0, bid - 5 * level) if bid else 0, 1, 0)
        struct.pack_into(">iiHH", packet, 124 + 12 * level, 10, ask + 5 * level if ask else 0, 1, 0)
    return bytes(packet)


def message(*packets: bytes) -> bytes:
    return struct.pack(">H", len(packets)) + b"".join(struct.pack(">H", len(p)) + p for p in packets)


HEARTBEAT = b"\x00"
