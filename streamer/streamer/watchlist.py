"""The watchlist: the open brackets the engine trails, in the JSON shape of docs/trailing.md.

    [{"bracket_id": "...", "instrument_token": 408065, "side": "LONG"|"SHORT", "product": "MIS"|"CNC"|"NRML",
      "entry_price": 1500.0, "stop_price": 1480.0, "tick_size": 0.05,
      "trail": null | {"type": "percent"|"points", "value": 1.0}, "activation_price": null | 1510.0,
      "breakeven_at": null | 1520.0, "breakeven_stop": null | 1501.0}, ...]

breakeven_at / breakeven_stop: once the price reaches breakeven_at, the stop moves to breakeven_stop (once, and only
if that tightens it).

Numbers are read as exact decimals (never through float), so 1500.05 is 150005 paise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from bracketflow.contracts import WatchRequest
from bracketflow.domain.trailing import TrailingBracket, compile_bracket, to_rupees


@dataclass(frozen=True, slots=True)
class WatchedBracket:
    bracket_id: str
    instrument_token: int
    side: str
    product: str
    stop_price: Decimal
    tick_size: Decimal
    entry_price: Decimal | None = None
    trail: Mapping[str, Any] | None = None
    activation_price: Decimal | None = None
    breakeven_at: Decimal | None = None
    breakeven_stop: Decimal | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> WatchedBracket:
        try:
            token = raw["instrument_token"]
            if isinstance(token, bool) or not isinstance(token, int) or not 0 < token < 1 << 32:
                raise ValueError(f"instrument_token must be a uint32, got {token!r}")
            trail = raw.get("trail")
            return cls(
                bracket_id=str(raw["bracket_id"]),
                instrument_token=token,
                side=str(raw["side"]),
                product=str(raw["product"]),
                stop_price=_dec(raw["stop_price"]),
                tick_size=_dec(raw.get("tick_size", "0.05")),
                entry_price=None if raw.get("entry_price") is None else _dec(raw["entry_price"]),
                trail=None if trail is None else {"type": trail["type"], "value": _dec(trail["value"])},
                activation_price=None if raw.get("activation_price") is None else _dec(raw["activation_price"]),
                breakeven_at=None if raw.get("breakeven_at") is None else _dec(raw["breakeven_at"]),
                breakeven_stop=None if raw.get("breakeven_stop") is None else _dec(raw["breakeven_stop"]),
            )
        except KeyError as missing:
            raise ValueError(f"watchlist entry {raw.get('bracket_id')!r} lacks {missing}") from None

    @classmethod
    def from_request(cls, request: WatchRequest) -> WatchedBracket:
        """What the engine trails of a control queue's watch."""
        trail = request.trail
        return cls(
            bracket_id=request.bracket_id,
            instrument_token=request.instrument_token,
            side=request.side.value,
            product=request.product.value,
            stop_price=request.stop_price,
            tick_size=request.tick_size,
            entry_price=request.entry_price,
            trail=None if trail is None else {"type": trail.type.value, "value": trail.value},
            activation_price=request.activation_price,
            breakeven_at=request.breakeven_at,
            breakeven_stop=request.breakeven_stop,
        )

    def compile(self) -> TrailingBracket:
        try:
            return compile_bracket(
                side=self.side,
                product=self.product,
                stop_price=self.stop_price,
                tick_size=self.tick_size,
                trail=dict(self.trail) if self.trail is not None else None,
                activation_price=self.activation_price,
            )
        except ValueError as e:
            raise ValueError(f"bracket {self.bracket_id}: {e}") from None

    def with_stop(self, stop_paise: int) -> WatchedBracket:
        """The same bracket resumed from a persisted stop (e.g. after a streamer restart)."""
        return WatchedBracket(
            self.bracket_id,
            self.instrument_token,
            self.side,
            self.product,
            to_rupees(stop_paise),
            self.tick_size,
            self.entry_price,
            self.trail,
            self.activation_price,
            self.breakeven_at,
            self.breakeven_stop,
        )


def _dec(x: Any) -> Decimal:
    if isinstance(x, Decimal):
        return x
    if isinstance(x, float):
        return Decimal(repr(x))
    return Decimal(str(x))


def parse_watchlist(text: str | bytes) -> list[WatchedBracket]:
    raw = json.loads(text, parse_float=Decimal)
    if not isinstance(raw, list):
        raise ValueError("a watchlist is a JSON list of brackets")
    brackets = [WatchedBracket.from_dict(entry) for entry in raw]
    seen: set[str] = set()
    for b in brackets:
        if b.bracket_id in seen:
            raise ValueError(f"bracket_id {b.bracket_id} appears twice in the watchlist")
        seen.add(b.bracket_id)
    return brackets


def load_watchlist(path: Path | str) -> list[WatchedBracket]:
    return parse_watchlist(Path(path).read_bytes())


def watchlist_to_json(brackets: list[WatchedBracket]) -> str:
    def enc(b: WatchedBracket) -> dict[str, Any]:
        return {
            "bracket_id": b.bracket_id,
            "instrument_token": b.instrument_token,
            "side": b.side,
            "product": b.product,
            "entry_price": None if b.entry_price is None else float(b.entry_price),
            "stop_price": float(b.stop_price),
            "tick_size": float(b.tick_size),
            "trail": None if b.trail is None else {"type": b.trail["type"], "value": float(b.trail["value"])},
            "activation_price": None if b.activation_price is None else float(b.activation_price),
            "breakeven_at": None if b.breakeven_at is None else float(b.breakeven_at),
            "breakeven_stop": None if b.breakeven_stop is None else float(b.breakeven_stop),
        }

    return json.dumps([enc(b) for b in brackets], indent=1)
