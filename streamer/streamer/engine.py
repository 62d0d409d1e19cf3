"""The trailing engine: brackets in memory keyed by instrument token, docs/trailing.md applied to every packet.

This is the streamer's hot path, so it is written for CPython speed while producing exactly what the plain
calculator (bracketflow.domain.trailing.evaluate) produces, packet for packet:

- unwatched tokens cost one dict lookup; index tokens are never in the dict, so index packets are skipped;
- a packet whose LTP is <= 0 is no price (Kite sends 0 before an instrument's first trade): it is skipped for its
  brackets, no trigger and no trail (the calculator's step 0, see docs/trailing.md);
- a message whose packets are all full-mode (the normal case for a full subscription) is decoded in C by
  one struct.iter_unpack over a fixed 186-byte stride, after checking every length field in one slice;
- per bracket the state is a small list of ints; a tick costs two comparisons unless it exits or moves
  the stop. The second comparison is against a precomputed threshold: the least favourable reference
  price at which the trail would tighten the stop (or reach the activation price). Because the candidate
  stop is monotone in the reference price, a reference short of the threshold cannot change anything,
  so skipping the arithmetic there is exact. When it is crossed the calculator's own functions compute the
  new stop and the threshold is recomputed.
- a price breakeven (breakeven_at) is a one-shot ratchet beside the trail, folded into the same threshold: once the
  reference price reaches breakeven_at (and is beyond the breakeven stop), the stop moves to the breakeven stop if
  that tightens it, and the trigger is spent. A trigger the stop has already passed (trailed, or moved by a breakeven
  set elsewhere, or resumed after a restart) is spent too: it never loosens a stop and never fires twice.

Positions in each message are reported as message_index (0-based count of every message fed, heartbeats
and text included) and packet_index (0-based position of the packet in its message, index packets included).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, NamedTuple

from bracketflow.domain.enums import TrailType
from bracketflow.domain.trailing import (
    BPS_PER_UNIT,
    TrailingBracket,
    to_paise,
)
from streamer.parser import (
    BEST_ASK_PRICE_AT,
    BEST_BID_PRICE_AT,
    FULL_PACKET_LEN,
    INT32,
    LTP_PACKET_LEN,
    TEXT_FIRST_BYTES,
    TOKEN_LTP,
    is_index_token,
)
from streamer.watchlist import WatchedBracket

# One full packet with its length prefix: skip the length, token (uint32), ltp, best bid price, best ask price.
_FULL_STRIDE = 2 + FULL_PACKET_LEN
_BID_GAP = 2 + BEST_BID_PRICE_AT - 10  # from after the ltp to the best bid price
_ASK_GAP = BEST_ASK_PRICE_AT - BEST_BID_PRICE_AT - 4
_TAIL = FULL_PACKET_LEN - BEST_ASK_PRICE_AT - 4
_FULL_RECORD = struct.Struct(f">2xIi{_BID_GAP}xi{_ASK_GAP}xi{_TAIL}x")
assert _FULL_RECORD.size == _FULL_STRIDE
_FULL_LEN_HI = bytes([FULL_PACKET_LEN >> 8])
_FULL_LEN_LO = bytes([FULL_PACKET_LEN & 0xFF])

_NEVER = 1 << 62  # a threshold no price reaches: LONG uses +_NEVER, SHORT -_NEVER

# Slots of the per-bracket state list (a list, not an object: index access is the cheapest in CPython).
# _M, _O, _D, _T are the trail's integer constants (see trail_constants); _ACTIVATION is None or paise.
# _BE_AT: the price breakeven's trigger in paise, None once spent (or without one); _BE_STOP: its stop in paise.
_LONG, _STOP, _THRESHOLD, _USES_DEPTH, _ID, _ACTIVATED, _M, _O, _D, _T, _ACTIVATION, _SPEC, _BE_AT, _BE_STOP = range(14)


class ExitIntent(NamedTuple):
    bracket_id: str
    message_index: int
    packet_index: int
    ltp: int  # paise
    stop_price: int  # paise: the stop that was hit


def trail_constants(spec: TrailingBracket) -> tuple[int, int, int, int]:
    """(m, o, D, t) such that steps 4-5 are one integer expression (a floor of a floor is one floor):
    LONG c = floor((ref*m - o) / D) * t, SHORT c = ceil((ref*m + o) / D) * t, with D = 10000*t and
    percent: m = 10000 -/+ bps, o = 0;  points: m = 10000, o = 10000*points."""
    t = spec.tick
    if spec.trail_type is TrailType.PERCENT:
        m = BPS_PER_UNIT - spec.trail_bps if spec.is_long else BPS_PER_UNIT + spec.trail_bps
        return m, 0, BPS_PER_UNIT * t, t
    return BPS_PER_UNIT, BPS_PER_UNIT * spec.trail_points, BPS_PER_UNIT * t, t


def trail_threshold(spec: TrailingBracket, stop: int, activated: bool) -> int:
    """The least favourable reference price at which evaluating the trail can change anything.

    LONG: any reference >= the threshold; SHORT: any reference <= it. Not yet activated: the activation
    price (so the activation is recorded when reached). Activated: the first reference whose rounded
    candidate beats the stop. With trail_constants (m, o, D, t):
      LONG  c(ref) > stop <=> floor((ref*m - o)/D) >= stop//t + 1     <=> ref >= ceil(((stop//t + 1)*D + o) / m)
      SHORT c(ref) < stop <=> ceil((ref*m + o)/D) <= ceil(stop/t) - 1 <=> ref <= floor(((ceil(stop/t) - 1)*D - o) / m)
    """
    if spec.trail_type is None:
        return _NEVER if spec.is_long else -_NEVER
    if not activated:
        assert spec.activation is not None
        return spec.activation
    m, o, d, t = trail_constants(spec)
    return _threshold(spec.is_long, stop, m, o, d, t)


def breakeven_threshold(long: bool, at: int, stop: int) -> int:
    """The least favourable reference price at which a price breakeven fires: at its trigger, and strictly beyond its
    stop (so the stop it sets is never one the market has already crossed)."""
    return max(at, stop + 1) if long else min(at, stop - 1)


def _threshold(long: bool, stop: int, m: int, o: int, d: int, t: int) -> int:
    if long:
        return -(-((stop // t + 1) * d + o) // m)
    return ((-(-stop // t) - 1) * d - o) // m


class TrailingEngine:
    """Feed it raw ticker messages; it returns the exits they cause and keeps every open bracket's stop.

    Live use: feed(message) per websocket message, watch()/unwatch() from the control queue,
    take_stop_changes() on a timer for coalesced persistence. Replay uses the very same object.
    """

    def __init__(self, brackets: Iterable[WatchedBracket] = ()) -> None:
        self._by_token: dict[int, tuple[list, ...]] = {}
        self._by_id: dict[str, tuple[list, int]] = {}  # bracket_id -> (state, token)
        self._changed: dict[str, int] = {}
        self._breakevens: dict[str, tuple[int, int]] = {}  # bracket_id -> (breakeven stop, the reference price)
        self.message_index = 0  # index the next message will get
        self.packets_seen = 0
        self.malformed_messages = 0
        for b in brackets:
            self.watch(b)

    # --- control ---------------------------------------------------------------------------------

    def watch(self, bracket: WatchedBracket, *, activated: bool = False) -> None:
        """Start trailing a bracket (after those already watched on its token). Raises ValueError if it
        is already watched or cannot be trailed."""
        if bracket.bracket_id in self._by_id:
            raise ValueError(f"bracket {bracket.bracket_id} is already watched")
        spec = bracket.compile()
        activated = activated or spec.activated
        m, o, d, t = trail_constants(spec)
        be_at = be_stop = None
        if bracket.breakeven_at is not None and bracket.breakeven_stop is not None:
            be_at, be_stop = to_paise(bracket.breakeven_at), to_paise(bracket.breakeven_stop)
        state = [
            spec.is_long,
            spec.stop,
            0,
            spec.is_mis and (spec.trail_type is not None or be_at is not None),
            bracket.bracket_id,
            activated,
            m,
            o,
            d,
            t,
            spec.activation,
            spec,
            be_at,
            be_stop,
        ]
        state[_THRESHOLD] = _next_threshold(state)
        token = bracket.instrument_token
        self._by_id[bracket.bracket_id] = (state, token)
        if is_index_token(token):
            return  # index packets are never evaluated, so neither is a bracket on one
        self._by_token[token] = (*self._by_token.get(token, ()), state)

    def unwatch(self, bracket_id: str) -> bool:
        """Stop trailing a bracket (closed elsewhere, cancelled...). False if it was not watched."""
        entry = self._by_id.pop(bracket_id, None)
        if entry is None:
            return False
        self._drop(entry[0], entry[1])
        self._changed.pop(bracket_id, None)
        self._breakevens.pop(bracket_id, None)
        return True

    def tighten(self, bracket_id: str, stop: int) -> bool:
        """Move a watched bracket's stop to `stop` (paise) if that tightens it (a breakeven set elsewhere); the trail
        goes on from there. False when it would loosen it or the bracket is not watched: a stop never loosens."""
        entry = self._by_id.get(bracket_id)
        if entry is None:
            return False
        s = entry[0]
        if not (stop > s[_STOP] if s[_LONG] else stop < s[_STOP]):
            return False
        s[_STOP] = stop
        self._changed[bracket_id] = stop
        s[_THRESHOLD] = _next_threshold(s)
        return True

    def _drop(self, state: list, token: int) -> None:
        rest = tuple(s for s in self._by_token.get(token, ()) if s is not state)
        if rest:
            self._by_token[token] = rest
        else:
            self._by_token.pop(token, None)

    # --- state for persistence ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, bracket_id: object) -> bool:
        return bracket_id in self._by_id

    def stop_of(self, bracket_id: str) -> int:
        return self._by_id[bracket_id][0][_STOP]

    def is_activated(self, bracket_id: str) -> bool:
        return self._by_id[bracket_id][0][_ACTIVATED]

    def stops(self) -> dict[str, int]:
        """Every watched bracket's current stop in paise, in watch order."""
        return {bid: entry[0][_STOP] for bid, entry in self._by_id.items()}

    def take_stop_changes(self) -> dict[str, int]:
        """Stops that moved since the last call (latest value only), for coalesced persistence."""
        changed, self._changed = self._changed, {}
        return changed

    def take_breakevens(self) -> dict[str, tuple[int, int]]:
        """Price breakevens that fired since the last call: bracket_id -> (the stop they set, the reference price that
        reached the trigger), both in paise. The stop is in take_stop_changes too (with any trail after it)."""
        fired, self._breakevens = self._breakevens, {}
        return fired

    # --- the hot path ------------------------------------------------------------------------------

    def feed(self, message: bytes) -> list[ExitIntent]:
        """Apply one raw ticker message; returns the exits it caused, in the order they happened."""
        mi = self.message_index
        self.message_index = mi + 1
        n = len(message)
        if n < 2 or message[0] in TEXT_FIRST_BYTES:
            return []  # heartbeat, empty, or a text message (order updates go elsewhere)
        count = (message[0] << 8) | message[1]
        rows: Iterable[tuple[int, tuple[Any, ...]]]
        if (
            n == 2 + count * _FULL_STRIDE
            and message[2::_FULL_STRIDE] == _FULL_LEN_HI * count
            and message[3::_FULL_STRIDE] == _FULL_LEN_LO * count
        ):
            rows = enumerate(_FULL_RECORD.iter_unpack(memoryview(message)[2:]))
            self.packets_seen += count
        else:
            rows = self._mixed_rows(message, count)
        return self._run(rows, mi)

    def _mixed_rows(self, message: bytes, count: int) -> list[tuple[int, tuple[int, int, int, int]]]:
        """Watched packets of a message with mixed modes: (packet_index, (token, ltp, bid, ask)); a packet
        without depth gets bid = ask = 0, which makes every reference price fall back to LTP."""
        by_token = self._by_token
        rows = []
        n = len(message)
        offset = 2
        seen = 0
        for pi in range(count):
            start = offset + 2
            if start > n:
                self.malformed_messages += 1
                break
            length = (message[offset] << 8) | message[offset + 1]
            offset = start + length
            if offset > n:
                self.malformed_messages += 1
                break
            seen += 1
            if length < LTP_PACKET_LEN:
                continue
            token, ltp = TOKEN_LTP.unpack_from(message, start)
            if token not in by_token:
                continue
            if length == FULL_PACKET_LEN:
                bid = INT32.unpack_from(message, start + BEST_BID_PRICE_AT)[0]
                ask = INT32.unpack_from(message, start + BEST_ASK_PRICE_AT)[0]
                rows.append((pi, (token, ltp, bid, ask)))
            else:
                rows.append((pi, (token, ltp, 0, 0)))
        self.packets_seen += seen
        return rows

    def _run(self, rows: Iterable[tuple[int, tuple[Any, ...]]], mi: int) -> list[ExitIntent]:
        exits: list[ExitIntent] = []
        get = self._by_token.get
        for pi, (token, ltp, bid, ask) in rows:
            states = get(token)
            if states is None or ltp <= 0:
                continue  # unwatched, or no price (0 = no trade yet, or a glitch): never an exit, never a trail
            for s in states:
                if s[0]:  # LONG
                    if ltp <= s[1]:
                        exits.append(ExitIntent(s[4], mi, pi, ltp, s[1]))
                        self._retire(s, token)
                        continue
                    ref = bid if s[3] and bid > 0 else ltp
                    if ref >= s[2]:
                        self._trail(s, ref)
                else:  # SHORT
                    if ltp >= s[1]:
                        exits.append(ExitIntent(s[4], mi, pi, ltp, s[1]))
                        self._retire(s, token)
                        continue
                    ref = ask if s[3] and ask > 0 else ltp
                    if ref <= s[2]:
                        self._trail(s, ref)
        return exits

    def _retire(self, state: list, token: int) -> None:
        # The loop in _run holds the old tuple, so the bracket's later siblings on this packet still run.
        self._by_id.pop(state[_ID], None)
        self._changed.pop(state[_ID], None)
        self._breakevens.pop(state[_ID], None)
        self._drop(state, token)

    def _trail(self, s: list, ref: int) -> None:
        """The reference has reached the threshold: the trail, then the price breakeven if it is due and still tightens
        the stop, then the next threshold."""
        if s[_SPEC].trail_type is not None:
            self._trail_step(s, ref)
        at = s[_BE_AT]
        if at is not None and (ref >= at and ref > s[_BE_STOP] if s[_LONG] else ref <= at and ref < s[_BE_STOP]):
            s[_BE_AT] = None  # one shot
            if s[_BE_STOP] > s[_STOP] if s[_LONG] else s[_BE_STOP] < s[_STOP]:
                s[_STOP] = s[_BE_STOP]
                self._changed[s[_ID]] = s[_STOP]
                self._breakevens[s[_ID]] = (s[_STOP], ref)
        s[_THRESHOLD] = _next_threshold(s)

    def _trail_step(self, s: list, ref: int) -> None:
        """Steps 3-6 of the trail.

        The same integer arithmetic as the calculator, folded into one expression per side (trail_constants);
        the tests hold the two to exact agreement."""
        long = s[_LONG]
        if not s[_ACTIVATED]:
            activation = s[_ACTIVATION]
            if activation is not None and (ref < activation if long else ref > activation):
                return
            s[_ACTIVATED] = True
        m, o, d, t = s[_M], s[_O], s[_D], s[_T]
        stop = s[_STOP]
        if long:
            c = (ref * m - o) // d * t
            if c > stop:
                stop = c
        else:
            c = -(-(ref * m + o) // d) * t
            if c < stop:
                stop = c
        if stop != s[_STOP]:
            s[_STOP] = stop
            self._changed[s[_ID]] = stop


def _next_threshold(s: list) -> int:
    """The bracket's threshold: the trail's, or the price breakeven's when that comes first. A breakeven the stop has
    already reached is spent here (it could only loosen the stop)."""
    long = s[_LONG]
    threshold = trail_threshold(s[_SPEC], s[_STOP], s[_ACTIVATED])
    at = s[_BE_AT]
    if at is None:
        return threshold
    if s[_BE_STOP] <= s[_STOP] if long else s[_BE_STOP] >= s[_STOP]:
        s[_BE_AT] = None
        return threshold
    fires = breakeven_threshold(long, at, s[_BE_STOP])
    return min(threshold, fires) if long else max(threshold, fires)
