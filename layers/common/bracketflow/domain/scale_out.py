"""Scale-out: one request with up to three targets under one stop becomes one bracket per share.

Each share is a whole bracket (its own entry for its quantity, its own GTT with the common stop and its own target,
its own trail and exit), so every rule that keeps a bracket safe keeps each share safe. The breakeven stop is a
ratchet like the trail: it only ever tightens a share's stop (trailing.stop_has_trailed, the one rule).
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from bracketflow.domain.bracket import BracketSpec, ScaleTarget
from bracketflow.domain.enums import Action, PositionSide
from bracketflow.domain.trailing import stop_has_trailed
from bracketflow.domain.validation import RoundMode, round_to_tick, validate_bracket
from bracketflow.errors import ValidationFailed

MAX_TARGETS = 3
HUNDRED = Decimal(100)


def share_quantities(total: int, targets: tuple[ScaleTarget, ...], lot_size: int) -> list[int]:
    """Each target's quantity: units as given, or its percent of `total` rounded down to the lot (the last share
    takes what the rounding left). Shares must cover the whole quantity and none may be zero."""
    if not 1 <= len(targets) <= MAX_TARGETS:
        raise ValidationFailed(f"targets: give 1 to {MAX_TARGETS} targets, got {len(targets)}")
    by_percent = [t.share_percent is not None for t in targets]
    if any(by_percent) and not all(by_percent):
        raise ValidationFailed("targets: give every share as a percent (share) or every one as a quantity, not both")
    if all(by_percent):
        percents = [t.share_percent for t in targets]
        given = sum(p or 0 for p in percents)
        if given != HUNDRED:
            raise ValidationFailed(f"targets: the shares must add up to 100 percent, got {given}")
        lots = total // lot_size
        quantities = [int(lots * (p or 0) / HUNDRED) * lot_size for p in percents[:-1]]
        quantities.append(total - sum(quantities))
    else:
        quantities = [t.quantity or 0 for t in targets]
        if sum(quantities) != total:
            raise ValidationFailed(f"targets: the shares' quantities must add up to the quantity {total}")
    for index, quantity in enumerate(quantities, start=1):
        if quantity <= 0:
            raise ValidationFailed(
                f"target {index}'s share of {total} is 0 on the lot size {lot_size}: give it a larger share"
            )
        if quantity % lot_size:
            raise ValidationFailed(f"target {index}'s quantity {quantity} is not a multiple of the lot size {lot_size}")
    return quantities


def share_specs(checked: BracketSpec, *, tick_size: Decimal, lot_size: int, round_to_tick: bool) -> list[BracketSpec]:
    """The validated spec of every share of a scale-out request (`checked`: the request validated as a whole)."""
    if checked.breakeven_after is not None and not 1 <= checked.breakeven_after < len(checked.targets):
        raise ValidationFailed(
            f"breakeven_after must name a target from 1 to {len(checked.targets) - 1}"
            f" (a share must remain after it), got {checked.breakeven_after}"
        )
    quantities = share_quantities(checked.quantity, checked.targets, lot_size)
    shares = []
    for index, (target, quantity) in enumerate(zip(checked.targets, quantities, strict=True), start=1):
        share = dataclasses.replace(
            checked,
            targets=(),
            share_index=index,
            quantity=quantity,
            target_price=target.price,
            disclosed_quantity=min(checked.disclosed_quantity, quantity),
            risk_amount=None,
            risk_percent=None,
        )
        try:
            shares.append(validate_bracket(share, tick_size=tick_size, lot_size=lot_size, round_to_tick=round_to_tick))
        except ValidationFailed as exc:
            raise ValidationFailed(f"target {index}: {exc.message}") from None
    return shares


def breakeven_stop(action: Action, entry: Decimal, buffer: Decimal | None, tick_size: Decimal) -> Decimal:
    """The entry plus the cost buffer on the winning side, on the tick so the buffer is fully covered."""
    if action is Action.BUY:
        return round_to_tick(entry + (buffer or 0), tick_size, RoundMode.UP)
    return round_to_tick(entry - (buffer or 0), tick_size, RoundMode.DOWN)


def price_breakeven(spec: BracketSpec, entry: Decimal | None, tick_size: Decimal) -> Decimal | None:
    """The stop a breakeven_at trigger moves a bracket to (its entry, the average fill, plus the buffer); None
    without a trigger or an entry."""
    if spec.breakeven_at is None or entry is None:
        return None
    return breakeven_stop(spec.action, entry, spec.breakeven_buffer, tick_size)


def tightened(side: PositionSide, stop: Decimal, breakeven: Decimal) -> bool:
    """True when the breakeven tightens `stop`; a breakeven never loosens a stop (the trail's ratchet)."""
    return stop_has_trailed(side, stop, breakeven)
