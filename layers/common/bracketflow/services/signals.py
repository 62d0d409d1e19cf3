"""A strategy's own exits: exit / close / closeall alerts (and TradingView's flat market position), answered in
milliseconds like any alert; nothing here calls the broker.

What ends a bracket, by its status (the same hand-offs as the trader's DELETE, services/cancel_bracket.py):

  CREATED        a CancelRequested event: PlaceEntry finds it and the bracket ends CANCELLED, nothing sent.
  ENTRY_PENDING  a CancelRequested event and WaitForEntryFill completed with CANCEL_REQUESTED: the workflow cancels the
                 entry at the broker; whatever filled before that is exited at market with this signal's reason.
  ENTRY_FILLED,  an exit intent on the ExitQueue with the reason (SIGNAL, TIME, KILL_SWITCH): the exit Lambda claims
  PROTECTED,     it, deletes the GTT first, exits at market, and retries until flat. One that finds the bracket still
  EXIT_FAILED    ENTRY_FILLED (its GTT being placed this second) comes back in seconds and exits it once protected.
  EXITING, NEEDS_REVIEW: left as they are (already leaving, or a human's).

Exactly once per alert: the signal's dedupe record is written before anything is acted on, with the time it was first
seen. A resend (same content within ALERT_DEDUPE_WINDOW_SECONDS, or the same client_order_id within a day) of a signal
that was acted on in full is answered "duplicate": true and does nothing; one whose first attempt died part way acts
again on the same brackets (those registered before that first sighting, never a bracket opened since), which is
harmless: a bracket already asked to end is skipped, and a second exit intent is acknowledged by the exit Lambda as a
duplicate.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bracketflow.adapters.dynamo import intake as intake_store
from bracketflow.adapters.dynamo import records as r
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.domain.accounts import Caller
from bracketflow.domain.bracket import Bracket
from bracketflow.domain.enums import BracketStatus, Exchange, ExitReason, PositionSide
from bracketflow.domain.states import is_terminal
from bracketflow.domain.validation import parse_exchange, split_symbol
from bracketflow.errors import ConcurrentModification, Conflict, Forbidden, ValidationFailed
from bracketflow.observability import logger, metrics
from bracketflow.services import cancel_bracket as cancelling
from bracketflow.services.lifecycle import CANCEL_REQUESTED_EVENT
from bracketflow.services.register_bracket import DEFAULT_STRATEGY
from bracketflow.settings import get_settings

_ATTEMPTS = 4

# The words strategies and the bridges they come from use for "get me out".
EXIT = "EXIT"  # exit / close / flat: the strategy's brackets on one symbol
CLOSEALL = "CLOSEALL"  # every open bracket of a strategy, or of the whole account
_SIDES = {"EXIT": None, "CLOSE": None, "FLAT": None, "CLOSELONG": PositionSide.LONG, "CLOSESHORT": PositionSide.SHORT}

# What was done for one bracket.
ENTRY_NOT_SENT = cancelling.ENTRY_NOT_SENT
CANCEL_ENTRY = cancelling.CANCEL_ENTRY
EXIT_POSITION = cancelling.EXIT_POSITION
ALREADY_ENDING = "ALREADY_ENDING"  # already exiting, or asked to end before
LEFT_FOR_REVIEW = "LEFT_FOR_REVIEW"  # NEEDS_REVIEW: a human decides


def is_exit_signal(data: dict[str, Any]) -> bool:
    """An alert that closes rather than opens: action exit/close/closeall/closelong/closeshort/flat, or TradingView's
    {{strategy.market_position}} (or TradersPost's sentiment) "flat" whatever the action."""
    action = data.get("action")
    if isinstance(action, str) and action.strip().upper() in (*_SIDES, CLOSEALL):
        return True
    position = data.get("market_position") or data.get("sentiment")
    return isinstance(position, str) and position.strip().lower() == "flat"


@dataclass(frozen=True)
class ExitSignal:
    """Which of the account's open brackets a signal ends. strategy None = every strategy (closeall by apikey)."""

    account_id: str
    kind: str  # EXIT or CLOSEALL
    strategy: str | None
    symbol: str | None = None
    exchange: Exchange | None = None
    side: PositionSide | None = None
    client_order_id: str | None = None

    def matches(self, bracket: Bracket) -> bool:
        s = bracket.spec
        if self.strategy is not None and (s.strategy or DEFAULT_STRATEGY) != self.strategy:
            return False
        if self.symbol is not None and s.symbol != self.symbol:
            return False
        if self.exchange is not None and s.exchange is not self.exchange:
            return False
        return self.side is None or bracket.position_side is self.side

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "strategy": self.strategy,
            "symbol": self.symbol,
            "exchange": None if self.exchange is None else self.exchange.value,
            "side": None if self.side is None else self.side.value,
            "client_order_id": self.client_order_id,
        }


def parse_exit_signal(data: dict[str, Any], caller: Caller) -> ExitSignal:
    """The alert (or REST body) -> the signal; 400 for what cannot be acted on, 403 for another strategy's brackets."""
    action = str(data.get("action") or "").strip().upper()
    kind = CLOSEALL if action == CLOSEALL else EXIT
    side = _SIDES.get(action)
    strategy = _text(data.get("strategy"), "strategy", 64)
    if caller.strategy is not None:
        if strategy not in (None, caller.strategy):
            raise Forbidden(f"this webhook token closes brackets only for strategy {caller.strategy!r}")
        strategy = caller.strategy
    cid = _text(data.get("client_order_id"), "client_order_id", 128)
    if kind == CLOSEALL:  # an apikey with no strategy closes the whole account
        return ExitSignal(caller.account_id, kind, strategy, client_order_id=cid)
    raw_symbol = data.get("symbol") or data.get("ticker")
    if not raw_symbol:
        raise ValidationFailed("symbol is required to exit a position (closeall needs none)")
    in_symbol, symbol = split_symbol(raw_symbol)
    exchange = parse_exchange(data["exchange"]) if data.get("exchange") else in_symbol
    if in_symbol is not None and exchange is not in_symbol:
        raise ValidationFailed(f"symbol names exchange {in_symbol} but exchange is {exchange}")
    return ExitSignal(caller.account_id, kind, strategy or DEFAULT_STRATEGY, symbol, exchange, side, cid)


def _text(raw: Any, name: str, max_length: int) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw.strip()) > max_length:
        raise ValidationFailed(f"{name} must be text of at most {max_length} characters")
    return raw.strip() or None


def _new_signal_id() -> str:
    return "sig_" + secrets.token_hex(8)


def signal_hash(signal: ExitSignal) -> str:
    return hashlib.sha256(
        json.dumps({"account_id": signal.account_id, **signal.to_dict()}, sort_keys=True).encode()
    ).hexdigest()


def act_on_signal(signal: ExitSignal, *, dedupe_content: bool) -> dict[str, Any]:
    """Record the signal once, then end its brackets with reason SIGNAL; the answer names what happened to each."""
    settings = get_settings()
    now = datetime.now(UTC)
    now_s = int(now.timestamp())
    digest = signal_hash(signal)
    keys: list[tuple[dict[str, str], int]] = []
    if signal.client_order_id:
        keys.append((r.dedupe_client_key(signal.account_id, signal.client_order_id), settings.client_order_id_window_s))
    if dedupe_content:
        keys.append((r.dedupe_alert_key(signal.account_id, digest), settings.alert_dedupe_window_s))
    record = {"signal_id": _new_signal_id(), "received_at": r.iso(now)}
    duplicate = False
    for key, window in keys:
        if intake_store.claim_signal(key, record, digest, now_s, window):
            continue
        existing = intake_store.get_dedupe(key, now_s)
        if existing is None:
            continue  # it expired in between: nothing to answer from
        if existing.get("request_hash") != digest:
            raise Conflict(f"client_order_id {signal.client_order_id!r} was already used for a different request")
        if existing.get("done"):
            metrics.add_metric(name="DuplicateAlerts", unit="Count", value=1)
            return _answer(signal, str(existing["signal_id"]), list(existing.get("brackets") or []), duplicate=True)
        duplicate = True  # the first attempt died part way: act again, as of its first sighting
        record = {"signal_id": str(existing["signal_id"]), "received_at": str(existing["received_at"])}
        break
    seen_at = datetime.fromisoformat(record["received_at"].replace("Z", "+00:00"))
    repo = BracketRepository()
    chosen = [b for b in repo.list_open(signal.account_id) if signal.matches(b) and b.created_at <= seen_at]
    done = end_brackets(repo, chosen, ExitReason.SIGNAL, by="signal", ref={"signal_id": record["signal_id"]})
    for key, _window in keys:
        intake_store.mark_signal_done(key, record["signal_id"], done)
    metrics.add_metric(name="ExitSignals", unit="Count", value=1)
    logger.info("exit signal", extra={"signal_id": record["signal_id"], "signal": signal.to_dict(), "brackets": done})
    return _answer(signal, record["signal_id"], done, duplicate=duplicate)


def _answer(signal: ExitSignal, signal_id: str, brackets: list[dict[str, Any]], *, duplicate: bool) -> dict[str, Any]:
    if duplicate:
        message = "Duplicate signal: it was already acted on; nothing more was done"
    elif brackets:
        message = f"Exit signal accepted: {len(brackets)} bracket(s) are being closed (reason SIGNAL)"
    else:
        message = "Exit signal accepted: no open bracket matched it"
    return {
        "message": message,
        "signal_id": signal_id,
        "duplicate": duplicate,
        "action": signal.kind.lower(),
        **{k: v for k, v in signal.to_dict().items() if k not in ("kind", "client_order_id")},
        "brackets": brackets,
    }


def end_brackets(
    repo: BracketRepository, brackets: Iterable[Bracket], reason: ExitReason, *, by: str, ref: dict[str, Any]
) -> list[dict[str, Any]]:
    """End each bracket for `reason` (module doc); one bracket's trouble does not stop the others."""
    out = []
    for bracket in brackets:
        try:
            action, status = end_bracket(repo, bracket, reason, by=by, ref=ref)
        except ConcurrentModification:
            action, status = "RETRY", bracket.status.value
            logger.warning("bracket kept changing; not ended this time", extra={"bracket_id": bracket.id})
        out.append({"bracket_id": bracket.id, "status": status, "action": action})
    return out


def end_bracket(
    repo: BracketRepository, bracket: Bracket, reason: ExitReason, *, by: str, ref: dict[str, Any]
) -> tuple[str, str]:
    """Hand one bracket to whoever ends it for its status; returns (what was done, the status it was in)."""
    for _ in range(_ATTEMPTS):
        current = repo.get(bracket.id)
        if current is None or is_terminal(current.status):
            return ALREADY_ENDING, bracket.status.value if current is None else current.status.value
        status = current.status
        if status in (BracketStatus.ENTRY_FILLED, BracketStatus.PROTECTED, BracketStatus.EXIT_FAILED):
            cancelling.queue_exit(current, reason)
            return EXIT_POSITION, status.value
        if status is BracketStatus.EXITING:
            return ALREADY_ENDING, status.value
        if status is BracketStatus.NEEDS_REVIEW:
            return LEFT_FOR_REVIEW, status.value
        if _cancel_already_requested(repo, current):
            if status is BracketStatus.ENTRY_PENDING:
                cancelling.stop_entry_wait(current)  # an earlier attempt may have died before completing the wait
            return ALREADY_ENDING, status.value
        action = ENTRY_NOT_SENT if status is BracketStatus.CREATED else CANCEL_ENTRY
        request = {
            "type": CANCEL_REQUESTED_EVENT,
            "by": by,
            "status": status.value,
            "action": action,
            "exit_reason": reason.value,
            **ref,
        }
        try:
            recorded = repo.append_event(current, request)
        except ConcurrentModification:
            continue
        if action == CANCEL_ENTRY and not cancelling.stop_entry_wait(recorded):
            continue  # the entry filled (or timed out) just now: decide again on what it is
        return action, status.value
    raise ConcurrentModification(f"bracket {bracket.id} kept changing while it was being ended")


def _cancel_already_requested(repo: BracketRepository, bracket: Bracket) -> bool:
    return any(e.get("type") == CANCEL_REQUESTED_EVENT for e in repo.events(bracket.id))


def end_reversed(bracket: Bracket) -> None:
    """A reverse was registered: exit (or cancel) what it closes, reason SIGNAL. Its workflow's PlaceEntry sends the new
    entry only once those are closed, flat at the broker. Asked again on a resend of the alert (harmless: a bracket
    already ending is skipped), so a crash between registering and asking is mended by TradingView's resend; with no
    resend the new entry waits only REVERSE_WAIT_S and is then cancelled unsent."""
    repo = BracketRepository()
    others = [b for b in (repo.get(i) for i in bracket.reverse_of) if b is not None]
    end_brackets(repo, others, ExitReason.SIGNAL, by="reverse", ref={"reversed_by": bracket.id})
