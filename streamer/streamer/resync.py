"""Resync: the open brackets in DynamoDB are the truth about what the streamer must watch.

Every few seconds (and at start) the streamer reads the sparse OPEN index: every PROTECTED bracket it does not
watch yet is watched, resuming from its persisted (trailed) stop; brackets it watches that are no longer PROTECTED
are dropped. This is what makes a restart, a lost control message or a crashed streamer lose no bracket.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from bracketflow.adapters.instrument_store import current_master
from bracketflow.domain.bracket import Bracket
from bracketflow.domain.enums import BracketStatus
from bracketflow.domain.instruments import CompactMaster, InstrumentMaster
from bracketflow.domain.scale_out import breakeven_stop, price_breakeven
from bracketflow.domain.trailing import to_paise
from bracketflow.observability import logger
from streamer.control import Watch
from streamer.watchlist import WatchedBracket


def watch_for(bracket: Bracket, master: InstrumentMaster | CompactMaster | None = None) -> Watch | None:
    """The Watch that resumes a PROTECTED bracket from its stored state; None if its instrument is unknown."""
    spec = bracket.spec
    instrument = (master or current_master()).get(spec.exchange.value, spec.symbol)
    if instrument is None:
        logger.error("cannot watch a bracket on an unknown instrument", extra={"bracket_id": bracket.id})
        return None
    trail = None if spec.trail is None else {"type": spec.trail.type.value, "value": spec.trail.value}
    tick = instrument.tick_size if instrument.tick_size > 0 else Decimal("0.05")
    entry = bracket.entry.average_price or spec.entry_price
    breakeven = price_breakeven(spec, entry, tick)
    watched = WatchedBracket(
        bracket_id=bracket.id,
        instrument_token=instrument.instrument_token,
        side=bracket.position_side.value,
        product=spec.product.value,
        stop_price=bracket.stop_price,
        tick_size=tick,
        entry_price=entry,
        trail=trail,
        activation_price=spec.trail_activation_price,
        breakeven_at=None if breakeven is None else spec.breakeven_at,
        breakeven_stop=breakeven,
    )
    return Watch(
        bracket=watched,
        account_id=bracket.account_id,
        exchange=spec.exchange.value,
        tradingsymbol=spec.symbol,
        quantity=bracket.filled_quantity or spec.quantity,
        gtt_id=bracket.gtt_id,
        original_stop=to_paise(spec.sl_price),
        # A stop that already moved away from the stop-loss can only have moved because the trail was active, or
        # because a breakeven moved it (to exactly its breakeven stop: that one leaves the trail's activation to come).
        activated=bracket.stop_has_trailed and bracket.stop_price != _breakeven_level(bracket, entry, tick),
    )


def _breakeven_level(bracket: Bracket, entry: Decimal | None, tick: Decimal) -> Decimal | None:
    spec = bracket.spec
    if entry is None or (spec.breakeven_at is None and spec.breakeven_after is None):
        return None
    return breakeven_stop(spec.action, entry, spec.breakeven_buffer, tick)


def protected_watches(
    open_brackets: Iterable[Bracket], master: InstrumentMaster | CompactMaster | None = None
) -> list[Watch]:
    out = []
    for bracket in open_brackets:
        if bracket.status is not BracketStatus.PROTECTED:
            continue
        watch = watch_for(bracket, master)
        if watch is not None:
            out.append(watch)
    return out
