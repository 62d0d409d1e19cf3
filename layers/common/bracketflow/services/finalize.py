"""Finalize: the exit is done; record the P&L, close the bracket, tell the streamer to stop watching it.

P&L (Decimal, rupees) = (exit average - entry average) x quantity for a LONG, the negative of that for a SHORT.
The STATE item gets realised_pnl and exit_price (risk's daily-loss check sums realised_pnl), the bracket goes
EXITING (or PROTECTED, when the broker's own GTT closed it) -> CLOSED with its BracketClosed event, in one
conditional write. A scale-out share closed at its target then moves its siblings' stops to breakeven when it is the
share their breakeven_after names (services/breakeven).
The `bracket_order_update` notifications are derived from the audit events by functions/notify
(mapping in services/lifecycle.py).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.adapters.sqs import send_control
from bracketflow.contracts import UnwatchRequest
from bracketflow.domain.bracket import Bracket
from bracketflow.domain.enums import BracketStatus, ExitReason, PositionSide
from bracketflow.domain.events import BracketClosed
from bracketflow.observability import logger, metrics
from bracketflow.services import breakeven
from bracketflow.services.lifecycle import event, exit_outcome, retrying


def realised_pnl(side: PositionSide, entry_price: Decimal, exit_price: Decimal, quantity: int) -> Decimal:
    gross = (exit_price - entry_price) * quantity
    return gross if side is PositionSide.LONG else -gross


def finalize(bracket_id: str, exit_info: dict[str, Any] | None) -> dict[str, Any]:
    """Close the bracket with the exit WaitForExit reported (or the one recorded on the bracket)."""
    repo = BracketRepository()
    result: dict[str, Any] = {}

    def step(b: Bracket) -> Bracket | None:
        if b.status is BracketStatus.CLOSED:
            return None
        info = dict(exit_info or (exit_outcome(b) or {}).get("exit") or {})
        if not info.get("price"):
            raise ValueError(f"bracket {b.id}: no exit price to close with")
        price = Decimal(str(info["price"]))
        quantity = int(info.get("quantity") or b.entry.filled_quantity)
        entry = b.entry.average_price or Decimal(0)
        pnl = realised_pnl(b.position_side, entry, price, quantity)
        reason = ExitReason.parse(info.get("reason") or (b.exit_reason or ExitReason.MANUAL))
        nxt = b.transition(BracketStatus.CLOSED, exit_reason=reason)
        ev = event(
            BracketClosed,
            nxt,
            reason=reason,
            exit_price=price,
            quantity=quantity,
            entry_price=entry,
            pnl=pnl,
            exit_order_id=info.get("order_id"),
        )
        repo.save(b, nxt, [ev], attributes={"realised_pnl": pnl, "exit_price": price})
        result.update(pnl=str(pnl), exit_price=str(price), reason=reason.value)
        return nxt

    bracket = retrying(bracket_id, step)
    try:
        send_control(UnwatchRequest(bracket_id).to_dict())
    except Exception:  # the streamer's resync drops closed brackets anyway; closing must not fail on this
        logger.exception("unwatch message not sent", extra={"bracket_id": bracket_id})
    metrics.add_metric(name="BracketsClosed", unit="Count", value=1)
    moved = _breakeven(bracket)
    return {"status": bracket.status.value, **result, **({"breakeven": moved} if moved else {})}


def _breakeven(bracket: Bracket) -> list[str]:
    """A scale-out share closed at its target may move the other shares' stops to breakeven (services/breakeven)."""
    if not bracket.group or bracket.status is not BracketStatus.CLOSED:
        return []
    try:
        return breakeven.after_close(bracket)
    except Exception:  # the shares keep their own stops and GTTs; closing this one must not fail on it
        logger.exception("breakeven not applied", extra={"bracket_id": bracket.id})
        return []
