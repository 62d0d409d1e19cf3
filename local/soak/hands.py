"""The trader's own hands at the broker, through its Kite API as the trader's app would: closing a position,
deleting a GTT, an unrelated round trip and a resting order on a symbol bracketflow trades."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from local.soak.base import LIVE_ORDER, SoakBase
from local.soak.plan import Step


class TraderHands(SoakBase):
    """The trader's hand actions, each done only where no exit of bracketflow's is near."""

    def _do_hand(self, step: Step) -> None:
        action = step.data["action"]
        done = getattr(self, f"_hand_{action}")()
        self.actions[f"hand_{action}" if done else f"hand_{action}_skipped"] += 1

    def _calm_targets(self) -> list[Any]:
        """Open PROTECTED brackets whose price is well inside their stop and target (so no exit is near: a hand
        action there is the trader's, not a race with bracketflow's own exit)."""
        from bracketflow.adapters.dynamo.brackets import BracketRepository

        calm = []
        for b in sorted(BracketRepository().list_open(), key=lambda b: b.id):
            if b.status.value != "PROTECTED":
                continue
            ltp = self._ltp(b.spec.symbol)
            if ltp is None:
                continue
            # The stored stop may trail the streamer's by a couple of seconds: keep well clear of it.
            margin = ltp * Decimal("0.003")
            if abs(ltp - b.stop_price) > margin and abs(b.spec.target_price - ltp) > margin:
                calm.append(b)
        return calm

    def _hand_order(self, params: dict[str, str]) -> dict[str, Any] | None:
        """Place an untagged order as the trader's app would; when the answer is lost or an error, look for it (the
        broker may have placed it anyway). {"order_id", "status"} as the broker's timeline last shows it, or None."""
        marker = self._paper("GET", "timeline?since=1000000000")["next"]
        placed = self._kite("POST", "/orders/regular", data=params)
        events = self._paper("GET", f"timeline?since={marker}")["events"]
        mine = [e for e in events if e["event"] == "order" and not e.get("tag")]
        if placed is not None:
            order_id = str(placed["order_id"])
        else:
            match = [
                e
                for e in mine
                if all(str(e[k]) == params[k] for k in ("tradingsymbol", "transaction_type", "product", "order_type"))
                and int(e["quantity"]) == int(params["quantity"])
            ]
            if not match:
                return None
            order_id = match[0]["order_id"]
        statuses = [e["status"] for e in mine if e["order_id"] == order_id]
        return {"order_id": order_id, "status": statuses[-1] if statuses else "OPEN"}

    def _hand_close_position(self) -> bool:
        """Exit a whole position (symbol and product) as the Kite app's Positions -> Exit does, if every bracket on
        it is calm and nothing of bracketflow's is working there."""
        from bracketflow.adapters.dynamo.brackets import BracketRepository

        open_brackets = BracketRepository().list_open()
        calm = {(b.spec.symbol, b.spec.product.value) for b in self._calm_targets()}
        busy = {(b.spec.symbol, b.spec.product.value) for b in open_brackets if b.status.value != "PROTECTED"}
        candidates = sorted(calm - busy)
        if not candidates:
            return False
        symbol, product = self.rng.choice(candidates)
        # every bracket on it must be calm, not just one
        on_it = [b for b in open_brackets if (b.spec.symbol, b.spec.product.value) == (symbol, product)]
        calm_ids = {b.id for b in self._calm_targets()}
        if any(b.id not in calm_ids for b in on_it):
            return False
        positions = self._kite("GET", "/portfolio/positions") or {"net": []}
        net = sum(
            int(p["quantity"])
            for p in positions["net"]
            if p["tradingsymbol"] == symbol and p["product"] == product and p["exchange"] == "NSE"
        )
        if net == 0:
            return False
        placed = self._hand_order(
            {
                "exchange": "NSE",
                "tradingsymbol": symbol,
                "transaction_type": "SELL" if net > 0 else "BUY",
                "quantity": str(abs(net)),
                "product": product,
                "order_type": "MARKET",
                "market_protection": "5",
            }
        )
        return placed is not None and placed["status"] != "REJECTED"

    def _hand_delete_gtt(self) -> bool:
        calm = [b for b in self._calm_targets() if b.gtt_id]
        if not calm:
            return False
        target = self.rng.choice(calm)
        self.hand_deleted_gtts.add(int(target.gtt_id))  # even unanswered: the broker may have deleted it
        return self._kite("DELETE", f"/gtt/triggers/{target.gtt_id}") is not None

    def _hand_round_trip(self) -> bool:
        """The trader's own quick trade on a symbol a bracket holds, matching that bracket's exit exactly (side,
        product, quantity), untagged, bought and sold back at once: not bracketflow's to act on."""
        calm = self._calm_targets()
        if not calm:
            return False
        b = self.rng.choice(calm)
        exit_side = "SELL" if b.spec.action.value == "BUY" else "BUY"
        back = "BUY" if exit_side == "SELL" else "SELL"
        params = {
            "exchange": "NSE",
            "tradingsymbol": b.spec.symbol,
            "quantity": str(b.filled_quantity or b.spec.quantity),
            "product": b.spec.product.value,
            "order_type": "MARKET",
            "market_protection": "5",
        }
        first = self._hand_order({**params, "transaction_type": exit_side})
        if first is None:
            return False
        self.hand_order_ids.add(first["order_id"])
        if first["status"] == "REJECTED":
            return False
        # Back out at once; a refused leg is tried again, as the trader would, so no position of theirs is left.
        for _attempt in range(20):
            second = self._hand_order({**params, "transaction_type": back})
            if second is not None:
                self.hand_order_ids.add(second["order_id"])
                if second["status"] != "REJECTED":
                    return True
            time.sleep(0.3)
        self.notes.append(f"a hand round trip on {b.spec.symbol} {b.spec.product.value} could not be closed")
        return True

    def _hand_resting_order(self) -> bool:
        """An untagged LIMIT 5% away from the market on a traded symbol, cancelled by hand 10 to 40 s later."""
        symbol = self.rng.choice(self.cfg.symbols)
        ltp = self._ltp(symbol)
        if ltp is None:
            return False
        side = self.rng.choice(("BUY", "SELL"))
        price = ltp * (Decimal("0.95") if side == "BUY" else Decimal("1.05"))
        price = (price / Decimal("0.05")).quantize(Decimal(1)) * Decimal("0.05")
        placed = self._hand_order(
            {
                "exchange": "NSE",
                "tradingsymbol": symbol,
                "transaction_type": side,
                "quantity": str(self.rng.randint(1, 5)),
                "product": self.rng.choice(("MIS", "CNC")),
                "order_type": "LIMIT",
                "price": str(price),
            }
        )
        if placed is None:
            return False
        self.hand_order_ids.add(str(placed["order_id"]))
        self.resting.append((self._elapsed() + self.rng.uniform(10, 40), str(placed["order_id"])))
        return True

    def _cancel_due_resting(self, now: float, everything: bool = False) -> None:
        due = [r for r in self.resting if everything or r[0] <= now]
        self.resting = [r for r in self.resting if r not in due]
        for _, order_id in due:
            for _attempt in range(5):  # the storm may still be refusing calls; the trader tries again
                if self._kite("DELETE", f"/orders/regular/{order_id}") is not None:
                    break
                history = self._kite("GET", f"/orders/{order_id}")
                if history and history[-1]["status"] not in LIVE_ORDER:
                    break
                time.sleep(0.2)
