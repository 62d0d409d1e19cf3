"""The kill switch: flatten the account and refuse new brackets until the next session.

Tripped two ways:
- by itself (check_daily_loss, run every minute by the risk watch): when an account's realised P&L for the IST day
  plus the open P&L of its positions (at the broker's last price) reaches minus its daily loss limit;
- by hand: POST /api/v1/flatten (X-API-KEY).

Either way, in this order:
1. the account's halt for the IST day is written (HALT#<account>, sk the IST date; it expires on its own, so the next
   day's session trades again). From that moment intake blocks every new bracket, RISK_BLOCKED:DAILY_LOSS_HIT for the
   loss limit and RISK_BLOCKED:FLATTENED for a hand flatten. The first write of the day counts KillSwitchTripped (its
   alarm) and the notify function turns the halt item into a Telegram notice and a WebSocket account update;
2. every open bracket of the account is ended with reason KILL_SWITCH (services/signals.end_brackets): working
   entries cancelled, positions exited at market by the exit Lambda, which retries until flat.
A second trip the same day (the next minute's check, a second press) writes no new halt and simply ends whatever is
still open again, which is harmless: a bracket already exiting is left to its exit.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bracketflow import metrics_names
from bracketflow.adapters.dynamo import accounts as account_store
from bracketflow.adapters.dynamo import halts
from bracketflow.adapters.dynamo import records as r
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.domain.bracket import Bracket
from bracketflow.domain.enums import ExitReason, PositionSide
from bracketflow.domain.states import POSITION_BRACKET_STATUSES
from bracketflow.observability import logger, metrics
from bracketflow.services import risk, signals
from bracketflow.services.accounts import default_limits

DAILY_LOSS_HIT = risk.DAILY_LOSS_HIT  # the loss limit tripped it (intake's own realised-loss check says the same)
FLATTENED = "FLATTENED"  # the trader pressed it
_HALT_KEEP_S = 3 * 86400  # the item outlives its day; TTL deletion lags, so halted_today() checks the date itself


def halted_today(account_id: str, now: datetime) -> str | None:
    """The reason the account is halted for the IST day (DAILY_LOSS_HIT or FLATTENED), or None when it may trade."""
    return halts.halt_reason(account_id, now)


def _write_halt(account_id: str, reason: str, now: datetime, detail: dict[str, Any]) -> bool:
    """True when this is the day's first halt of the account (the one that alarms and notifies)."""
    _start, end = risk.trading_day_bounds(now)
    fields = {
        "reason": reason,
        "at": r.iso(now),
        "until": r.iso(end),
        "expires_at": int(now.timestamp()) + _HALT_KEEP_S,
        **{k: v for k, v in detail.items() if v is not None},
    }
    return halts.put_halt(account_id, now, fields)


def flatten(account_id: str, reason: str, *, by: str, detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """Halt the account for the day and end every open bracket with reason KILL_SWITCH (module doc)."""
    now = datetime.now(UTC)
    first = _write_halt(account_id, reason, now, {"by": by, **(detail or {})})
    if first:
        metrics.add_metric(name=metrics_names.KILL_SWITCH_TRIPPED, unit="Count", value=1)
        logger.warning("kill switch tripped", extra={"account_id": account_id, "reason": reason, "by": by})
    repo = BracketRepository()
    done = signals.end_brackets(
        repo, repo.list_open(account_id), ExitReason.KILL_SWITCH, by="kill_switch", ref={"kill_switch": reason}
    )
    _start, end = risk.trading_day_bounds(now)
    return {
        "message": f"Account flattened ({reason}): open brackets are exited at market, working entries cancelled, "
        "and new brackets are refused until the next session",
        "account_id": account_id,
        "reason": reason,
        "first_today": first,
        "blocked_until": r.iso(end),
        "brackets": done,
    }


def day_pnl(repo: BracketRepository, account_id: str, positions: list[Bracket], ltp: dict[str, Decimal]) -> Decimal:
    """Realised P&L of the IST day plus the open P&L of `positions` at `ltp` ("NSE:INFY" -> price)."""
    start, end = risk.trading_day_bounds(datetime.now(UTC))
    total = repo.realised_pnl_between(account_id, r.iso(start), r.iso(end))
    for b in positions:
        price = ltp.get(f"{b.spec.exchange.value}:{b.spec.symbol}")
        entry = b.entry.average_price
        held = b.entry.filled_quantity - sum(leg.filled_quantity for leg in b.earlier_exits)
        if price is None or entry is None or held <= 0:
            continue
        sign = 1 if b.position_side is PositionSide.LONG else -1
        total += sign * (price - entry) * held
    return total


def check_daily_loss(broker: Any) -> list[dict[str, Any]]:
    """Trip the kill switch of every account whose day's loss (realised + open) reached its limit; what was tripped.

    `broker` gives the last prices (one quote call for every instrument held); an account with nothing open is checked
    on its realised P&L alone (intake refuses its new brackets by that too)."""
    repo = BracketRepository()
    by_account: dict[str, list[Bracket]] = defaultdict(list)
    for b in repo.list_open():
        by_account[b.account_id].append(b)
    positions = {a: [b for b in bs if b.status in POSITION_BRACKET_STATUSES] for a, bs in by_account.items()}
    instruments = sorted({f"{b.spec.exchange.value}:{b.spec.symbol}" for bs in positions.values() for b in bs})
    ltp = broker.ltp(instruments) if instruments else {}
    now = datetime.now(UTC)
    tripped = []
    for account_id, held in positions.items():
        if halted_today(account_id, now) is not None:
            continue  # already flattened today: its exits retry on their own until flat
        account = account_store.get_account(account_id)
        limit = (account.limits if account else default_limits()).daily_loss_limit
        pnl = day_pnl(repo, account_id, held, ltp)
        if pnl <= -limit:
            tripped.append(flatten(account_id, DAILY_LOSS_HIT, by="risk_watch", detail={"pnl": pnl, "limit": limit}))
    return tripped
