"""Move the GTT's stop leg up to the streamer's trailed stop, so a streamer outage still leaves a recent stop at
the broker (docs/trailing.md, "The stop at the broker"). Only Lambdas change orders at the broker; the streamer asks via
StopSyncQueue with a StopSyncRequest (bracketflow.contracts; already coalesced and rate-limited by the streamer: a step
and an interval per bracket).

The GTT is modified by a full replace (Kite's GTT modify), keeping its target leg as it is and the stop leg's limit
price at the same distance from its trigger. Nothing is changed when the bracket is no longer PROTECTED, has no
active GTT, the new stop is not tighter than the GTT's, or the market has already crossed it (the streamer exits).
Repeating a message is harmless: the second modify finds the stop already there.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from enum import StrEnum

from bracketflow.adapters.broker import get_broker
from bracketflow.adapters.broker.port import BrokerPort, GttRequest
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.contracts import StopSyncRequest
from bracketflow.domain.bracket import Bracket
from bracketflow.domain.enums import BracketStatus, PositionSide
from bracketflow.errors import ConcurrentModification
from bracketflow.observability import logger, metrics

_ATTEMPTS = 3


class SyncOutcome(StrEnum):
    MODIFIED = "MODIFIED"
    NOT_PROTECTED = "NOT_PROTECTED"
    NO_GTT = "NO_GTT"
    GTT_NOT_ACTIVE = "GTT_NOT_ACTIVE"
    NOT_TIGHTER = "NOT_TIGHTER"
    CROSSED = "CROSSED"


def sync_stop(
    request: StopSyncRequest, *, repo: BracketRepository | None = None, broker: BrokerPort | None = None
) -> SyncOutcome:
    repo = repo or BracketRepository()
    bracket = repo.get(request.bracket_id)
    if bracket is None or bracket.status is not BracketStatus.PROTECTED:
        return SyncOutcome.NOT_PROTECTED
    if not bracket.gtt_id:
        return SyncOutcome.NO_GTT
    broker = broker or get_broker()
    gtt_id = int(bracket.gtt_id)
    gtt = broker.gtt(gtt_id)
    if gtt.status != "active":
        return SyncOutcome.GTT_NOT_ACTIVE
    long = bracket.position_side is PositionSide.LONG
    # Two-leg OCO triggers are [lower, upper]: a LONG's stop is the lower, a SHORT's the upper.
    index = 0 if long or len(gtt.trigger_values) == 1 else 1
    current = Decimal(gtt.trigger_values[index])
    new = request.stop_price
    if (new <= current) if long else (new >= current):
        return SyncOutcome.NOT_TIGHTER
    key = f"{gtt.exchange}:{gtt.tradingsymbol}"
    ltp = broker.ltp([key]).get(key)
    crossed = ltp is None or ((new >= ltp) if long else (new <= ltp))
    if len(gtt.trigger_values) == 2:
        other = Decimal(gtt.trigger_values[1 - index])
        crossed = crossed or ((new >= other) if long else (new <= other))
    if crossed:
        return SyncOutcome.CROSSED
    leg = gtt.orders[index]
    triggers = list(gtt.trigger_values)
    triggers[index] = new
    # The legs keep the position's filled quantity (a partly filled entry's GTT grows with its fills: never shrink
    # it back to a quantity read before the last resize).
    quantity = max(bracket.entry.filled_quantity, max(o.quantity for o in gtt.orders))
    orders = [replace(o, quantity=quantity) for o in gtt.orders]
    orders[index] = replace(orders[index], price=new + (leg.price - current))
    assert ltp is not None
    broker.modify_gtt(
        gtt_id,
        GttRequest(
            exchange=gtt.exchange,
            tradingsymbol=gtt.tradingsymbol,
            trigger_values=tuple(Decimal(t) for t in triggers),
            last_price=ltp,
            orders=tuple(orders),
        ),
    )
    _record(repo, bracket, gtt_id, current, new)
    metrics.add_metric(name="BrokerStopSynced", unit="Count", value=1)
    logger.info("GTT stop moved", extra={"bracket_id": bracket.id, "gtt_id": gtt_id, "stop_price": str(new)})
    return SyncOutcome.MODIFIED


def _record(repo: BracketRepository, bracket: Bracket, gtt_id: int, old: Decimal, new: Decimal) -> None:
    """An audit event for the broker-side change (best effort: the GTT itself is the truth)."""
    event = {"type": "BrokerStopMoved", "gtt_id": str(gtt_id), "old_stop": str(old), "new_stop": str(new)}
    for _ in range(_ATTEMPTS):
        current = repo.get(bracket.id)
        if current is None or current.status is not BracketStatus.PROTECTED:
            return
        try:
            repo.append_event(current, event)
            return
        except ConcurrentModification:
            continue
    logger.warning("could not record the GTT stop move", extra={"bracket_id": bracket.id})
