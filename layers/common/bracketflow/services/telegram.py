"""Telegram notices for the trader: blocked, placed, filled, rejected and exited brackets (and ones needing review),
and the kill switch flattening the account.

Runs only off the DynamoDB stream (functions/notify), never inside a trading Lambda, and never raises: a Telegram
failure is logged and counted (metric TelegramFailed) and trading carries on.
Rate: Telegram allows about one message a second per chat, so the notices of one stream batch are joined into as
few messages as fit (4096 characters each) and sent at least TELEGRAM_MIN_INTERVAL_S apart; a 429 is waited out
once when its retry_after is short (<= TELEGRAM_MAX_WAIT_S), else the message is dropped.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bracketflow.adapters import telegram as bot
from bracketflow.observability import logger, metrics
from bracketflow.settings import get_settings

MAX_TEXT = 4096

# Audit event types that make a Telegram notice.
NOTICE_EVENTS = frozenset(
    {
        "BracketBlocked",
        "EntryPlaced",
        "EntryFilled",
        "EntryRejected",
        "BracketClosed",
        "EmergencyExitPlaced",
        "FlaggedForReview",
        "BreakevenStopSet",
    }
)


@dataclass(frozen=True)
class BracketFacts:
    """What a notice says about the bracket besides the event (from its STATE item)."""

    bracket_id: str
    symbol: str = "?"
    exchange: str = ""
    action: str = ""
    quantity: int | str = ""
    strategy: str | None = None


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=False)


def format_notice(event_type: str, data: Mapping[str, Any], facts: BracketFacts) -> str | None:
    """One notice line (Telegram HTML) for an audit event, or None when the event makes no notice."""
    where = f"<b>{_e(facts.symbol)}</b>" + (f" {_e(facts.action)} {_e(facts.quantity)}" if facts.action else "")
    ref = f" · <code>{_e(facts.bracket_id)}</code>"
    if event_type == "BracketBlocked":
        reason = data.get("tag") or data.get("reason") or data.get("kind")
        return f"❌ Blocked {where} | {_e(reason)}{ref}"
    if event_type == "EntryPlaced":
        return f"✅ Order placed {where} | order {_e(data.get('broker_order_id'))}{ref}"
    if event_type == "EntryFilled":
        part = " (partial)" if data.get("partial") else ""
        filled = f"{_e(data.get('filled_quantity'))} @ {_e(data.get('average_price'))}"
        return f"✨ Entry filled{part} <b>{_e(facts.symbol)}</b> {filled}{ref}"
    if event_type == "EntryRejected":
        return f"⚠️ Broker rejected {where} | {_e(data.get('message'))}{ref}"
    if event_type == "BracketClosed":
        pnl = data.get("pnl", data.get("realised_pnl"))
        price = data.get("exit_price", data.get("price"))
        return (
            f"🏁 Exited {where} | {_e(data.get('reason'))} @ {_e(price)}"
            + (f" | P&amp;L {_e(pnl)}" if pnl is not None else "")
            + ref
        )
    if event_type == "EmergencyExitPlaced":
        return f"🚨 Protection failed, flattened {where} | order {_e(data.get('broker_order_id'))}{ref}"
    if event_type == "BreakevenStopSet":
        moved = f"stop {_e(data.get('old_stop'))} → {_e(data.get('new_stop'))}"
        hit = (
            f"target {_e(data.get('after_share'))} hit"
            if data.get("breakeven_at") is None
            else f"{_e(data.get('breakeven_at'))} reached"
        )
        return f"🛡️ Stop to breakeven {where} | {hit}, {moved}{ref}"
    if event_type == "FlaggedForReview":
        return f"🔎 Needs review {where} | {_e(data.get('reason'))}{ref}"
    return None


def format_halt(account_id: str, update: Mapping[str, Any]) -> str:
    """The kill switch notice (Telegram HTML) from the account update notify makes of the day's halt."""
    reason = update.get("reason")
    why = "daily loss limit reached" if reason == "DAILY_LOSS_HIT" else "flattened by hand"
    data = update.get("data") or {}
    figures = (
        f" (day P&amp;L {_e(data['pnl'])}, limit {_e(data['limit'])})" if "pnl" in data and "limit" in data else ""
    )
    return (
        f"🛑 Kill switch: account <code>{_e(account_id)}</code> flattened, {why}{figures} | open brackets exited, "
        f"working entries cancelled, new alerts refused ({_e(update.get('tag'))}) until the next session"
    )


def batch_texts(lines: Sequence[str], limit: int = MAX_TEXT) -> list[str]:
    """Join notice lines into as few messages as fit `limit` characters (a longer line is cut)."""
    out: list[str] = []
    current = ""
    for line in lines:
        line = line[:limit]
        if current and len(current) + 1 + len(line) > limit:
            out.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    if current:
        out.append(current)
    return out


class ChatPacer:
    """At least `interval_s` between two messages to one chat, within this process (notify is one per shard)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._clock, self._sleep = clock, sleep
        self._not_before: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait_turn(self, chat_id: str, interval_s: float) -> None:
        """Block until this chat may get a message, and book the next slot `interval_s` later."""
        with self._lock:
            gap = self._not_before.get(chat_id, 0.0) - self._clock()
            if gap > 0:
                self._sleep(gap)
            self._not_before[chat_id] = self._clock() + interval_s

    def hold(self, chat_id: str, seconds: float) -> None:
        """Telegram asked us to wait: nothing goes to this chat for `seconds` from now."""
        with self._lock:
            self._not_before[chat_id] = max(self._not_before.get(chat_id, 0.0), self._clock() + seconds)


_pacer = ChatPacer()


def send_notices(lines: Sequence[str], pacer: ChatPacer | None = None) -> int:
    """Send the notice lines (joined); returns how many messages Telegram accepted. Never raises."""
    if not lines:
        return 0
    try:
        creds = bot.credentials()
    except Exception as exc:  # unreadable secret: trading must not notice, the operator must
        logger.warning("telegram credentials unreadable", extra={"error": type(exc).__name__})
        metrics.add_metric(name="TelegramFailed", unit="Count", value=1)
        return 0
    if creds is None:
        return 0
    pacer = pacer or _pacer
    settings = get_settings()
    sent = 0
    for text in batch_texts(lines):
        sent += _send_one(creds, text, pacer, settings.telegram_min_interval_s, settings.telegram_max_wait_s)
    return sent


def _send_one(creds: bot.TelegramCredentials, text: str, pacer: ChatPacer, interval_s: float, max_wait_s: float) -> int:
    for attempt in (1, 2):
        pacer.wait_turn(creds.chat_id, interval_s)
        try:
            bot.send_message(creds, text)
        except bot.TelegramError as exc:
            retry = exc.retry_after
            if exc.error_code == 429 and attempt == 1 and retry is not None and retry <= max_wait_s:
                logger.info("telegram asked to slow down", extra={"retry_after": retry})
                pacer.hold(creds.chat_id, retry)
                continue
            # 400 chat not found, 401 bad token, 403 blocked by the user, a long 429, unreachable: drop and count.
            logger.warning(
                "telegram message dropped",
                extra={"error_code": exc.error_code, "description": exc.description, "attempt": attempt},
            )
            metrics.add_metric(name="TelegramFailed", unit="Count", value=1)
            return 0
        except Exception as exc:  # anything unexpected: still never into the caller
            logger.warning("telegram message dropped", extra={"error": type(exc).__name__})
            metrics.add_metric(name="TelegramFailed", unit="Count", value=1)
            return 0
        metrics.add_metric(name="TelegramSent", unit="Count", value=1)
        return 1
    return 0
