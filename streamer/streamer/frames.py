"""The frames file: raw websocket messages, each prefixed by its length as a 4-byte big-endian unsigned int.

Used to record live sessions and replay them (tests, benchmarks, tuning trails on past sessions).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

_LENGTH = struct.Struct(">I")


class TruncatedFrames(ValueError):
    """The file ends in the middle of a frame (e.g. a recording cut off by a crash)."""


def encode_frame(message: bytes) -> bytes:
    return _LENGTH.pack(len(message)) + message


def write_frames(path: Path | str, messages: Iterable[bytes]) -> int:
    """Write every message; returns how many."""
    count = 0
    with open(path, "wb") as out:
        for message in messages:
            out.write(_LENGTH.pack(len(message)))
            out.write(message)
            count += 1
    return count


class FrameWriter:
    """Appends frames to an open binary file, flushing as it goes so a crash loses at most a partial frame."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.count = 0

    def write(self, message: bytes) -> None:
        self._out.write(_LENGTH.pack(len(message)) + message)
        self.count += 1


def split_frames(data: bytes | memoryview, *, strict: bool = True) -> list[bytes]:
    """Every message of a frames file held in memory. A truncated tail raises, or is dropped if not strict."""
    view = memoryview(data)
    n = len(view)
    messages: list[bytes] = []
    offset = 0
    while offset < n:
        if offset + 4 > n:
            if strict:
                raise TruncatedFrames(f"frames file ends inside a length prefix at byte {offset}")
            break
        length = _LENGTH.unpack_from(view, offset)[0]
        start = offset + 4
        offset = start + length
        if offset > n:
            if strict:
                raise TruncatedFrames(f"frame at byte {start - 4} claims {length} bytes but only {n - start} remain")
            break
        messages.append(bytes(view[start:offset]))
    return messages


def read_frames(path: Path | str, *, strict: bool = True) -> list[bytes]:
    return split_frames(Path(path).read_bytes(), strict=strict)


def iter_frames(path: Path | str, *, strict: bool = True) -> Iterator[bytes]:
    """Stream the messages of a file too big to hold twice in memory."""
    with open(path, "rb") as f:
        while True:
            head = f.read(4)
            if not head:
                return
            if len(head) < 4:
                if strict:
                    raise TruncatedFrames("frames file ends inside a length prefix")
                return
            (length,) = _LENGTH.unpack(head)
            body = f.read(length)
            if len(body) < length:
                if strict:
                    raise TruncatedFrames(f"last frame claims {length} bytes but only {len(body)} remain")
                return
            yield body
