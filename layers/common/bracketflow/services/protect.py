"""PlaceProtection: the filled position gets its broker-side stop and target as one GTT two-leg OCO.

Kite's two-leg GTT: trigger_values [lower, upper] and one LIMIT child per trigger in the same order. For a LONG the
lower trigger is the stop and the upper the target (SELL children); for a SHORT the lower is the target and the
upper the stop (BUY children). The stop child's limit price sits STOP_LIMIT_BUFFER_PERCENT beyond its trigger
(at least one tick, rounded to the tick away from the market), so a gap through the stop still fills; the target
child's limit is the target itself. Quantity = the filled quantity (a partial fill is protected for what filled).

Before placing, the levels are checked again against the actual average fill (validation.check_levels) and the
last price: a MARKET entry may have filled beyond the stop, or the market may have crossed a level since. Then a
GTT would fire at once or be refused, so ProtectionNotPossible is raised and the workflow flattens the position.
A GTT that an earlier attempt created (answer lost, Lambda timed out) is found by instrument/triggers/legs and
adopted, so retries never leave two GTTs. If that GTT has meanwhile FIRED (created after the fill was recorded), it
is adopted too, before the level check: the broker has closed the position itself, and a second GTT or an emergency
exit would open a new one. The bracket is recorded PROTECTED by it, and the GTT's fill (the watcher, which could not
match it while the bracket was ENTRY_FILLED, or reconciliation) closes it.

A GTT protects one bracket only. Two brackets with the same instrument, levels, side and quantity ask for identical
GTTs (of one account, or of two: the stack's accounts share one broker session), so a GTT found by its trigger may
be the other bracket's: only GTTs no other bracket has claimed (adapters/dynamo/gtt_claims.py) are adopted, and the
claim is written in the transaction that records the bracket PROTECTED. A claim lost there (the other bracket took
that GTT first, or the broker's lost-create lookup answered with the other bracket's twin) starts the step over:
list again, adopt an unclaimed twin (ours) or create. Identical twins are interchangeable (same instrument, levels,
legs, quantity); what matters is that each bracket owns its own.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from bracketflow import metrics_names
from bracketflow.adapters.broker import get_broker
from bracketflow.adapters.broker.port import BrokerPort, GttLeg, GttReport, GttRequest
from bracketflow.adapters.dynamo import records as r
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.adapters.dynamo.gtt_claims import GttClaimedElsewhere, claimed_by_others, save_claiming
from bracketflow.adapters.instrument_store import InstrumentMasterMissing, current_master
from bracketflow.contracts import WatchRequest
from bracketflow.domain.bracket import Bracket
from bracketflow.domain.enums import BracketStatus, LegRole, OrderStatus, PositionSide
from bracketflow.domain.events import ProtectionPlaced
from bracketflow.domain.scale_out import price_breakeven
from bracketflow.domain.validation import RoundMode, check_levels, round_to_tick
from bracketflow.errors import ConcurrentModification, InvalidStateTransition, ProtectionNotPossible, ValidationFailed
from bracketflow.observability import logger, metrics
from bracketflow.services import breakeven
from bracketflow.services.lifecycle import event, load, retrying
from bracketflow.settings import get_settings


def stop_limit_price(stop: Decimal, side: PositionSide, tick: Decimal, buffer_percent: Decimal) -> Decimal:
    """The stop child's LIMIT price: buffer_percent beyond the trigger, >= one tick, rounded away from the market."""
    buffer = stop * buffer_percent / Decimal(100)
    if side is PositionSide.LONG:  # a SELL: a lower limit fills more surely
        return min(round_to_tick(stop - buffer, tick, RoundMode.DOWN), stop - tick)
    return max(round_to_tick(stop + buffer, tick, RoundMode.UP), stop + tick)


def protection_request(
    bracket: Bracket, quantity: int, last_price: Decimal, tick: Decimal, buffer_percent: Decimal
) -> GttRequest:
    spec = bracket.spec
    side = bracket.position_side
    stop, target = bracket.stop_price, spec.target_price
    exit_side = spec.exit_action.value
    product = spec.product.value
    stop_leg = GttLeg(exit_side, quantity, stop_limit_price(stop, side, tick, buffer_percent), product)
    target_leg = GttLeg(exit_side, quantity, target, product)
    if side is PositionSide.LONG:
        triggers, legs = (stop, target), (stop_leg, target_leg)
    else:
        triggers, legs = (target, stop), (target_leg, stop_leg)
    return GttRequest(spec.exchange.value, spec.symbol, triggers, last_price, legs)


def watch_request(bracket: Bracket, instrument_token: int, tick: Decimal) -> WatchRequest:
    """The streamer's watch of the bracket as it is now: its current stop, what filled and its GTT."""
    spec = bracket.spec
    breakeven = price_breakeven(spec, bracket.entry.average_price, tick)
    return WatchRequest(
        bracket_id=bracket.id,
        instrument_token=instrument_token,
        side=bracket.position_side,
        product=spec.product,
        stop_price=bracket.stop_price,
        tick_size=tick,
        entry_price=bracket.entry.average_price,
        trail=spec.trail,
        activation_price=spec.trail_activation_price,
        account_id=bracket.account_id,
        exchange=spec.exchange.value,
        tradingsymbol=spec.symbol,
        quantity=bracket.entry.filled_quantity,
        target_price=spec.target_price,
        gtt_id=bracket.gtt_id,
        breakeven_at=None if breakeven is None else spec.breakeven_at,
        breakeven_stop=breakeven,
    )


# Starts of the step after a lost claim; each loss means another bracket took a GTT, so a few are plenty.
CLAIM_ATTEMPTS = 4


def place_protection(bracket_id: str) -> dict[str, Any]:
    """Place (or find) the GTT OCO and mark the bracket PROTECTED; returns {"gtt_id", "watch": <WatchRequest dict>}."""
    for _ in range(CLAIM_ATTEMPTS):
        try:
            return _protect_once(bracket_id)
        except GttClaimedElsewhere as lost:
            logger.warning(
                "GTT is another bracket's; looking again", extra={"bracket_id": bracket_id, "gtt_id": lost.gtt_id}
            )
    # The workflow retries ConcurrentModification; a position is never left recorded on another bracket's GTT.
    raise ConcurrentModification(f"bracket {bracket_id}: every GTT it found was claimed by another bracket first")


def _protect_once(bracket_id: str) -> dict[str, Any]:
    bracket = load(bracket_id)
    settings = get_settings()
    spec = bracket.spec
    instrument = current_master().get(spec.exchange.value, spec.symbol)
    tick = instrument.tick_size if instrument and instrument.tick_size > 0 else settings.default_tick_size
    broker = get_broker()
    key = f"{spec.exchange.value}:{spec.symbol}"
    quote = broker.quote([key]).get(key)
    token = instrument.instrument_token if instrument else (quote.instrument_token if quote else 0) or 0

    if bracket.status is BracketStatus.PROTECTED and bracket.gtt_id:
        protected = _breakeven_if_due(bracket, quote.last_price if quote is not None else None)
        return {"gtt_id": bracket.gtt_id, "watch": watch_request(protected, token, tick).to_dict()}
    if bracket.status is not BracketStatus.ENTRY_FILLED:
        raise InvalidStateTransition("bracket", bracket.status.value, BracketStatus.PROTECTED.value)

    quantity = bracket.entry.filled_quantity
    fill = bracket.entry.average_price
    last = quote.last_price if quote is not None and quote.last_price > 0 else fill
    assert last is not None
    req = protection_request(bracket, quantity, last, tick, settings.stop_limit_buffer_percent)
    # Ours to adopt: GTTs just like ours, live or fired since the fill, that no other bracket has claimed (read
    # only for these few, not for every dead twin the broker still lists).
    twins = [g for g in broker.gtts() if g.same_trigger_as(req)]
    at_broker = _unclaimed([g for g in twins if g.status == "active" or _fired_since_fill([g], bracket, req)], bracket)
    fired = _fired_since_fill(at_broker, bracket, req)
    if fired is not None:
        logger.warning(
            "GTT of an earlier attempt already fired; adopting it, placing nothing",
            extra={"bracket_id": bracket.id, "gtt_id": fired.gtt_id, "orders": fired.triggered_order_ids},
        )
        protected = _record_protection(bracket_id, str(fired.gtt_id), req, quantity)
        return {"gtt_id": str(fired.gtt_id), "watch": watch_request(protected, token, tick).to_dict()}
    try:
        check_levels(spec.action, fill, bracket.stop_price, spec.target_price, note=" (the average fill price)")
        check_levels(spec.action, last, bracket.stop_price, spec.target_price, note=" (the last traded price)")
    except ValidationFailed as exc:
        raise ProtectionNotPossible(
            f"cannot protect at stop {bracket.stop_price} / target "
            f"{spec.target_price} after a fill at {fill}, last {last}: {exc.message}"
        ) from exc

    existing = [g for g in at_broker if g.status == "active" and g.same_trigger_as(req)]
    gtt_id = (
        existing[0].gtt_id if existing else broker.create_gtt(req, lookup_window_s=settings.protection_lookup_window_s)
    )
    if existing:
        logger.warning("GTT already at the broker; adopting it", extra={"bracket_id": bracket.id, "gtt_id": gtt_id})
    protected = _record_protection(bracket_id, str(gtt_id), req, quantity)
    metrics.add_metric(name="ProtectionsPlaced", unit="Count", value=1)
    # How long the position stood without a broker-side stop: from the moment its fill was recorded (the bracket's
    # last change in ENTRY_FILLED) to the GTT's record; it includes BracketOrderDelaySeconds.
    unprotected_s = (protected.updated_at - bracket.updated_at).total_seconds()
    metrics.add_metric(name=metrics_names.ENTRY_TO_PROTECTION_SECONDS, unit="Seconds", value=max(0.0, unprotected_s))
    protected = _breakeven_if_due(protected, last)
    return {"gtt_id": str(gtt_id), "watch": watch_request(protected, token, tick).to_dict()}


def _breakeven_if_due(protected: Bracket, last: Decimal | None) -> Bracket:
    """A scale-out share protected after its group's breakeven share exited at its target gets the breakeven stop now
    (services/breakeven); the protection stands whatever happens to that."""
    try:
        return breakeven.on_protected(protected, last)
    except Exception:
        logger.exception("breakeven not applied on protection", extra={"bracket_id": protected.id})
        return protected


def leftover_gtts(broker: BrokerPort, bracket: Bracket) -> list[GttReport]:
    """Active GTTs at the broker that may protect this bracket's fill: its recorded one, and any GTT exactly like its
    protection request that no other bracket claims (one an earlier PlaceProtection attempt made and never recorded:
    its answer lost, its Lambda timed out). Raises BrokerError when the broker's GTTs cannot be read."""
    req = sweep_request(bracket)
    live = [g for g in broker.gtts() if g.status == "active"]
    recorded = [g for g in live if bracket.gtt_id and str(g.gtt_id) == str(bracket.gtt_id)]
    twins = _unclaimed([g for g in live if g.same_trigger_as(req) and g not in recorded], bracket)
    return recorded + twins


def sweep_request(bracket: Bracket) -> GttRequest:
    """The protection request this bracket's fill would have made (what a leftover GTT of it looks like)."""
    fill = bracket.entry.average_price or bracket.stop_price
    percent = get_settings().stop_limit_buffer_percent
    return protection_request(bracket, bracket.entry.filled_quantity, fill, _sweep_tick(bracket), percent)


def _sweep_tick(bracket: Bracket) -> Decimal:
    """The tick a protection request of this bracket was priced on. The flatten's GTT sweeps must not fail for want of
    the instrument list: without it no GTT could have been placed either, so the default tick finds what there is."""
    spec = bracket.spec
    try:
        instrument = current_master().get(spec.exchange.value, spec.symbol)
    except InstrumentMasterMissing:
        instrument = None
    return instrument.tick_size if instrument and instrument.tick_size > 0 else get_settings().default_tick_size


def adopt_fired_twin(broker: BrokerPort, bracket: Bracket) -> Bracket | None:
    """A GTT exactly like this bracket's protection that an earlier, unrecorded PlaceProtection attempt created and
    that has already fired: its order is the position's exit, so flattening too would open a reverse position. The
    bracket is recorded PROTECTED by it (its fill then closes the bracket, as for any GTT) and returned; None when
    there is none."""
    quantity = bracket.entry.filled_quantity
    req = sweep_request(bracket)
    # The claims are read only for the GTTs like ours that fired since the fill: the broker lists every GTT that fired
    # today, and one read each made this look outlast the emergency flatten's own timeout late in a session.
    look_alikes = [g for g in broker.gtts() if _fired_since_fill([g], bracket, req) is not None]
    fired = next(iter(_unclaimed(look_alikes, bracket)), None)
    if fired is None:
        return None
    logger.warning(
        "a GTT of an earlier protection attempt already fired; adopting it instead of flattening",
        extra={"bracket_id": bracket.id, "gtt_id": fired.gtt_id, "orders": fired.triggered_order_ids},
    )
    return _record_protection(bracket.id, str(fired.gtt_id), req, quantity)


def delete_leftover_gtts(bracket: Bracket) -> list[str]:
    """Delete every GTT leftover_gtts finds (a position being flattened must not keep a GTT that could later fire
    into a flat account and open a reverse one); returns their ids. Raises BrokerError when one cannot be read or
    deleted, so the caller's retry does it again."""
    broker = get_broker()
    deleted = []
    for gtt in leftover_gtts(broker, bracket):
        broker.delete_gtt(gtt.gtt_id)
        deleted.append(str(gtt.gtt_id))
    if deleted:
        logger.warning("GTTs left by protection deleted", extra={"bracket_id": bracket.id, "gtt_ids": deleted})
    return deleted


def own_twin_or_new_gtt(broker: BrokerPort, bracket: Bracket, req: GttRequest) -> str:
    """An active GTT like `req` that no other bracket claims (one a lost create answer left), else a new one."""
    free = _unclaimed([g for g in broker.gtts() if g.status == "active" and g.same_trigger_as(req)], bracket)
    return str(free[0].gtt_id) if free else str(broker.create_gtt(req))


def _unclaimed(candidates: list[GttReport], bracket: Bracket) -> list[GttReport]:
    """The candidates no other bracket (of any account: they share the broker) has claimed; its own claim is fine."""
    if not candidates:
        return []
    taken = claimed_by_others([str(g.gtt_id) for g in candidates], bracket.id)
    return [g for g in candidates if str(g.gtt_id) not in taken]


def _fired_since_fill(gtts: list[GttReport], bracket: Bracket, req: GttRequest) -> GttReport | None:
    """A triggered GTT exactly like ours created since the fill was recorded (the bracket's last change, in
    ENTRY_FILLED; the broker's timestamps are whole seconds): one an earlier attempt of this step created."""
    since = bracket.updated_at - timedelta(seconds=1)
    for gtt in gtts:
        created = gtt.created_at
        if gtt.status == "triggered" and gtt.same_trigger_as(req) and created is not None and created >= since:
            return gtt
    return None


def _record_protection(bracket_id: str, gtt_id: str, req: GttRequest, quantity: int) -> Bracket:
    repo = BracketRepository()
    by_trigger = dict(zip(req.trigger_values, req.orders, strict=True))

    def step(b: Bracket) -> Bracket | None:
        if b.status is not BracketStatus.ENTRY_FILLED:
            return None
        nxt = b.transition(BracketStatus.PROTECTED, gtt_id=gtt_id)
        stop_leg, target_leg = by_trigger[b.stop_price], by_trigger[b.spec.target_price]
        at = r.iso(nxt.updated_at)
        legs = [
            r.leg_item(
                b.id,
                b.account_id,
                role.value,
                OrderStatus.SENT_TO_BROKER.value,
                at,
                quantity=quantity,
                gtt_id=gtt_id,
                trigger_price=trigger,
                price=leg.price,
            )
            for role, trigger, leg in (
                (LegRole.STOP, b.stop_price, stop_leg),
                (LegRole.TARGET, b.spec.target_price, target_leg),
            )
        ]
        ev = event(
            ProtectionPlaced,
            nxt,
            gtt_id=gtt_id,
            stop_price=b.stop_price,
            stop_limit_price=stop_leg.price,
            target_price=b.spec.target_price,
            quantity=quantity,
        )
        save_claiming(repo, b, nxt, [ev], gtt_id, legs=legs)
        return nxt

    return retrying(bracket_id, step)
