"""The straightforward engine: the parser plus the plain calculator, one bracket object at a time.

Slow and obvious on purpose. The fast TrailingEngine must agree with it exactly; tests and the benchmark
compare the two.
"""

from __future__ import annotations

from collections.abc import Iterable

from bracketflow.domain.trailing import TrailingBracket, advance
from streamer.engine import ExitIntent
from streamer.parser import MessageKind, parse_message
from streamer.watchlist import WatchedBracket


class SimpleEngine:
    def __init__(self, brackets: Iterable[WatchedBracket] = ()) -> None:
        self.active: dict[str, tuple[int, TrailingBracket]] = {}  # watch order
        self.ids_by_token: dict[int, list[str]] = {}  # watch order per token
        self.message_index = 0
        for b in brackets:
            self.active[b.bracket_id] = (b.instrument_token, b.compile())
            self.ids_by_token.setdefault(b.instrument_token, []).append(b.bracket_id)

    def feed(self, message: bytes) -> list[ExitIntent]:
        mi = self.message_index
        self.message_index += 1
        parsed = parse_message(message)
        if parsed.kind is not MessageKind.BINARY:
            return []
        exits: list[ExitIntent] = []
        for tick in parsed.ticks:
            for bracket_id in self.ids_by_token.get(tick.token, []):
                if bracket_id not in self.active:
                    continue
                token, bracket = self.active[bracket_id]
                exited, after = advance(bracket, tick.ltp, tick.best_bid, tick.best_ask, tick.has_depth)
                if exited:
                    exits.append(ExitIntent(bracket_id, mi, tick.packet_index, tick.ltp, bracket.stop))
                    del self.active[bracket_id]
                else:
                    self.active[bracket_id] = (token, after)
        return exits

    def stops(self) -> dict[str, int]:
        return {bid: b.stop for bid, (_, b) in self.active.items()}
