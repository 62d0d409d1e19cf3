"""Typed identifiers and their generators.

Our ids (BracketId, BatchId, EventId) are "<prefix>_" + a 26-char ULID-like string: 48 bits of Unix time in
milliseconds then 80 random bits, in Crockford base32. They sort by creation time as plain strings, which keeps
DynamoDB range keys and the order book in time order without a separate timestamp key.
BrokerOrderId is the broker's id for an order; ClientOrderId is the caller's idempotency key. Keeping them
distinct types stops one being passed where the other is meant.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from typing import NewType

BracketId = NewType("BracketId", str)
ClientOrderId = NewType("ClientOrderId", str)
BrokerOrderId = NewType("BrokerOrderId", str)
BatchId = NewType("BatchId", str)
AccountId = NewType("AccountId", str)
EventId = NewType("EventId", str)

# Crockford's alphabet is in ASCII order, so string order equals numeric order.
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_LENGTH = 26
_TIME_CHARS = 10
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1

BRACKET_PREFIX = "br_"
BATCH_PREFIX = "bt_"
EVENT_PREFIX = "ev_"

# Kite's order `tag` is at most 20 alphanumeric characters.
BROKER_TAG_MAX = 20
BRACKET_REF_PREFIX = "BF"
_REF_HASH_CHARS = 16  # 80 bits: collisions are out of reach for any one account's history

_lock = threading.Lock()
_last_ms = -1
_last_random = 0


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def _decode(text: str) -> int:
    value = 0
    for ch in text:
        value = (value << 5) | CROCKFORD.index(ch)
    return value


def new_ulid(now_ms: int | None = None) -> str:
    """A 26-char ULID-like string, strictly increasing within this process.

    Two ids made in the same millisecond would otherwise order at random; like the ULID spec's monotonic mode
    we bump the random part instead (and borrow the next millisecond in the absurd case it overflows).
    """
    global _last_ms, _last_random
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            rnd = _last_random + 1
            if rnd > _RANDOM_MAX:
                ms, rnd = ms + 1, int.from_bytes(os.urandom(10), "big")
        else:
            rnd = int.from_bytes(os.urandom(10), "big")
        _last_ms, _last_random = ms, rnd
    return _encode(ms, _TIME_CHARS) + _encode(rnd, ULID_LENGTH - _TIME_CHARS)


def new_bracket_id() -> BracketId:
    return BracketId(BRACKET_PREFIX + new_ulid())


def new_batch_id() -> BatchId:
    return BatchId(BATCH_PREFIX + new_ulid())


def new_event_id() -> EventId:
    return EventId(EVENT_PREFIX + new_ulid())


def id_timestamp_ms(any_id: str) -> int:
    """The creation time (Unix ms) carried by one of our ids; ValueError if it is not one."""
    _, _, ulid = any_id.rpartition("_")
    if len(ulid) != ULID_LENGTH or any(ch not in CROCKFORD for ch in ulid):
        raise ValueError(f"not a bracketflow id: {any_id!r}")
    return _decode(ulid[:_TIME_CHARS])


def bracket_ref(bracket_id: str) -> str:
    """A short label for the broker's order `tag` (Kite: alphanumeric, <= 20 chars) naming the bracket.

    Deterministic (a hash of the id), so any component can compute it again and find the bracket's orders at the
    broker — e.g. to resolve a timed-out place-order call before retrying. "BF" + 16 Crockford chars = 18 chars,
    leaving room for order_tag's one-letter leg suffix.
    """
    digest = int.from_bytes(hashlib.sha256(bracket_id.encode()).digest()[:10], "big")
    return BRACKET_REF_PREFIX + _encode(digest, _REF_HASH_CHARS)


_ROLE_LETTERS = {"ENTRY": "E", "STOP": "S", "TARGET": "T", "EXIT": "X"}


def order_tag(bracket_id: str, role: str) -> str:
    """The tag for one leg's order: bracket_ref + a letter for the leg (E entry, S stop, T target, X exit).

    Lets the exit path tell "our exit was placed" from "our entry exists" when it looks orders up by tag.
    """
    letter = _ROLE_LETTERS.get(str(role).upper())
    if letter is None:
        raise ValueError(f"unknown leg role {role!r}")
    return bracket_ref(bracket_id) + letter


def is_bracket_ref_of(tag: str | None, bracket_id: str) -> bool:
    """True when a broker order's tag was made by bracket_ref/order_tag for this bracket."""
    return bool(tag) and str(tag).startswith(bracket_ref(bracket_id))
