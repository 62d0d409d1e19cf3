"""The checks a registered bracket must pass before it may reach the broker, in this order:

1. risk      (RISK_BLOCKED)       daily loss limit, max open brackets, max order value, trading window
2. guard     (GUARD_BLOCKED)      an open bracket in the opposite direction on the same symbol
3. duplicate (DUPLICATE_BLOCKED)  an open bracket for the same symbol and strategy
                                  (a reused client_order_id with a different request is tagged by intake)

Risk comes first because it protects the account whatever else is true; the guard next because taking both
sides of one symbol is a conflict between strategies, not a repeat; duplicates last. The first failing check
decides the tag. These functions are pure: the caller reads the account's open brackets and P&L once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from bracketflow.domain import calendar
from bracketflow.domain.accounts import RiskLimits
from bracketflow.domain.bracket import Bracket, BracketSpec
from bracketflow.domain.enums import Action, BlockKind, Exchange

# Trading windows come from the market calendar (bracketflow/data/calendar-<year>.json): each segment's sessions,
# exchange holidays and special sessions such as Muhurat trading.
IST = calendar.IST


@dataclass(frozen=True)
class Block:
    kind: BlockKind
    reason: str

    @property
    def tag(self) -> str:
        return self.kind.tag(self.reason)


# The day's loss reached the account's limit: the one reason for it, whether intake sees the realised loss alone or the
# kill switch (services/kill_switch.py) sees realised plus open loss and halts the account for the day.
DAILY_LOSS_HIT = "DAILY_LOSS_HIT"


def trading_day_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The current IST calendar day as a UTC interval [start, end)."""
    local = now.astimezone(IST)
    start = datetime.combine(local.date(), time(0, 0), tzinfo=IST)
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


def in_trading_window(exchange: Exchange, now: datetime) -> bool:
    """True while `exchange`'s segment is in a session (a holiday has none; a special session counts)."""
    return calendar.market_calendar().is_open(exchange.value, now)


def check_risk(
    spec: BracketSpec,
    *,
    limits: RiskLimits,
    open_count: int,
    realised_pnl_today: Decimal,
    now: datetime,
    market_always_open: bool,
) -> Block | None:
    if realised_pnl_today <= -limits.daily_loss_limit:
        return Block(BlockKind.RISK_BLOCKED, DAILY_LOSS_HIT)
    if open_count >= limits.max_open_brackets:
        return Block(BlockKind.RISK_BLOCKED, "MAX_OPEN_BRACKETS")
    if order_value_price(spec) * spec.quantity > limits.max_order_value:
        return Block(BlockKind.RISK_BLOCKED, "MAX_ORDER_VALUE")
    if not market_always_open and not in_trading_window(spec.exchange, now):
        return Block(BlockKind.RISK_BLOCKED, "OUTSIDE_TRADING_WINDOW")
    return None


def order_value_price(spec: BracketSpec) -> Decimal:
    """The price an entry's value is counted at, with no call to the broker (intake answers in milliseconds).

    The limit price; else an SL-M's trigger; else, for a MARKET entry, the price the alert sent with it (TradingView's
    {{close}}, which relative levels are measured from too) or, with none, the farthest price the position can be
    held at: a BUY filled above its target (a SELL above its stop) cannot be protected and is flattened at once, so
    the target (the stop) bounds what a MARKET entry can leave open.
    """
    if spec.entry_price is not None:
        return spec.entry_price
    if spec.trigger_price is not None:
        return spec.trigger_price
    return spec.target_price if spec.action is Action.BUY else spec.sl_price


def check_guard(spec: BracketSpec, open_brackets: list[Bracket]) -> Block | None:
    for other in open_brackets:
        if (
            other.spec.symbol == spec.symbol
            and other.spec.exchange is spec.exchange
            and other.spec.action is not spec.action
        ):
            return Block(BlockKind.GUARD_BLOCKED, "OPPOSITE_OPEN_BRACKET")
    return None


def check_duplicate(spec: BracketSpec, open_brackets: list[Bracket]) -> Block | None:
    for other in open_brackets:
        if (
            other.spec.symbol == spec.symbol
            and other.spec.exchange is spec.exchange
            and (other.spec.strategy or "") == (spec.strategy or "")
        ):
            return Block(BlockKind.DUPLICATE_BLOCKED, "OPEN_BRACKET_SAME_SYMBOL_STRATEGY")
    return None
