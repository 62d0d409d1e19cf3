"""Fault rules for the paper exchange: the failures a real broker throws at an adapter, on demand.

A rule has a kind, a match (REST path prefix, HTTP method, tradingsymbol; each optional), a count (how many
times it fires; default 1) and a rate (probability per matching event, from a seeded RNG, default 1).
Kinds: reject (the order is placed REJECTED), http_500, http_429 (refused before anything is done), http_500_after
(the request IS processed, then answered 500: the broker acted but said it failed), timeout (the request IS processed,
the answer is held back), drop_ws (ticker sockets are closed), delay_fill (a fill is held for `seconds`),
drop_order_update (an order update for the matching tradingsymbol is never sent on the ticker, the connection stays
up: a lost update, one per count, for testing what recovers it), slow_visibility (an order or GTT the matching POST
creates is left out of GET /orders, /orders/{id}, /gtt/triggers and /gtt/triggers/{id} for `seconds`: a broker whose
books show a new entry late), outage_after (the matching request IS processed and answered 500, then every request
on the rule's path is refused with a 500, unprocessed, for `seconds`: the broker acted, then went down),
partial_cancel (a MARKET order the exchange accepts fills only `fill_ratio` of its quantity, rounded down to the lot,
and the rest is CANCELLED with a market-protection message: what Kite's market protection does in a fast market),
drop_postback (an order update's postback for the matching tradingsymbol is never sent; its ticker copy still is).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

KINDS = (
    "reject",
    "http_500",
    "http_429",
    "http_500_after",
    "timeout",
    "drop_ws",
    "delay_fill",
    "drop_order_update",
    "slow_visibility",
    "outage_after",
    "partial_cancel",
    "drop_postback",
)
DEFAULT_SECONDS = {"timeout": 30.0, "delay_fill": 2.0, "slow_visibility": 3.0, "outage_after": 5.0}


class FaultRuleError(ValueError):
    pass


@dataclass
class FaultRule:
    kind: str
    path: str | None = None
    method: str | None = None
    tradingsymbol: str | None = None
    count: int = 1
    rate: float = 1.0
    seconds: float | None = None
    message: str | None = None
    fill_ratio: float = 0.5  # partial_cancel: the share of the order that fills before the rest is cancelled
    fired: int = 0

    @classmethod
    def parse(cls, raw: Any) -> FaultRule:
        if not isinstance(raw, dict):
            raise FaultRuleError("each rule must be an object")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise FaultRuleError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        match = raw.get("match") or {}
        if not isinstance(match, dict):
            raise FaultRuleError("match must be an object")
        try:
            count = int(raw.get("count", 1))
            rate = float(raw.get("rate", 1.0))
            seconds = raw.get("seconds", DEFAULT_SECONDS.get(kind))
            seconds = float(seconds) if seconds is not None else None
            fill_ratio = float(raw.get("fill_ratio", 0.5))
        except (TypeError, ValueError):
            raise FaultRuleError("count, rate, seconds and fill_ratio must be numbers") from None
        if count < 1:
            raise FaultRuleError("count must be at least 1")
        if not 0 < rate <= 1:
            raise FaultRuleError("rate must be a probability above 0 up to 1")
        if seconds is not None and seconds < 0:
            raise FaultRuleError("seconds cannot be negative")
        if not 0 <= fill_ratio < 1:
            raise FaultRuleError("fill_ratio must be at least 0 and below 1 (some of the order is cancelled)")
        return cls(
            kind=kind,
            path=match.get("path"),
            method=str(match["method"]).upper() if match.get("method") else None,
            tradingsymbol=str(match["tradingsymbol"]).upper() if match.get("tradingsymbol") else None,
            count=count,
            rate=rate,
            seconds=seconds,
            message=raw.get("message"),
            fill_ratio=fill_ratio,
        )

    def matches(self, path: str | None, method: str | None, tradingsymbol: str | None) -> bool:
        # A rule's path matches exactly or as a prefix at a "/" boundary ("/orders" matches "/orders/regular").
        if self.path is not None and path is not None:
            base = self.path.rstrip("/")
            if not (path == self.path or path == base or path.startswith(base + "/")):
                return False
        if self.method is not None and method is not None and method.upper() != self.method:
            return False
        return not (self.tradingsymbol is not None and (tradingsymbol or "").upper() != self.tradingsymbol)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Faults:
    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._rng = random.Random(seed)
        self.rules: list[FaultRule] = []

    def configure(self, payload: Any) -> list[FaultRule]:
        """Replace every rule (an empty list clears them); all rules are checked before any is kept."""
        if not isinstance(payload, dict) or not isinstance(payload.get("rules"), list):
            raise FaultRuleError('the body must be {"rules": [...]}')
        self.rules = [FaultRule.parse(raw) for raw in payload["rules"]]
        return self.rules

    def clear(self) -> None:
        self.rules = []
        self._rng = random.Random(self._seed)

    def take(
        self,
        kinds: set[str],
        *,
        path: str | None = None,
        method: str | None = None,
        tradingsymbol: str | None = None,
    ) -> FaultRule | None:
        """The first live rule of these kinds matching this event, after its rate roll; it uses up one count."""
        for rule in self.rules:
            if rule.kind not in kinds or rule.fired >= rule.count:
                continue
            if not rule.matches(path, method, tradingsymbol):
                continue
            if rule.rate < 1 and self._rng.random() >= rule.rate:
                continue
            rule.fired += 1
            return rule
        return None
