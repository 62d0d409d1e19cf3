"""What `make demo` prints: one line per audit event (time, what happened, the price, the detail) and the
one-screen summary of a bracket with its audit trail."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

TIME_WIDTH, LABEL_WIDTH, PRICE_WIDTH = 12, 18, 10


# ---------- one line per audit event ----------
@dataclass(frozen=True)
class Line:
    at: str  # local wall-clock time of the event, HH:MM:SS.mmm
    label: str  # what happened, in the trader's words
    price: str  # the price it happened at ("MARKET" for a market order, "-" when no price belongs to it)
    detail: str

    def __str__(self) -> str:
        return (
            f"{self.at:<{TIME_WIDTH}}  {self.label:<{LABEL_WIDTH}}  {self.price:>{PRICE_WIDTH}}  {self.detail}".rstrip()
        )


def clock(iso: str) -> str:
    """An event's ISO UTC time as local HH:MM:SS.mmm (the demo runs beside `make run`, which logs local time)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S.%f")[:-3]


def money(value: Any) -> str:
    if value in (None, ""):
        return "-"
    try:
        return f"{Decimal(str(value)):.2f}"
    except InvalidOperation:
        return str(value)


def _signed(value: Any) -> str:
    if value in (None, ""):
        return "-"
    amount = Decimal(str(value))
    return f"{amount:+.2f}"


def _trail(trail: Any) -> str:
    if not isinstance(trail, dict):
        return "none"
    return f"{trail.get('value')}%" if trail.get("type") == "percent" else f"{trail.get('value')} points"


def describe(event: Mapping[str, Any], bracket: Mapping[str, Any]) -> Line:
    """The line for one audit event of GET /api/v1/brackets/{id} (its fields are flat on the event)."""
    kind = str(event.get("type"))
    at = clock(str(event["at"]))
    line = _entry_line(kind, event, bracket, at)
    if line is None:
        line = _exit_line(kind, event, at)
    return line if line is not None else _unpriced_line(kind, event, at)


def _entry_line(kind: str, e: Mapping[str, Any], bracket: Mapping[str, Any], at: str) -> Line | None:
    """The alert, its entry and the stop that protects it; None for any other event."""
    if kind == "BracketRegistered":
        return Line(
            at,
            "alert accepted",
            money(e.get("entry_price")) if e.get("entry_price") is not None else "MARKET",
            f"{e.get('action')} {e.get('quantity')} {e.get('exchange')}:{e.get('symbol')} {e.get('product')} "
            f"{e.get('price_type')}, stop {money(e.get('sl_price'))}, target {money(e.get('target_price'))}, "
            f"trail {_trail(e.get('trail'))}",
        )
    if kind == "EntryPlaced":
        entry = bracket.get("entry") or {}
        limit = entry.get("price_type") not in ("MARKET", "SL-M")
        return Line(
            at, "entry placed", money(entry.get("price")) if limit else "MARKET", f"order {e.get('broker_order_id')}"
        )
    if kind in ("EntryFilled", "EntryPartiallyFilled"):
        label = "entry filled" if kind == "EntryFilled" else "entry part-filled"
        return Line(at, label, money(e.get("average_price")), f"{e.get('filled_quantity')} filled")
    if kind == "ProtectionPlaced":
        return Line(
            at,
            "GTT placed",
            money(e.get("stop_price")),
            f"stop {money(e.get('stop_price'))} / target {money(e.get('target_price'))}, GTT {e.get('gtt_id')}",
        )
    if kind == "StopTrailed":
        return Line(at, "stop moved", money(e.get("new_stop")), f"from {money(e.get('old_stop'))}")
    if kind == "BrokerStopMoved":
        return Line(
            at, "GTT stop moved", money(e.get("new_stop")), f"GTT {e.get('gtt_id')}, from {money(e.get('old_stop'))}"
        )
    if kind == "BreakevenStopSet":
        after = (
            f"target {e.get('after_share')} hit" if e.get("breakeven_at") is None else f"{e['breakeven_at']} reached"
        )
        return Line(at, "stop to breakeven", money(e.get("new_stop")), f"{after}, from {money(e.get('old_stop'))}")
    return None


def _exit_line(kind: str, e: Mapping[str, Any], at: str) -> Line | None:
    """The exit, from its trigger to the closed bracket, and reconciliation's repairs; None for any other event."""
    if kind == "ExitRequested":
        crossed = f" crossed the stop {money(e.get('stop_price'))}" if e.get("stop_price") else ""
        return Line(
            at, "exit triggered", money(e.get("ltp")), f"{e.get('reason')}: last price {money(e.get('ltp'))}{crossed}"
        )
    if kind == "ExitPlaced":
        return Line(at, "exit placed", "MARKET", f"order {e.get('broker_order_id')}, {e.get('reason')}")
    if kind == "ExitFilled":
        return Line(at, "exit filled", money(e.get("average_price")), f"{e.get('filled_quantity')} filled")
    if kind == "BracketClosed":
        return Line(
            at,
            "closed",
            money(e.get("exit_price")),
            f"P&L {_signed(e.get('pnl'))} ({e.get('reason')}; entry {money(e.get('entry_price'))}, "
            f"qty {e.get('quantity')})",
        )
    if kind == "EmergencyExitPlaced":
        return Line(at, "emergency exit", "MARKET", f"order {e.get('broker_order_id')}, qty {e.get('quantity')}")
    if kind == "Reconciled":
        return Line(at, "reconciled", "-", f"{e.get('repair')}: {e.get('detail')}"[:160])
    if kind == "ExitSkipped":
        return Line(at, "exit skipped", "-", f"{e.get('reason')}: GTT {e.get('gtt_id')} closed the position itself")
    return None


def _unpriced_line(kind: str, e: Mapping[str, Any], at: str) -> Line:
    # The rest carry no price: rejections, cancels, failures, review flags. Their name and what they say.
    label = OTHER_LABELS.get(kind, kind)
    said = e.get("message") or e.get("reason") or e.get("detail") or e.get("tag") or ""
    if not said:
        extras = {k: v for k, v in e.items() if k not in _HOUSEKEEPING}
        said = " ".join(f"{k}={v}" for k, v in extras.items())
    return Line(at, label, "-", str(said)[:160])


OTHER_LABELS = {
    "BracketBlocked": "blocked",
    "EntryRejected": "entry rejected",
    "EntryCancelled": "entry cancelled",
    "EntryExpired": "entry expired",
    "ProtectionFailed": "GTT failed",
    "ExitFailed": "exit failed",
    "FlaggedForReview": "needs review",
    "CancelRequested": "cancel requested",
    "WorkflowFailed": "workflow failed",
    "WorkflowStartFailed": "workflow not started",
}
_HOUSEKEEPING = frozenset({"type", "at", "version", "event_id", "bracket_id", "account_id"})


# ---------- the summary ----------
def summary(bracket: Mapping[str, Any]) -> str:
    """One screen: the bracket's fields, then its audit trail as a table (long runs of stop moves folded)."""
    b = bracket
    entry = b.get("entry") or {}
    exit_ = b.get("exit") or {}
    events = list(b.get("events") or [])
    moves = [e for e in events if e.get("type") == "StopTrailed"]
    closed = next((e for e in events if e.get("type") == "BracketClosed"), None)
    rule = "─" * 78
    out = [
        rule,
        f"bracket     {b.get('bracket_id')}  {b.get('status')}" + (f" ({exit_.get('reason')})" if exit_ else ""),
        f"instrument  {b.get('side')} {b.get('quantity')} {b.get('exchange')}:{b.get('symbol')} {b.get('product')}"
        f"  strategy {b.get('strategy')}",
        f"entry       {entry.get('price_type')} order {entry.get('order_id') or '-'}: "
        f"{entry.get('filled_quantity') or 0} filled @ {money(entry.get('average_price'))}",
        f"stop        {money(b.get('stop_price'))} (set at {money(b.get('sl_price'))}, recorded moves: {len(moves)})"
        f"  target {money(b.get('target_price'))}  trail {_trail(b.get('trail'))}",
    ]
    if exit_:
        out.append(
            f"exit        {exit_.get('reason')} order {exit_.get('order_id') or '-'} @ {money(exit_.get('price'))}"
        )
    if closed is not None:
        out.append(f"P&L         {_signed(closed.get('pnl'))}")
    if b.get("tags"):
        out.append(f"tags        {', '.join(map(str, b['tags']))}")
    if events:
        took = _seconds_between(events[0]["at"], events[-1]["at"])
        out.append(f"took        {took:.1f} s from the alert to the last event")
    out += [
        rule,
        f"audit trail: {len(events)} events (GET /api/v1/brackets/{b.get('bracket_id')})",
        f"  {'#':>3}  {'time':<{TIME_WIDTH}}  {'event':<20}  {'price':>{PRICE_WIDTH}}",
    ]
    index = 0
    while index < len(events):
        event = events[index]
        run = index
        while run < len(events) and events[run].get("type") == "StopTrailed":
            run += 1
        if run - index > 3:  # fold a long trail: first move, count, last move
            first, last = events[index], events[run - 1]
            out.append(_trail_row(index + 1, first, bracket))
            out.append(f"  {'':>3}  {'':<{TIME_WIDTH}}  ... {run - index - 2} more stop moves")
            out.append(_trail_row(run, last, bracket))
            index = run
            continue
        out.append(_trail_row(index + 1, event, bracket))
        index += 1
    out.append(rule)
    out.append(
        "Stop moves: the streamer trails on every tick but records its stop at most every couple of seconds, so the"
    )
    out.append(
        "trail above has fewer, larger steps than the stop really took; the exit uses the streamer's latest stop."
    )
    return "\n".join(out)


def _trail_row(number: int, event: Mapping[str, Any], bracket: Mapping[str, Any]) -> str:
    line = describe(event, bracket)
    return f"  {number:>3}  {line.at:<{TIME_WIDTH}}  {event.get('type')!s:<20}  {line.price:>{PRICE_WIDTH}}"


def _seconds_between(start: str, end: str) -> float:
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()
