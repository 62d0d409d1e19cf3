"""The paper exchange's own settings (it is a separate process, not part of the Lambda layer)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from paper.engine import parse_market_hours

MARKETS = ("manual", "walk")


@dataclass(frozen=True)
class PaperConfig:
    host: str = "127.0.0.1"
    port: int = 8700
    # manual: quotes only from POST /_paper/quotes; walk: a seeded random walk on every instrument.
    market: str = "walk"
    seed: int = 7
    api_key: str = "paper"
    access_token: str = "paper-token"
    api_secret: str = "paper-secret"
    # The Kite app's registered redirect URL: where /connect/login sends the browser with a request_token.
    redirect_url: str = "http://127.0.0.1:3000/broker/callback"
    partial_fills: bool = False
    # Kite's postbacks: where each order update is also POSTed (JSON with its checksum), as Kite does to the app's
    # registered postback URL; empty: none (the ticker's order updates only).
    postback_url: str = ""
    # "09:15-15:30" (IST) closes the market outside those hours; empty: open around the clock.
    market_hours: str = ""
    walk_interval_s: float = 0.2
    # How far one walk step may move a price, in basis points (at least a tick): 2 is a calm market; a soak
    # compresses time with a faster one.
    walk_step_bps: float = 2.0
    heartbeat_interval_s: float = 1.0
    # Kite's order rate limits per API key (0: none): order writes (POST, PUT, DELETE /orders) per second and per
    # minute, placements per day. Past one, Kite answers 429 "Too many requests" and does nothing.
    order_rate_per_second: int = 10
    order_rate_per_minute: int = 400
    orders_per_day: int = 5000

    def __post_init__(self) -> None:
        if self.market not in MARKETS:
            raise ValueError(f"PAPER_MARKET must be one of {', '.join(MARKETS)}; got {self.market!r}")
        parse_market_hours(self.market_hours)
        if not self.walk_interval_s > 0 or not self.walk_step_bps > 0:
            raise ValueError("PAPER_WALK_INTERVAL_S and PAPER_WALK_STEP_BPS must be above 0")
        if min(self.order_rate_per_second, self.order_rate_per_minute, self.orders_per_day) < 0:
            raise ValueError("PAPER_ORDER_RATE_PER_SECOND, _PER_MINUTE and PAPER_ORDERS_PER_DAY cannot be negative")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PaperConfig:
        env = os.environ if environ is None else environ
        return cls(
            port=int(env.get("PAPER_PORT", "8700")),
            market=env.get("PAPER_MARKET", "walk").strip().lower(),
            seed=int(env.get("PAPER_SEED", "7")),
            api_key=env.get("PAPER_API_KEY", "paper"),
            access_token=env.get("PAPER_ACCESS_TOKEN", "paper-token"),
            api_secret=env.get("PAPER_API_SECRET", "paper-secret"),
            redirect_url=env.get("PAPER_REDIRECT_URL") or "http://127.0.0.1:3000/broker/callback",
            partial_fills=env.get("PAPER_PARTIAL_FILLS", "0").strip().lower() in {"1", "true", "yes"},
            postback_url=env.get("PAPER_POSTBACK_URL", "").strip(),
            market_hours=env.get("PAPER_MARKET_HOURS", "").strip(),
            walk_interval_s=float(env.get("PAPER_WALK_INTERVAL_S") or 0.2),
            walk_step_bps=float(env.get("PAPER_WALK_STEP_BPS") or 2.0),
            order_rate_per_second=int(env.get("PAPER_ORDER_RATE_PER_SECOND") or 10),
            order_rate_per_minute=int(env.get("PAPER_ORDER_RATE_PER_MINUTE") or 400),
            orders_per_day=int(env.get("PAPER_ORDERS_PER_DAY") or 5000),
        )
