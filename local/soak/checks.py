"""The checks after the storm: the broker's own state and timeline read against bracketflow's records."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from local.soak.base import LIVE_ORDER, SignalSend, SoakBase

UNPROTECTED_GOAL_S = 5.0
TRANSIENT = frozenset({"CREATED", "ENTRY_FILLED", "EXITING", "EXIT_FAILED"})
FINISHED = frozenset({"CLOSED", "FAILED", "CANCELLED", "EXPIRED"})


@dataclass
class SoakResult:
    seed: int
    brackets: int
    alerts: int
    violations: list[dict[str, Any]]
    worst_unprotected_s: float
    wall_time_s: float
    faults_fired: dict[str, int]
    statuses: dict[str, int]
    unprotected_worst: list[dict[str, Any]]
    notes: list[str]
    counts: dict[str, Any]

    def violation_counts(self) -> dict[str, int]:
        return dict(Counter(v["check"] for v in self.violations))

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["violation_counts"] = self.violation_counts()
        data["unprotected_goal_s"] = UNPROTECTED_GOAL_S
        return data


class SoakChecks(SoakBase):
    """Every promise checked over one snapshot of the books, once the stack has settled."""

    def _check(self, faults_fired: dict[str, int], wall: float) -> SoakResult:  # noqa: C901, PLR0912, PLR0915 - every promise checked over one snapshot of the books
        from bracketflow.adapters.dynamo.brackets import BracketRepository
        from bracketflow.domain.ids import bracket_ref

        assert self.stack is not None
        repo = BracketRepository()
        brackets = repo.order_book("local", limit=100_000)
        by_id = {b.id: b for b in brackets}
        state = self._paper("GET", "state")
        timeline = self._paper("GET", "timeline?since=0")["events"]
        violations: list[dict[str, Any]] = []

        def violation(check: str, detail: str, **where: Any) -> None:
            violations.append({"check": check, **where, "detail": detail})

        # one bracket per distinct alert
        per_alert: dict[int, set[str]] = defaultdict(set)
        for send in self.sends:
            if send.bracket_id:
                per_alert[send.index].add(send.bracket_id)
        for index, ids in sorted(per_alert.items()):
            if len(ids) > 1:
                violation("one_bracket_per_alert", f"alert {index} made {len(ids)} brackets: {sorted(ids)}")
        for index in sorted({s.index for s in self.sends}):
            firsts = [s for s in self.sends if s.index == index]
            if firsts and any(s.status == 200 and s.duplicate is False for s in firsts[1:]):
                violation("one_bracket_per_alert", f"a resend of alert {index} was not answered as a duplicate")
            shares = {s.shares for s in firsts if s.shares}
            if len(shares) > 1:
                violation("one_bracket_per_alert", f"scale-out alert {index} was answered with other shares: {shares}")
        answered = set().union(*per_alert.values(), *(s.shares for s in self.sends)) if per_alert else set()
        for extra in sorted(set(by_id) - answered):
            violation("one_bracket_per_alert", "a bracket no alert's answer named", bracket_id=extra)

        # no order placed twice (by tag), from the broker's timeline
        ref_to_bracket = {bracket_ref(b): b for b in by_id}
        first_seen: dict[str, float] = {}
        final_at: dict[str, float] = {}
        for e in timeline:
            if e["event"] != "order":
                continue
            first_seen.setdefault(e["order_id"], e["t"])
            if e["status"] not in LIVE_ORDER and e["order_id"] not in final_at:
                final_at[e["order_id"]] = e["t"]
        orders = {o["order_id"]: o for o in state["orders"]}
        by_tag: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for o in orders.values():
            if o.get("tag"):
                by_tag[o["tag"]].append(o)
        for tag, group in sorted(by_tag.items()):
            owner = ref_to_bracket.get(tag[:-1])
            if owner is None:
                violation(
                    "order_placed_twice", f"an order tagged {tag} that no bracket owns", order_id=group[0]["order_id"]
                )
                continue
            group.sort(key=lambda o: first_seen.get(o["order_id"], 0))
            for earlier_i, later in enumerate(group[1:], start=1):
                placed = first_seen.get(later["order_id"], 0)
                for earlier in group[:earlier_i]:
                    ended = final_at.get(earlier["order_id"])
                    still_working = ended is None or ended > placed
                    if earlier["status"] == "REJECTED":
                        continue
                    if still_working or earlier["status"] == "COMPLETE":
                        violation(
                            "order_placed_twice",
                            f"{tag} ({_role(tag)}) placed again as {later['order_id']} while {earlier['order_id']} "
                            f"was {'working' if still_working else 'filled'}",
                            bracket_id=owner,
                        )
                        break

        # positions: broker net (less the trader's unrelated orders) vs what bracketflow says is open
        hand_net: Counter[tuple[str, str]] = Counter()
        for order_id in self.hand_order_ids:
            o = orders.get(order_id)
            if o is not None and o["filled_quantity"]:
                sign = 1 if o["transaction_type"] == "BUY" else -1
                hand_net[(o["tradingsymbol"], o["product"])] += sign * int(o["filled_quantity"])
        broker_net: Counter[tuple[str, str]] = Counter()
        for p in state["positions"]:
            broker_net[(p["tradingsymbol"], p["product"])] += int(p["quantity"])
        ours: Counter[tuple[str, str]] = Counter()
        open_qty: dict[str, int] = {}
        for b in brackets:
            if b.status.value in FINISHED:
                continue
            qty = b.filled_quantity - (b.exit.filled_quantity if b.exit is not None else 0)
            open_qty[b.id] = qty
            sign = 1 if b.spec.action.value == "BUY" else -1
            ours[(b.spec.symbol, b.spec.product.value)] += sign * qty
        for key in sorted(set(broker_net) | set(ours)):
            at_broker = broker_net[key] - hand_net[key]
            if at_broker != ours[key]:
                holders = sorted(
                    b.id for b in brackets if (b.spec.symbol, b.spec.product.value) == key and b.id in open_qty
                )
                violation(
                    "position_mismatch",
                    f"broker net {at_broker:+d}, bracketflow open {ours[key]:+d} (open brackets: {holders or 'none'})",
                    symbol=key[0],
                    product=key[1],
                )

        # GTTs: exactly one live GTT per open position, none without an open bracket
        active = {str(g["id"]): g for g in state["gtts"] if g["status"] == "active"}
        owner_of_gtt = {b.gtt_id: b for b in brackets if b.gtt_id}
        for b in brackets:
            qty = open_qty.get(b.id, 0)
            if b.id not in open_qty or qty == 0:
                continue
            gtt = active.get(str(b.gtt_id)) if b.gtt_id else None
            if gtt is None:
                violation(
                    "gtt_mismatch",
                    f"{b.status.value} with {qty} open and no live GTT (its gtt_id {b.gtt_id})",
                    bracket_id=b.id,
                )
            elif any(int(leg["quantity"]) != qty for leg in gtt["orders"]):
                legs = [int(leg["quantity"]) for leg in gtt["orders"]]
                violation("gtt_mismatch", f"GTT {b.gtt_id} legs {legs} for an open {qty}", bracket_id=b.id)
        for gtt_id, g in sorted(active.items()):
            holder = owner_of_gtt.get(gtt_id)
            if holder is not None and holder.id in open_qty and open_qty[holder.id] != 0:
                continue
            cond = g["condition"]
            gtt_legs = [(leg["transaction_type"], int(leg["quantity"]), leg["product"]) for leg in g["orders"]]
            why = (
                f"its bracket {holder.id} is {holder.status.value}"
                if holder is not None
                else "no bracket records it (a second GTT for one bracket, or one left behind)"
            )
            violation(
                "orphan_gtt",
                f"live GTT {gtt_id} on {cond['tradingsymbol']} {gtt_legs}: {why}",
                gtt_id=gtt_id,
                **({"bracket_id": holder.id} if holder is not None else {}),
            )

        # statuses
        for b in brackets:
            status = b.status.value
            if status in TRANSIENT:
                violation("transient_status", f"left {status}", bracket_id=b.id)
            elif status == "ENTRY_PENDING":
                entry = orders.get(str(b.entry.broker_order_id)) if b.entry.broker_order_id else None
                if entry is None or entry["status"] not in LIVE_ORDER:
                    seen = entry["status"] if entry else "not at the broker"
                    violation("transient_status", f"ENTRY_PENDING, its entry order {seen}", bracket_id=b.id)
            elif status == "NEEDS_REVIEW":
                flagged = [e for e in repo.events(b.id) if e.get("type") == "FlaggedForReview"]
                if not flagged or not str(flagged[-1].get("reason") or "").strip():
                    violation("review_unexplained", "NEEDS_REVIEW with no FlaggedForReview reason", bracket_id=b.id)

        # exit signals: acted on once each
        for check, detail in signal_findings(self.signal_sends):
            violation(check, detail)

        # no 5xx to a client
        for err in self.client_errors:
            violation(
                "server_error",
                f"{err['method']} {err['path']} -> {err.get('status')}: {err.get('body') or err.get('error')}",
            )

        gaps = unprotected_intervals(timeline, self.hand_order_ids, self.hand_deleted_gtts)
        worst = [g for g in gaps if not g.get("trader_deleted_gtt")]
        after_hand = [g for g in gaps if g.get("trader_deleted_gtt")]
        worst_s = round(worst[0]["seconds"], 3) if worst else 0.0
        for interval in worst:
            if interval["seconds"] > UNPROTECTED_GOAL_S:
                violation(
                    "unprotected_too_long",
                    f"{interval['quantity']} unprotected for {interval['seconds']:.1f} s from {interval['from']}",
                    symbol=interval["symbol"],
                    product=interval["product"],
                )

        statuses = Counter(b.status.value for b in brackets)
        counts = {
            "alerts_sent": len({s.index for s in self.sends}),
            "sends": len(self.sends),
            "answers": dict(Counter(s.status for s in self.sends)),
            "actions": dict(self.actions),
            "orders_at_broker": len(orders),
            "gtts_at_broker": len(state["gtts"]),
            "timeline_events": len(timeline),
            "needs_review_reasons": _review_reasons(repo, [b for b in brackets if b.status.value == "NEEDS_REVIEW"]),
            "dead_letters": {k: v for k, v in self._queued(dead_letters=True).items() if v},
            # The trader took the stop away: how long until reconciliation put one back (not counted above).
            "unprotected_after_trader_deleted_gtt_s": [g["seconds"] for g in after_hand],
            **signal_counts(self.signal_sends, self.reversing, brackets),
            "scale_out": scale_out_counts(repo, brackets),
            "breakeven_at": breakeven_at_counts(repo, brackets),
        }
        if self.cfg.details_path is not None:
            details = {
                "timeline": timeline,
                "orders": state["orders"],
                "gtts": state["gtts"],
                "hand_order_ids": sorted(self.hand_order_ids),
                "sends": [asdict(s) for s in self.sends],
                "signal_sends": [asdict(s) for s in self.signal_sends],
                "brackets": [{**b.to_dict(), "events": repo.events(b.id)} for b in brackets],
            }
            self.cfg.details_path.write_text(json.dumps(details, default=str))
        return SoakResult(
            seed=self.cfg.seed,
            brackets=len(brackets),
            alerts=len({s.index for s in self.sends}),
            violations=violations,
            worst_unprotected_s=worst_s,
            wall_time_s=round(wall, 1),
            faults_fired=faults_fired,
            statuses=dict(statuses),
            unprotected_worst=worst[:10],
            notes=self.notes,
            counts=counts,
        )


def signal_findings(sends: list[SignalSend]) -> list[tuple[str, str]]:
    """one_action_per_signal: each exit signal answered 200 (a 5xx is server_error's), each resend as a duplicate."""
    found = []
    by_index: dict[int, list[SignalSend]] = defaultdict(list)
    for send in sends:
        by_index[send.index].append(send)
    for index, group in sorted(by_index.items()):
        first = group[0]
        if 400 <= first.status < 500 and first.status != 429:
            found.append(("one_action_per_signal", f"signal {index} refused {first.status}: {first.message}"))
        acted = first.status == 200
        for later in group[1:]:
            if acted and later.status == 200 and later.duplicate is not True:
                found.append(("one_action_per_signal", f"a resend of signal {index} acted again: {later.brackets}"))
            acted = acted or later.status == 200
    return found


def signal_counts(sends: list[SignalSend], reversing: dict[int, list[str]], brackets: list[Any]) -> dict[str, Any]:
    """What the signals did: per first answer, what was done to the brackets they named; how many reverse alerts
    found a bracket to close; and how every closed bracket ended (reason SIGNAL among the others)."""
    firsts: dict[int, SignalSend] = {}
    for send in sends:
        firsts.setdefault(send.index, send)
    done = Counter(b["action"] for s in firsts.values() for b in s.brackets)
    return {
        "signals": {
            "sent": len(firsts),
            "answers": dict(Counter(s.status for s in sends)),
            "matched_nothing": sum(1 for s in firsts.values() if s.status == 200 and not s.brackets),
            "bracket_actions": dict(done),
        },
        "reverses_that_closed_a_bracket": len(reversing),
        "exit_reasons": dict(Counter(b.exit_reason.value for b in brackets if b.exit_reason is not None)),
    }


def scale_out_counts(repo: Any, brackets: list[Any]) -> dict[str, Any]:
    """What the scale-out alerts became: their shares, how each ended, and the breakeven stops set (each one tighter
    than the stop it replaced, or the ratchet broke)."""
    shares = [b for b in brackets if b.group]
    moves = [(b, e) for b in shares for e in repo.events(b.id) if e["type"] == "BreakevenStopSet"]
    long = {b.id: b.spec.action.value == "BUY" for b in shares}
    loosened = [e for b, e in moves if (Decimal(e["new_stop"]) <= Decimal(e["old_stop"])) == long[b.id]]
    return {
        "alerts": len({b.group[0] for b in shares}),
        "shares": len(shares),
        "exit_reasons": dict(Counter(b.exit_reason.value for b in shares if b.exit_reason is not None)),
        "breakeven_stops_set": len(moves),
        "breakeven_stops_loosened": len(loosened),
    }


def breakeven_at_counts(repo: Any, brackets: list[Any]) -> dict[str, Any]:
    """What the price-breakeven alerts became: how each ended, the breakeven stops the streamer set (each one tighter
    than the stop it replaced, or the ratchet broke) and any bracket whose breakeven was set twice."""
    priced = [b for b in brackets if b.spec.breakeven_at is not None]
    moves = [(b, e) for b in priced for e in repo.events(b.id) if e["type"] == "BreakevenStopSet"]
    loosened = [
        e for b, e in moves if (Decimal(e["new_stop"]) <= Decimal(e["old_stop"])) == (b.spec.action.value == "BUY")
    ]
    return {
        "brackets": len(priced),
        "exit_reasons": dict(Counter(b.exit_reason.value for b in priced if b.exit_reason is not None)),
        "breakeven_stops_set": len(moves),
        "breakeven_stops_loosened": len(loosened),
        "set_twice": sum(1 for n in Counter(b.id for b, _ in moves).values() if n > 1),
    }


def _role(tag: str) -> str:
    return {"E": "entry", "X": "exit", "S": "stop", "T": "target"}.get(tag[-1:], "?")


def _review_reasons(repo: Any, brackets: list[Any]) -> dict[str, int]:
    reasons: Counter[str] = Counter()
    for b in brackets:
        flagged = [e for e in repo.events(b.id) if e.get("type") == "FlaggedForReview"]
        reason = str(flagged[-1].get("reason") or "") if flagged else "(none)"
        reasons[reason.split(":")[0][:80]] += 1
    return dict(reasons.most_common())


def unprotected_intervals(  # noqa: C901, PLR0915 - one sweep over the broker's timeline
    timeline: list[dict[str, Any]], ignore_orders: set[str], trader_deleted: set[int] | None = None
) -> list[dict[str, Any]]:
    """From the broker's timeline alone: per symbol and product, the stretches when some filled quantity had
    neither a live GTT leg nor a working flattening order (an exit-tagged order, a GTT's child, or any untagged
    order that reduces the position) covering it. Longest first; one still open at the end runs to the last event.

    Orders in `ignore_orders` (the trader's own unrelated trades) are left out of the position and the cover; a
    stretch that began when the trader deleted a GTT (`trader_deleted`) is marked `trader_deleted_gtt`."""
    trader_deleted = trader_deleted or set()
    net: Counter[tuple[str, str]] = Counter()
    gtts: dict[int, tuple[tuple[str, str], list[tuple[str, int]]]] = {}
    working: dict[str, tuple[tuple[str, str], str, int, bool]] = {}  # order -> (key, side, pending, flattening)
    filled: dict[str, int] = {}
    children: set[str] = set()
    open_since: dict[tuple[str, str], tuple[float, int]] = {}
    hand_made: set[tuple[str, str]] = set()  # open stretches that the trader's GTT deletion began
    intervals: list[dict[str, Any]] = []
    last_t = timeline[-1]["t"] if timeline else 0.0

    def uncovered(key: tuple[str, str]) -> int:
        n = net[key]
        if n == 0:
            return 0
        closing = "SELL" if n > 0 else "BUY"
        cover = 0
        for gkey, legs in gtts.values():
            if gkey == key:
                cover += max((q for side, q in legs if side == closing), default=0)
        for wkey, side, pending, flattening in working.values():
            if wkey == key and side == closing and flattening:
                cover += pending
        return max(abs(n) - cover, 0)

    def settle(key: tuple[str, str], t: float, by_trader: bool = False) -> None:
        gap = uncovered(key)
        if gap > 0 and key not in open_since:
            open_since[key] = (t, gap)
            if by_trader:
                hand_made.add(key)
        elif gap > 0:
            since, most = open_since[key]
            open_since[key] = (since, max(most, gap))
        elif gap == 0 and key in open_since:
            since, most = open_since.pop(key)
            if t > since:  # a fill and its cover in one instant left nothing naked
                intervals.append(_interval(key, since, t, most, key in hand_made))
            hand_made.discard(key)

    for e in timeline:
        t = e["t"]
        if e["event"] == "gtt":
            legs = e["legs"]
            product = legs[0]["product"] if legs else ""
            key = (e["tradingsymbol"], product)
            if e["status"] == "active":
                gtts[e["id"]] = (key, [(leg["transaction_type"], int(leg["quantity"])) for leg in legs])
            else:
                gtts.pop(e["id"], None)
            if e.get("order_id"):
                children.add(str(e["order_id"]))
            settle(key, t, by_trader=e["change"] == "deleted" and int(e["id"]) in trader_deleted)
            continue
        order_id = e["order_id"]
        if order_id in ignore_orders:
            continue
        key = (e["tradingsymbol"], e["product"])
        delta = int(e["filled_quantity"]) - filled.get(order_id, 0)
        if delta:
            filled[order_id] = int(e["filled_quantity"])
            net[key] += delta if e["transaction_type"] == "BUY" else -delta
        tag = e.get("tag") or ""
        if e["status"] in LIVE_ORDER and int(e["pending_quantity"]) > 0:
            flattening = tag.endswith("X") or order_id in children or not tag
            working[order_id] = (key, e["transaction_type"], int(e["pending_quantity"]), flattening)
        else:
            working.pop(order_id, None)
        settle(key, t)
    for key, (since, most) in open_since.items():
        intervals.append({**_interval(key, since, last_t, most, key in hand_made), "still_open": True})
    intervals.sort(key=lambda i: -i["seconds"])
    return intervals


def _interval(key: tuple[str, str], since: float, until: float, quantity: int, by_trader: bool) -> dict[str, Any]:
    return {
        **({"trader_deleted_gtt": True} if by_trader else {}),
        "symbol": key[0],
        "product": key[1],
        "quantity": quantity,
        "seconds": round(until - since, 3),
        "from": datetime.fromtimestamp(since, UTC).isoformat(timespec="milliseconds"),
    }
