"""The ticker parser and the frames file, against hand-built bytes."""

from __future__ import annotations

import struct

import pytest

from streamer.frames import FrameWriter, TruncatedFrames, iter_frames, read_frames, split_frames, write_frames
from streamer.parser import MessageKind, Tick, is_index_token, message_kind, parse_message
from tests.streamer.packets import HEARTBEAT, full_packet, ltp_packet, message, quote_packet

INFY = (408065 << 8) | 1
NIFTY = 256265  # 0x3E909: segment byte 9, an index


def test_full_packet_best_bid_and_ask_come_from_bytes_68_and_128():
    # Given a full packet whose depth says bid 1499.95 (bytes 68..72) and ask 1500.10 (bytes 128..132)
    packet = full_packet(INFY, 150000, 149995, 150010)
    assert struct.unpack_from(">i", packet, 68)[0] == 149995
    assert struct.unpack_from(">i", packet, 128)[0] == 150010
    # When parsed, Then the tick carries them with the depth flag
    parsed = parse_message(message(packet))
    assert parsed.kind is MessageKind.BINARY
    assert parsed.ticks == [Tick(0, INFY, 150000, 149995, 150010, True)]


def test_ltp_and_quote_packets_have_no_depth():
    parsed = parse_message(message(ltp_packet(INFY, 150000), quote_packet(INFY + 256, 20000)))
    assert parsed.ticks == [Tick(0, INFY, 150000, 0, 0, False), Tick(1, INFY + 256, 20000, 0, 0, False)]


def test_index_packets_are_skipped_but_keep_their_place_in_the_count():
    # Given an index packet (28 B quote layout) between two equity packets
    index_quote = struct.pack(">Iiiiiii", NIFTY, 2400000, 0, 0, 0, 0, 0)
    parsed = parse_message(message(ltp_packet(INFY, 1), index_quote, ltp_packet(INFY, 2)))
    # Then it yields no tick, and the packet after it is still packet 2
    assert is_index_token(NIFTY) and not is_index_token(INFY)
    assert [(t.packet_index, t.ltp) for t in parsed.ticks] == [(0, 1), (2, 2)]
    assert parsed.packet_count == 3


def test_heartbeat_text_and_empty_messages():
    assert message_kind(HEARTBEAT) is MessageKind.HEARTBEAT
    assert message_kind(b"") is MessageKind.EMPTY
    text = parse_message(b'{"type":"order","data":{"order_id":"1","status":"COMPLETE"}}')
    assert text.kind is MessageKind.TEXT
    assert text.text["data"]["status"] == "COMPLETE"
    assert parse_message(b'{"broken').malformed is True


def test_a_truncated_message_keeps_the_packets_before_the_break():
    # Given a message that claims 3 packets but is cut inside the second
    whole = message(ltp_packet(INFY, 1), ltp_packet(INFY, 2), ltp_packet(INFY, 3))
    cut = whole[: 2 + 10 + 5]
    # When parsed, Then the first packet is read and the message is reported malformed
    parsed = parse_message(cut)
    assert parsed.malformed is True
    assert [t.ltp for t in parsed.ticks] == [1]


def test_frames_round_trip(tmp_path):
    messages = [message(ltp_packet(INFY, 5)), HEARTBEAT, b'{"a":1}', b""]
    path = tmp_path / "s.bin"
    assert write_frames(path, messages) == 4
    assert read_frames(path) == messages
    assert list(iter_frames(path)) == messages
    # the length prefix is 4-byte big-endian
    assert path.read_bytes()[:4] == struct.pack(">I", len(messages[0]))
    with (tmp_path / "w.bin").open("wb") as f:
        writer = FrameWriter(f)
        for m in messages:
            writer.write(m)
    assert (tmp_path / "w.bin").read_bytes() == path.read_bytes()


def test_a_truncated_frames_file_is_refused_or_trimmed(tmp_path):
    data = b"".join(struct.pack(">I", len(m)) + m for m in (b"abc", b"defg"))
    with pytest.raises(TruncatedFrames):
        split_frames(data[:-1])
    assert split_frames(data[:-1], strict=False) == [b"abc"]
    path = tmp_path / "cut.bin"
    path.write_bytes(data[:5])
    with pytest.raises(TruncatedFrames):
        list(iter_frames(path))
