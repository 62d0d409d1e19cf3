"""The broker's view for a reconcile run: its orders, positions and GTTs, read once (TakeSnapshot), stored, and
read back by every bracket of the run; and the live view a repair decides on."""

from __future__ import annotations

import functools
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bracketflow.adapters.broker import get_broker
from bracketflow.adapters.broker.port import GttLeg, GttReport, OrderReport, PositionReport
from bracketflow.adapters.dynamo import lifecycle as store
from bracketflow.adapters.dynamo import reconcile as snapshots
from bracketflow.adapters.dynamo import records as r
from bracketflow.adapters.dynamo.brackets import BracketRepository
from bracketflow.domain import calendar
from bracketflow.domain.bracket import Bracket
from bracketflow.errors import ValidationFailed
from bracketflow.observability import logger
from bracketflow.services.order_updates import is_bracket_order_tag
from bracketflow.settings import get_settings


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def parse_time(value: Any) -> datetime | None:
    return None if not value else datetime.fromisoformat(str(value))


@dataclass(frozen=True)
class BrokerView:
    """The broker's orders, positions and GTTs as read at `taken_at` (the moment before the first read, so nothing
    in it is older than that). live: read just now for one repair, not the run's stored snapshot."""

    taken_at: datetime
    orders: dict[str, OrderReport]
    positions: list[PositionReport]
    gtts: dict[str, GttReport]
    live: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "taken_at": self.taken_at.isoformat(),
            "orders": [_jsonable(asdict(o)) for o in self.orders.values()],
            "positions": [_jsonable(asdict(p)) for p in self.positions],
            "gtts": [_jsonable(asdict(g)) for g in self.gtts.values()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BrokerView:
        orders = []
        for o in data["orders"]:
            money = {k: _dec(o.get(k)) for k in ("price", "trigger_price", "average_price")}
            orders.append(OrderReport(**{**o, **money, "order_timestamp": parse_time(o.get("order_timestamp"))}))
        positions = [
            PositionReport(
                **{
                    **p,
                    **{k: _dec(p.get(k)) for k in ("last_price", "pnl")},
                    "average_price": Decimal(p["average_price"]),
                }
            )
            for p in data["positions"]
        ]
        gtts = []
        for g in data["gtts"]:
            gtts.append(
                GttReport(
                    **{
                        **g,
                        "trigger_values": tuple(Decimal(v) for v in g["trigger_values"]),
                        "last_price": _dec(g.get("last_price")),
                        "orders": tuple(GttLeg(**{**leg, "price": Decimal(leg["price"])}) for leg in g["orders"]),
                        "triggered_order_ids": tuple(str(i) for i in g.get("triggered_order_ids") or ()),
                        "created_at": parse_time(g.get("created_at")),
                        "updated_at": parse_time(g.get("updated_at")),
                    }
                )
            )
        return cls(
            taken_at=datetime.fromisoformat(data["taken_at"]),
            orders={str(o.order_id): o for o in orders},
            positions=positions,
            gtts={str(g.gtt_id): g for g in gtts},
        )

    def net_quantity(self, exchange: str, symbol: str, product: str) -> int:
        return sum(
            p.quantity
            for p in self.positions
            if p.exchange == exchange and p.tradingsymbol == symbol and p.product == product
        )

    def last_price(self, exchange: str, symbol: str, product: str) -> Decimal | None:
        """The instrument's last price as the broker's position row shows it (None without one)."""
        for p in self.positions:
            if p.exchange == exchange and p.tradingsymbol == symbol and p.product == product and p.last_price:
                return p.last_price
        return None

    def _exit_side_fills_since(self, bracket: Bracket, filled_at: datetime) -> list[OrderReport]:
        """COMPLETE orders on the exit side of the bracket's instrument and product, placed at or after `filled_at`
        (the broker's stamps are whole seconds), oldest first."""
        spec = bracket.spec
        since = aware(filled_at).replace(microsecond=0)
        found = [
            o
            for o in self.orders.values()
            if o.status == "COMPLETE"
            and o.exchange == spec.exchange.value
            and o.tradingsymbol == spec.symbol
            and o.product == spec.product.value
            and o.transaction_type == spec.exit_action.value
            and o.order_timestamp is not None
            and aware(o.order_timestamp) >= since
        ]
        return sorted(found, key=lambda o: (aware(o.order_timestamp or since), str(o.order_id)))

    def reopening_orders(self, bracket: Bracket, within_s: float) -> list[OrderReport]:
        """Orders still working on the bracket's entry side of its instrument and product, placed less than
        `within_s` before this view was taken: a trader's quick round trip whose second leg has not filled yet
        (the position it took flat comes back when it fills)."""
        spec = bracket.spec
        return [
            o
            for o in self.orders.values()
            if not o.is_terminal
            and o.exchange == spec.exchange.value
            and o.tradingsymbol == spec.symbol
            and o.product == spec.product.value
            and o.transaction_type == spec.action.value
            and o.order_timestamp is not None
            and (aware(self.taken_at) - aware(o.order_timestamp)).total_seconds() < within_s
        ]

    def closing_order(self, bracket: Bracket, filled_at: datetime | None) -> OrderReport | None:
        """The order that closed this bracket's position at the broker: COMPLETE, the exit side of the same
        instrument and product, for the bracket's whole filled quantity, placed at or after the entry's last fill
        (`filled_at`; the broker's stamps are whole seconds) and recorded for no other bracket. The first such order
        after the fill closed it; None when there is none (an earlier order of the trader's, a close in several
        pieces, or no fill time to compare with: a human looks)."""
        if filled_at is None:
            return None
        for order in self._exit_side_fills_since(bracket, filled_at):
            whole = order.filled_quantity == bracket.entry.filled_quantity
            if not whole or order.order_id == bracket.entry.broker_order_id:
                continue
            mapped = store.get_broker_order_map(str(order.order_id))
            if mapped is None or mapped.get("bracket_id") == bracket.id:
                return order
        return None

    def bulk_closing_order(self, bracket: Bracket, filled_at: datetime | None) -> OrderReport | None:
        """An order not of ours that closed this bracket's position together with others on the same instrument
        and product (the Kite app's Positions -> Exit sells the whole net position in one order): COMPLETE, the
        exit side, for more than the bracket's filled quantity, placed at or after its fill, carrying no tag of
        ours. The latest such order; None when there is none (a close in several pieces: a human looks)."""
        if filled_at is None:
            return None
        bulk = [
            o
            for o in self._exit_side_fills_since(bracket, filled_at)
            if o.filled_quantity > bracket.entry.filled_quantity and not is_bracket_order_tag(o.tag)
        ]
        return bulk[-1] if bulk else None


def aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def trading_day(at: datetime) -> bool:
    """A day some segment trades (MCX's evening session on an equity holiday counts); paper always trades."""
    if get_settings().broker == "paper":
        return True
    return calendar.market_calendar().trades_on(at.astimezone(calendar.IST).date())


def take_snapshot(now: datetime | None = None) -> dict[str, Any]:
    """TakeSnapshot: the broker's view stored for this run; returns {"run_id", "taken_at", "brackets": [...]}.

    The run is scheduled through every session of every segment (into the commodity evening), most of it with no
    bracket open: then only the GTTs are read (for the orphan report), not the orders and positions."""
    at = now or utc_now()
    if not trading_day(at):
        # An exchange holiday or a weekend (the schedule is a weekday cron): nothing moves at the broker, so the run
        # records an empty view and checks no bracket, rather than spend the broker's rate limit on a closed market.
        run_id = f"{at.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        snapshots.put_snapshot(run_id, r.iso(at), BrokerView(taken_at=at, orders={}, positions=[], gtts={}).to_json())
        logger.info("no session today: reconciliation skipped", extra={"run_id": run_id})
        return {"run_id": run_id, "taken_at": r.iso(at), "brackets": [], "market": "closed"}
    brackets = [{"bracket_id": b.id, "account_id": b.account_id} for b in BracketRepository().list_open()]
    view = read_broker(at, everything=bool(brackets))
    run_id = f"{at.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    snapshots.put_snapshot(run_id, r.iso(at), view.to_json())
    logger.info(
        "broker snapshot taken",
        extra={"run_id": run_id, "orders": len(view.orders), "gtts": len(view.gtts), "open_brackets": len(brackets)},
    )
    return {"run_id": run_id, "taken_at": r.iso(at), "brackets": brackets}


def read_broker(at: datetime, *, everything: bool = True, live: bool = False) -> BrokerView:
    """The broker's orders, positions and GTTs (only its GTTs unless `everything`), stamped `at`: a moment taken
    before the first read, so every fact in the view is at least that recent."""
    broker = get_broker()
    return BrokerView(
        taken_at=at,
        orders={str(o.order_id): o for o in broker.orders()} if everything else {},
        positions=list(broker.positions()) if everything else [],
        gtts={str(g.gtt_id): g for g in broker.gtts()},
        live=live,
    )


def live_view() -> BrokerView:
    """The broker as it is now: what every repair that places, cancels, closes or flags decides on."""
    return read_broker(utc_now(), live=True)


@functools.lru_cache(maxsize=4)
def load_view(run_id: str) -> BrokerView:
    """The run's snapshot, read and parsed once per warm container: a run's snapshot is written once and never
    changed, and every bracket of the run (the Map's iterations) and its summary read it; it holds every order of
    the day, so reading it per bracket cost more the longer the session ran. Not cached when missing (raises)."""
    data = snapshots.get_snapshot(run_id)
    if data is None:
        raise ValidationFailed(f"reconcile run {run_id}: no broker snapshot (expired or never taken)")
    return BrokerView.from_json(data)
