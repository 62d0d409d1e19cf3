"""The trailing stop-loss calculator: docs/trailing.md, exactly, in integer paise.

Pure and small on purpose: the streamer's fast engine, the replay tool and the tests all agree with it.
For one bracket and one tick the rule is:

0. (our addition) an LTP <= 0 is no price at all — Kite sends 0 for an instrument with no trade yet, and a
   glitch can too — so the tick is skipped for that bracket: no trigger check, no trailing. The trigger rule
   read literally ("LONG exits if ltp <= stop") would market-exit a position on such a packet;
1. trigger first, on LTP: LONG exits if ltp <= stop, SHORT if ltp >= stop (and is then done);
2. reference price: for MIS, the best bid (LONG) / best ask (SHORT) of a full packet when it is > 0,
   otherwise LTP;
3. activation: with an activation price, trailing starts once the reference reaches it and stays on;
4. candidate: percent v -> bps = round(v*100), LONG ref*(10000-bps)//10000, SHORT ceil(ref*(10000+bps)/10000);
   points v -> ref -/+ P(v);
5. round to the tick away from the market (LONG down, SHORT up);
6. ratchet: a stop only ever tightens.

P(x) = round(x*100) on the exact decimal value (Python's round: half to even), never through float.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Decimal
from typing import NamedTuple, Protocol

from bracketflow.domain.enums import PositionSide, Product, TrailType

PAISE_PER_RUPEE = 100
BPS_PER_UNIT = 10_000  # 100% = 10000 basis points
_HUNDRED = Decimal(100)


class TrailLike(Protocol):
    """What the calculator needs of a trail spec (bracketflow.domain.bracket.TrailSpec fits)."""

    @property
    def type(self) -> TrailType | str: ...

    @property
    def value(self) -> Decimal | str | int: ...


def _decimal(x: Decimal | str | int | float) -> Decimal:
    if isinstance(x, Decimal):
        return x
    if isinstance(x, float):
        # A float from JSON means the decimal text it was written as, not its binary approximation.
        return Decimal(repr(x))
    return Decimal(x)


def to_paise(rupees: Decimal | str | int | float) -> int:
    """P(x) = round(x*100), exact: Decimal arithmetic, ties to even like Python's round()."""
    d = _decimal(rupees)
    if not d.is_finite():
        raise ValueError(f"price must be a finite number, got {rupees!r}")
    return int((d * _HUNDRED).to_integral_value(rounding=ROUND_HALF_EVEN))


def to_rupees(paise: int) -> Decimal:
    """Paise back to rupees, exactly (e.g. 150005 -> Decimal('1500.05'))."""
    return Decimal(paise).scaleb(-2)


def percent_to_bps(percent: Decimal | str | int | float) -> int:
    """bps = round(v*100), the same rounding as P."""
    return to_paise(percent)


def _is_long(side: PositionSide | str) -> bool:
    return PositionSide.parse(side) is PositionSide.LONG


@dataclass(frozen=True, slots=True)
class TrailingBracket:
    """One bracket compiled for trailing: everything in paise, the trail reduced to bps or points.

    `stop` and `activated` are the evolving state; the rest is fixed for the bracket's life.
    """

    side: PositionSide
    is_mis: bool
    stop: int  # paise
    tick: int  # paise, > 0
    trail_type: TrailType | None = None
    trail_bps: int = 0  # percent trails
    trail_points: int = 0  # points trails, paise
    activation: int | None = None  # paise; None = trail from the first tick
    activated: bool = False

    @property
    def is_long(self) -> bool:
        return self.side is PositionSide.LONG

    @property
    def trail_amount(self) -> int:
        """bps for a percent trail, paise for a points trail, 0 without a trail."""
        return self.trail_bps if self.trail_type is TrailType.PERCENT else self.trail_points


def compile_bracket(
    *,
    side: PositionSide | str,
    product: Product | str,
    stop_price: Decimal | str | int | float,
    tick_size: Decimal | str | int | float,
    trail: TrailLike | dict | None = None,
    activation_price: Decimal | str | int | float | None = None,
    activated: bool = False,
) -> TrailingBracket:
    """Validate and compile one bracket; raises ValueError saying what is wrong and why."""
    position_side = PositionSide.parse(side)
    product_ = Product.parse(product)
    stop = to_paise(stop_price)
    tick = to_paise(tick_size)
    if stop <= 0:
        raise ValueError(f"stop_price must be > 0, got {stop_price!r}")
    if tick <= 0:
        raise ValueError(f"tick_size must be at least 0.01, got {tick_size!r}")
    trail_type: TrailType | None = None
    bps = points = 0
    if trail is not None:
        raw_type, raw_value = (trail["type"], trail["value"]) if isinstance(trail, dict) else (trail.type, trail.value)
        trail_type = TrailType.parse(raw_type)
        if trail_type is TrailType.PERCENT:
            bps = percent_to_bps(raw_value)
            # 0 bps would trail the stop onto the price itself; 100% or more would trail to nothing.
            if not 0 < bps < BPS_PER_UNIT:
                raise ValueError(f"trail percent must be between 0.01 and 99.99, got {raw_value!r}")
        else:
            points = to_paise(raw_value)
            if points <= 0:
                raise ValueError(f"trail points must be at least 0.01, got {raw_value!r}")
    activation = None
    # Without a trail an activation price changes nothing, so it is dropped rather than refused.
    if activation_price is not None and trail_type is not None:
        activation = to_paise(activation_price)
        if activation <= 0:
            raise ValueError(f"activation_price must be > 0, got {activation_price!r}")
    return TrailingBracket(
        side=position_side,
        is_mis=product_ is Product.MIS,
        stop=stop,
        tick=tick,
        trail_type=trail_type,
        trail_bps=bps,
        trail_points=points,
        activation=activation,
        activated=activated or activation is None,
    )


def has_price(ltp: int) -> bool:
    """Step 0: an LTP of 0 (no trade yet) or below (a glitch) is not a price; such a tick changes nothing."""
    return ltp > 0


def stop_has_trailed(side: PositionSide | str, placed_stop: Decimal | int, stop: Decimal | int) -> bool:
    """The stop is tighter than the one placed: an exit at it is a TRAIL_STOP, not a STOP (both in rupees, or both
    in paise). The one rule, for the bracket and for the streamer."""
    return stop > placed_stop if _is_long(side) else stop < placed_stop


def is_triggered(side: PositionSide | str, ltp: int, stop: int) -> bool:
    """Step 1: LONG exits if ltp <= stop; SHORT exits if ltp >= stop — never on an LTP that is no price."""
    if not has_price(ltp):
        return False
    return ltp <= stop if _is_long(side) else ltp >= stop


def reference_price(
    side: PositionSide | str, is_mis: bool, ltp: int, best_bid: int = 0, best_ask: int = 0, has_depth: bool = False
) -> int:
    """Step 2: MIS trails on the side it would exit into (bid for LONG, ask for SHORT) when a full packet
    carries a positive price there; everything else trails on LTP."""
    if is_mis and has_depth:
        touch = best_bid if _is_long(side) else best_ask
        if touch > 0:
            return touch
    return ltp


def is_activation_reached(side: PositionSide | str, reference: int, activation: int | None) -> bool:
    """Step 3: LONG needs ref >= activation, SHORT ref <= activation; no activation price means always."""
    if activation is None:
        return True
    return reference >= activation if _is_long(side) else reference <= activation


def candidate_stop(side: PositionSide | str, reference: int, trail_type: TrailType | str, amount: int) -> int:
    """Step 4: the stop the trail asks for, before tick rounding. `amount` is bps (percent) or paise (points)."""
    long = _is_long(side)
    if TrailType.parse(trail_type) is TrailType.PERCENT:
        if long:
            return reference * (BPS_PER_UNIT - amount) // BPS_PER_UNIT
        return -(-reference * (BPS_PER_UNIT + amount) // BPS_PER_UNIT)  # ceil
    return reference - amount if long else reference + amount


def round_away(side: PositionSide | str, candidate: int, tick: int) -> int:
    """Step 5: onto the tick, away from the market: LONG rounds down, SHORT rounds up."""
    if _is_long(side):
        return candidate // tick * tick
    return -(-candidate // tick) * tick


def ratchet(side: PositionSide | str, stop: int, candidate: int) -> int:
    """Step 6: a stop never loosens: LONG takes the higher, SHORT the lower."""
    return max(stop, candidate) if _is_long(side) else min(stop, candidate)


class Evaluation(NamedTuple):
    exited: bool
    stop: int  # the stop after this tick (on an exit: the stop that was hit)
    activated: bool


def evaluate(
    bracket: TrailingBracket, ltp: int, best_bid: int = 0, best_ask: int = 0, has_depth: bool = False
) -> Evaluation:
    """Steps 0-6 for one (non-index) packet: (exited, new_stop, activated)."""
    side, stop = bracket.side, bracket.stop
    if not has_price(ltp):
        return Evaluation(False, stop, bracket.activated)  # no price: not even the MIS bid may trail it
    if is_triggered(side, ltp, stop):
        return Evaluation(True, stop, bracket.activated)
    if bracket.trail_type is None:
        return Evaluation(False, stop, bracket.activated)
    ref = reference_price(side, bracket.is_mis, ltp, best_bid, best_ask, has_depth)
    activated = bracket.activated or is_activation_reached(side, ref, bracket.activation)
    if not activated:
        return Evaluation(False, stop, False)
    candidate = round_away(side, candidate_stop(side, ref, bracket.trail_type, bracket.trail_amount), bracket.tick)
    return Evaluation(False, ratchet(side, stop, candidate), True)


def advance(
    bracket: TrailingBracket, ltp: int, best_bid: int = 0, best_ask: int = 0, has_depth: bool = False
) -> tuple[bool, TrailingBracket]:
    """evaluate() and carry the state forward: (exited, the bracket as it stands after the tick)."""
    exited, stop, activated = evaluate(bracket, ltp, best_bid, best_ask, has_depth)
    if stop == bracket.stop and activated == bracket.activated:
        return exited, bracket
    return exited, replace(bracket, stop=stop, activated=activated)
