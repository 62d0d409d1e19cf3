"""The soak's unprotected-time measure, from a broker timeline alone: how long filled quantity had neither a live GTT
leg nor a working flattening order covering it."""

from __future__ import annotations

from typing import Any

from local.soak import unprotected_intervals


def order(t: float, order_id: str, side: str, qty: int, filled: int, status: str, tag: str | None = None) -> dict:
    pending = qty - filled if status in ("OPEN", "TRIGGER PENDING") else 0
    return {
        "t": t,
        "event": "order",
        "order_id": order_id,
        "status": status,
        "tag": tag,
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "product": "MIS",
        "transaction_type": side,
        "order_type": "LIMIT",
        "quantity": qty,
        "filled_quantity": filled,
        "pending_quantity": pending,
    }


def gtt(t: float, gtt_id: int, status: str, change: str, qty: int = 2, child: str | None = None) -> dict[str, Any]:
    legs = [{"transaction_type": "SELL", "quantity": qty, "product": "MIS"}] * 2
    return {
        "t": t,
        "event": "gtt",
        "change": change,
        "id": gtt_id,
        "status": status,
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "legs": legs,
        "order_id": child,
    }


def test_the_gap_between_a_fill_and_its_gtt_is_measured() -> None:
    timeline = [
        order(100.0, "1", "BUY", 2, 0, "OPEN", "BFXE"),
        order(100.5, "1", "BUY", 2, 2, "COMPLETE", "BFXE"),
        gtt(102.0, 7, "active", "created"),
        gtt(110.0, 7, "triggered", "triggered", child="2"),  # its child is working: still covered
        order(110.0, "2", "SELL", 2, 0, "OPEN"),
        order(110.3, "2", "SELL", 2, 2, "COMPLETE"),
    ]
    gaps = unprotected_intervals(timeline, set())
    assert [(g["seconds"], g["quantity"]) for g in gaps] == [(1.5, 2)]


def test_a_rejected_gtt_child_leaves_the_position_naked_until_it_is_exited() -> None:
    timeline = [
        order(100.0, "1", "BUY", 2, 2, "COMPLETE", "BFXE"),
        gtt(100.0, 7, "active", "created"),
        gtt(110.0, 7, "triggered", "triggered", child="2"),
        order(110.0, "2", "SELL", 2, 0, "REJECTED"),
        order(113.0, "3", "SELL", 2, 0, "OPEN", "BFXX"),
        order(113.2, "3", "SELL", 2, 2, "COMPLETE", "BFXX"),
    ]
    assert [g["seconds"] for g in unprotected_intervals(timeline, set())] == [3.0]


def test_the_traders_own_orders_are_left_out_and_a_gap_still_open_runs_to_the_end() -> None:
    timeline = [
        order(100.0, "9", "SELL", 2, 2, "COMPLETE"),  # the trader's own round trip
        order(100.1, "10", "BUY", 2, 2, "COMPLETE"),
        order(200.0, "1", "BUY", 3, 3, "COMPLETE", "BFXE"),
        gtt(201.0, 7, "active", "created", qty=2),  # a GTT for less than the position
        gtt(205.0, 8, "active", "created", qty=1),
    ]
    gaps = unprotected_intervals(timeline, {"9", "10"})
    assert [(g["seconds"], g["quantity"]) for g in gaps] == [(5.0, 3)]
    timeline.append(gtt(300.0, 8, "deleted", "deleted", qty=1))
    still = unprotected_intervals(timeline, {"9", "10"})
    assert still[0]["seconds"] == 5.0 or still[0].get("still_open")
    assert any(g.get("still_open") and g["quantity"] == 1 for g in still)


def test_a_gap_the_trader_began_by_deleting_the_gtt_is_marked_as_theirs() -> None:
    timeline = [
        order(100.0, "1", "BUY", 2, 2, "COMPLETE", "BFXE"),
        gtt(100.5, 7, "active", "created"),
        gtt(120.0, 7, "deleted", "deleted"),  # by hand
        gtt(130.0, 8, "active", "created"),  # reconciliation put a stop back
    ]
    gaps = unprotected_intervals(timeline, set(), {7})
    assert [(g["seconds"], g.get("trader_deleted_gtt", False)) for g in gaps] == [(10.0, True), (0.5, False)]
    assert [g.get("trader_deleted_gtt", False) for g in unprotected_intervals(timeline, set())] == [False, False]
