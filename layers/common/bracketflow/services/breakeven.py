"""Breakeven for scale-out shares: once the share that `breakeven_after` names has exited at its TARGET, every other
share of the alert still PROTECTED gets its stop moved to its own entry price plus the cost buffer — only if that
tightens it (a breakeven never loosens a stop, trailed or not: domain/scale_out.tightened, the trail's ratchet).

The move goes the way a trailed stop goes: the stored stop with its audit event (BreakevenStopSet) in one conditional
write (as the streamer persists a trailed stop), then a stop-sync request on StopSyncQueue, so functions/sync_stop
moves the GTT's stop leg (the one way bracketflow modifies a GTT). The streamer takes the stored stop at its next
resync (a watched bracket's stop only ever tightens) and trails on from there. Called by finalize once the target share
is CLOSED; a repeat finds the stops already there and changes nothing.

A share whose entry was still working (or whose GTT was still being placed) when the named share exited at its target
was not PROTECTED then, so finalize skipped it: PlaceProtection calls on_protected once it is, and the same move
follows at once (the GTT is created with the alert's stop and moved right after, by the one path that moves a GTT).
Each side checks after its own write (finalize after CLOSED, protection after PROTECTED), so whichever comes second
sees the other and a share is never missed; when both see it, the second move finds the stop already there.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from bracketflow import metrics_names
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.adapters.instrument_store import current_master
from bracketflow.adapters.sqs import send_json
from bracketflow.contracts import StopSyncRequest, wire_time
from bracketflow.domain.bracket import Bracket
from bracketflow.domain.enums import BracketStatus, ExitReason, PositionSide
from bracketflow.domain.events import BreakevenStopSet
from bracketflow.domain.scale_out import breakeven_stop, tightened
from bracketflow.errors import ConcurrentModification
from bracketflow.observability import logger, metrics
from bracketflow.settings import get_settings

_ATTEMPTS = 3


def after_close(closed: Bracket) -> list[str]:
    """Move the other shares' stops to breakeven when `closed` is the named share and it exited at its target.
    Returns the ids of the shares whose stop moved."""
    spec = closed.spec
    if (
        not closed.group
        or closed.exit_reason is not ExitReason.TARGET
        or spec.breakeven_after is None
        or spec.share_index != spec.breakeven_after
    ):
        return []
    moved: list[str] = []
    for share_id in closed.group:
        if share_id != closed.id and move_to_breakeven(share_id, closed) is not None:
            moved.append(share_id)
    return moved


def on_protected(share: Bracket, last_price: Decimal | None) -> Bracket:
    """A share just PROTECTED whose group's breakeven share has already exited at its TARGET gets its stop moved to
    breakeven now; returns the share as it stands after."""
    named = _closed_at_target(share)
    if named is None:
        return share
    return move_to_breakeven(share.id, named, last_price=last_price) or share


def _closed_at_target(share: Bracket, repo: BracketRepository | None = None) -> Bracket | None:
    """The share of `share`'s group that breakeven_after names, when it is CLOSED at its target; else None."""
    spec = share.spec
    if not share.group or spec.breakeven_after is None or spec.share_index == spec.breakeven_after:
        return None
    repo = repo or BracketRepository()
    for sibling_id in share.group:
        sibling = None if sibling_id == share.id else repo.get(sibling_id)
        if sibling is not None and sibling.spec.share_index == spec.breakeven_after:
            closed = sibling.status is BracketStatus.CLOSED and sibling.exit_reason is ExitReason.TARGET
            return sibling if closed else None
    return None


def move_to_breakeven(
    share_id: str, after: Bracket, *, last_price: Decimal | None = None, repo: BracketRepository | None = None
) -> Bracket | None:
    """Set one share's stop to breakeven (stored, at the broker, at the streamer); None when it stays as it is.
    last_price: the market just now, when known; a breakeven the market is not beyond is not set (the GTT could not
    hold it and the share would be exited at once)."""
    repo = repo or BracketRepository()
    for _ in range(_ATTEMPTS):
        share = repo.get(share_id)
        if share is None or share.status is not BracketStatus.PROTECTED:
            return None  # exiting or closed already, or not protected yet: nothing to protect at breakeven
        entry = share.entry.average_price or share.spec.entry_price
        if entry is None:
            return None
        level = breakeven_stop(share.spec.action, entry, share.spec.breakeven_buffer, _tick(share))
        if not tightened(share.position_side, share.stop_price, level):
            logger.info(
                "breakeven would not tighten the stop; it stays",
                extra={"bracket_id": share.id, "stop_price": str(share.stop_price), "breakeven": str(level)},
            )
            return None
        if last_price is not None and not _beyond(share.position_side, last_price, level):
            logger.warning(
                "the market is not beyond the breakeven stop; the stop stays",
                extra={"bracket_id": share.id, "breakeven": str(level), "last_price": str(last_price)},
            )
            return None
        event = BreakevenStopSet(
            share.id,
            data={
                "old_stop": share.stop_price,
                "new_stop": level,
                "entry_price": entry,
                "buffer": share.spec.breakeven_buffer or 0,
                "after_share": after.spec.share_index,
                "after_bracket_id": after.id,
            },
            bracket_version=share.version + 1,
        )
        try:
            moved = repo.append_event(share, event, stop_price=level)
            break
        except ConcurrentModification:
            continue  # the streamer trailed it, or it started exiting: read again and decide again
    else:
        logger.warning("could not set the breakeven stop", extra={"bracket_id": share_id})
        return None
    metrics.add_metric(name=metrics_names.BREAKEVEN_STOPS_SET, unit="Count", value=1)
    logger.info("breakeven stop set", extra={"bracket_id": moved.id, "stop_price": str(level)})
    url = get_settings().stop_sync_queue_url
    if url:
        send_json(url, StopSyncRequest(moved.id, level, wire_time(datetime.now(UTC))).to_dict())
    else:
        logger.warning("no STOP_SYNC_QUEUE_URL: the GTT keeps its stop", extra={"bracket_id": moved.id})
    return moved


def _beyond(side: PositionSide, price: Decimal, stop: Decimal) -> bool:
    return price > stop if side is PositionSide.LONG else price < stop


def _tick(bracket: Bracket) -> Decimal:
    instrument = current_master().get(bracket.spec.exchange.value, bracket.spec.symbol)
    return instrument.tick_size if instrument and instrument.tick_size > 0 else get_settings().default_tick_size
