"""The read side for a trader: one bracket with its audit trail, the order book with counts, the order log.
Every lookup is scoped to the caller's account. (Cancelling a bracket: services/cancel_bracket.py.)"""

from __future__ import annotations

import copy
import re
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bracketflow.adapters.dynamo import intake as intake_store
from bracketflow.adapters.dynamo import prices as price_store
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.domain.accounts import Caller, OrderLogEntry
from bracketflow.domain.bracket import Bracket
from bracketflow.domain.enums import BlockKind, BracketStatus
from bracketflow.domain.states import is_terminal
from bracketflow.errors import ValidationFailed
from bracketflow.observability import logger
from bracketflow.services.register_bracket import get_caller_bracket
from bracketflow.settings import get_settings

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
REDACTED = "***"
_SECRET_FIELDS = {"apikey", "api_key", "token", "x-api-key"}

# What each block reason means, in the trader's words (the order book's tooltip).
BLOCK_EXPLANATIONS = {
    "DAILY_LOSS_HIT": "today's loss has reached the account's daily loss limit: new brackets wait for the next session",
    "FLATTENED": "the account was flattened by hand today: new brackets wait for the next session",
    "MAX_OPEN_BRACKETS": "the account already has its maximum number of open brackets",
    "MAX_ORDER_VALUE": "the order's value is above the account's maximum order value",
    "OUTSIDE_TRADING_WINDOW": "the market is not open for new entries now",
    "OPPOSITE_OPEN_BRACKET": "this strategy has an open bracket on the same symbol in the other direction",
    "OPEN_BRACKET_SAME_SYMBOL_STRATEGY": "this strategy already has an open bracket on the same symbol",
}


def block_of(b: Bracket) -> dict[str, str] | None:
    """The bracket's block tag, its reason and what the reason means; None when it was not blocked."""
    kinds = {k.value for k in BlockKind}
    for tag in b.tags:
        kind, _, reason = tag.partition(":")
        if kind in kinds:
            return {"tag": tag, "reason": reason, "explanation": BLOCK_EXPLANATIONS.get(reason, reason)}
    return None


def bracket_summary(b: Bracket, realised_pnl: Decimal | None = None) -> dict[str, Any]:
    s = b.spec
    return {
        "bracket_id": b.id,
        "status": b.status.value,
        "symbol": s.symbol,
        "exchange": s.exchange.value,
        "side": s.action.value,
        "product": s.product.value,
        "quantity": s.quantity,
        "strategy": s.strategy,
        "entry_price": s.entry_price,
        "stop_price": b.stop_price,
        "target_price": s.target_price,
        "tags": list(b.tags),
        "block": block_of(b),
        "filled_quantity": b.entry.filled_quantity,
        "average_price": b.entry.average_price,
        "exit_reason": None if b.exit_reason is None else b.exit_reason.value,
        "realised_pnl": realised_pnl,
        "created_at": b.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        **share_of(b),
    }


def share_of(b: Bracket) -> dict[str, Any]:
    """A scale-out share's place in its alert: the first share's id (the group), its index, and every share's id."""
    if not b.group:
        return {}
    return {"group_id": b.group[0], "share_index": b.spec.share_index, "shares": list(b.group)}


def bracket_view(b: Bracket, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The GET /api/v1/brackets/{id} document."""
    s = b.spec
    exit_view = None
    if b.exit is not None or b.exit_reason is not None:
        exit_view = {
            "reason": None if b.exit_reason is None else b.exit_reason.value,
            "price": None if b.exit is None else b.exit.average_price,
            "order_id": None if b.exit is None else b.exit.broker_order_id,
        }
    return {
        "bracket_id": b.id,
        "status": b.status.value,
        "symbol": s.symbol,
        "exchange": s.exchange.value,
        "side": s.action.value,
        "product": s.product.value,
        "quantity": s.quantity,
        "strategy": s.strategy,
        "client_order_id": s.client_order_id,
        "entry": {
            "price": s.entry_price,
            "price_type": s.price_type.value,
            "order_id": b.entry.broker_order_id,
            "status": b.entry.status.value,
            "filled_quantity": b.entry.filled_quantity,
            "average_price": b.entry.average_price,
        },
        "stop_price": b.stop_price,
        "sl_price": s.sl_price,
        "target_price": s.target_price,
        "trail": None
        if s.trail is None
        else {"type": s.trail.type.value, "value": s.trail.value, "activation_price": s.trail_activation_price},
        "exit": exit_view,
        "tags": list(b.tags),
        "created_at": b.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "updated_at": b.updated_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        **share_of(b),
        **({"breakeven_after": s.breakeven_after} if s.breakeven_after is not None else {}),
        **({"breakeven_at": s.breakeven_at} if s.breakeven_at is not None else {}),
        "events": events,
    }


def get_bracket(caller: Caller, bracket_id: str) -> dict[str, Any]:
    bracket = get_caller_bracket(caller, bracket_id)
    return bracket_view(bracket, BracketRepository().events(bracket.id))


def _check_day(day: str | None) -> str | None:
    if day is None or day == "":
        return None
    if not _DAY.match(day):
        raise ValidationFailed(f"date must be YYYY-MM-DD, got {day!r}")
    try:
        datetime.strptime(day, "%Y-%m-%d")
    except ValueError:
        raise ValidationFailed(f"date {day!r} is not a calendar date") from None
    return day


def order_book(
    caller: Caller,
    *,
    status: str | None = None,
    symbol: str | None = None,
    strategy: str | None = None,
    day: str | None = None,
) -> dict[str, Any]:
    """Rows (newest first) matching the filters, and counts per status over the rows matching all but status."""
    wanted_status = None
    if status:
        try:
            wanted_status = BracketStatus.parse(status)
        except ValueError as exc:
            raise ValidationFailed(f"status {exc}") from None
    rows = BracketRepository().order_book_with_pnl(caller.account_id, _check_day(day))
    if symbol:
        wanted_symbol = symbol.strip().upper().split(":")[-1]
        rows = [(b, p) for b, p in rows if b.spec.symbol == wanted_symbol]
    if strategy:
        rows = [(b, p) for b, p in rows if (b.spec.strategy or "") == strategy]
    counts = Counter(b.status.value for b, _ in rows)
    if wanted_status is not None:
        rows = [(b, p) for b, p in rows if b.status is wanted_status]
    return {
        "orders": [bracket_summary(b, p) for b, p in rows],
        "counts": {s.value: counts.get(s.value, 0) for s in BracketStatus},
        "total": sum(counts.values()),
        "pnl": pnl_totals(rows),
    }


def pnl_totals(rows: list[tuple[Bracket, Decimal | None]]) -> dict[str, Any]:
    """Realised P&L of the rows: in all, per day (UTC, the order book's day) and per strategy."""
    total = Decimal(0)
    by_day: dict[str, Decimal] = {}
    by_strategy: dict[str, Decimal] = {}
    for b, pnl in rows:
        if pnl is None:
            continue
        total += pnl
        day = b.created_at.astimezone(UTC).strftime("%Y-%m-%d")
        by_day[day] = by_day.get(day, Decimal(0)) + pnl
        name = b.spec.strategy or ""
        by_strategy[name] = by_strategy.get(name, Decimal(0)) + pnl
    return {"total": total, "by_day": by_day, "by_strategy": by_strategy}


def bracket_prices(caller: Caller, bracket_id: str, *, now: datetime | None = None) -> dict[str, Any]:
    """The market price of a bracket's instrument over its life, as the streamer recorded it (the console's chart):
    from a minute before it was registered to its last change (a finished bracket) or now."""
    bracket = get_caller_bracket(caller, bracket_id)
    now = now or datetime.now(UTC)
    end = bracket.updated_at + timedelta(minutes=1) if is_terminal(bracket.status) else now
    instrument = f"{bracket.spec.exchange.value}:{bracket.spec.symbol}"
    points = price_store.prices_between(instrument, bracket.created_at - timedelta(minutes=1), min(end, now))
    return {
        "bracket_id": bracket.id,
        "instrument": instrument,
        "points": [[at.astimezone(UTC).isoformat().replace("+00:00", "Z"), price] for at, price in points],
    }


# ---------- order log ----------
def redact(payload: Any) -> Any:
    """A copy with every API key / token value replaced by ***, at any depth."""
    if isinstance(payload, dict):
        return {k: (REDACTED if str(k).lower() in _SECRET_FIELDS else redact(v)) for k, v in payload.items()}
    if isinstance(payload, list):
        return [redact(v) for v in payload]
    return copy.copy(payload)


def log_request(
    caller: Caller, api_type: str, request: Any, response: dict[str, Any], status_code: int, request_id: str | None
) -> None:
    """Record one placement request and our answer (the apikey redacted). Never fails the request."""
    settings = get_settings()
    entry = OrderLogEntry(
        account_id=caller.account_id,
        at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        request_id=request_id or uuid.uuid4().hex,
        api_type=api_type,
        request=redact(request) if isinstance(request, dict) else {"raw": str(request)[:2000]},
        response=redact(response),
        status_code=status_code,
    )
    try:
        intake_store.put_order_log(entry, settings.order_log_retention_days, int(time.time()))
    except Exception:  # the log must never turn a placed bracket into an error
        logger.exception("order log write failed", extra={"api_type": api_type})


def order_logs(caller: Caller, day: str | None) -> dict[str, Any]:
    day = _check_day(day) or datetime.now(UTC).strftime("%Y-%m-%d")
    logs = intake_store.query_order_logs(caller.account_id, day)
    return {
        "date": day,
        "logs": [
            {
                "at": e.at,
                "request_id": e.request_id,
                "api_type": e.api_type,
                "status_code": e.status_code,
                "request": e.request,
                "response": e.response,
            }
            for e in logs
        ],
    }
