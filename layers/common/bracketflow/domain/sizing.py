"""Position size from risk: how many units a trader can hold so that the stop loses at most what they chose to risk.

quantity = floor(risk / per-unit stop distance), rounded down to the lot, then capped by the account's max order
value (also rounded down to the lot). Pure: the caller supplies the risk in rupees (risk_amount, or risk_percent of
the account's capital), the validated entry and stop, the lot and the limit. A size that rounds to zero is refused
with a message that says which bound made it zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from bracketflow.errors import ValidationFailed


@dataclass(frozen=True)
class Sizing:
    method: str  # risk_amount | risk_percent
    risk: Decimal  # rupees at risk
    stop_distance: Decimal  # per unit, |entry - stop|
    lot_size: int
    by_risk: int  # units the risk allows, rounded down to the lot
    quantity: int  # what is placed
    capped_by_max_order_value: bool
    capital: Decimal | None = None
    risk_percent: Decimal | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "method": self.method,
            "risk": str(self.risk),
            "stop_distance": str(self.stop_distance),
            "lot_size": self.lot_size,
            "quantity_by_risk": self.by_risk,
            "quantity": self.quantity,
            "capped_by_max_order_value": self.capped_by_max_order_value,
            "why": self.why,
        }
        if self.capital is not None:
            out |= {"capital": str(self.capital), "risk_percent": str(self.risk_percent)}
        return out

    @property
    def why(self) -> str:
        text = (
            f"risk {self.risk} / stop distance {self.stop_distance} per unit = {self.by_risk} "
            f"(rounded down to the lot of {self.lot_size})"
        )
        if self.capped_by_max_order_value:
            text += f", capped to {self.quantity} by the max order value"
        return text


def _floor_to_lot(units: Decimal, lot: int) -> int:
    whole = int(units.to_integral_value(rounding=ROUND_FLOOR))
    return whole // lot * lot


def size_from_risk(
    *,
    risk_amount: Decimal | None,
    risk_percent: Decimal | None,
    capital: Decimal | None,
    entry: Decimal,
    stop: Decimal,
    lot_size: int,
    max_order_value: Decimal,
) -> Sizing:
    """The quantity for the risk (module doc); ValidationFailed (400) when it cannot be sized or sizes to zero."""
    if risk_percent is not None:
        if capital is None or capital <= 0:
            raise ValidationFailed("risk_percent needs the account's capital: set it (or send risk_amount instead)")
        risk, method = capital * risk_percent / Decimal(100), "risk_percent"
    else:
        assert risk_amount is not None
        risk, method = risk_amount, "risk_amount"
    distance = abs(entry - stop)
    if distance <= 0:
        raise ValidationFailed("risk sizing needs a stop away from the entry price")
    lot = max(lot_size, 1)
    by_risk = _floor_to_lot(risk / distance, lot)
    if by_risk <= 0:
        raise ValidationFailed(
            f"risk {risk.normalize():f} is less than one lot ({lot}) at a stop distance of {distance} per unit: "
            "the size rounds to 0; risk more or move the stop closer"
        )
    by_value = _floor_to_lot(max_order_value / entry, lot)
    quantity = min(by_risk, by_value)
    if quantity <= 0:
        raise ValidationFailed(
            f"one lot ({lot}) at {entry} is more than the max order value {max_order_value}: the size rounds to 0"
        )
    return Sizing(
        method=method,
        risk=risk,
        stop_distance=distance,
        lot_size=lot,
        by_risk=by_risk,
        quantity=quantity,
        capped_by_max_order_value=quantity < by_risk,
        capital=capital if risk_percent is not None else None,
        risk_percent=risk_percent,
    )
