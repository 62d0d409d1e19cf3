"""The paper exchange's timeline (GET /_paper/timeline): every order and GTT change with a sub-second wall-clock time,
in the order it happened, which the soak reads to measure, from the broker's side, how long a filled position went
without protection. And the walk's step size, which the soak turns up to compress time."""

from __future__ import annotations

import json
from decimal import Decimal

import requests
from kiteconnect import KiteConnect

from bracketflow.domain.instruments import default_master
from paper.config import PaperConfig
from paper.exchange import RandomWalk


def timeline(paper_exchange, since: int = 0) -> dict:
    answer = requests.get(f"{paper_exchange.base_url}/_paper/timeline", params={"since": since}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def test_fills_and_gtt_changes_are_recorded_in_order_with_sub_second_times(paper_exchange) -> None:
    kite = KiteConnect(api_key="paper", root=paper_exchange.base_url)
    kite.set_access_token("paper-token")
    paper_exchange.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500}])
    start = timeline(paper_exchange)["next"]

    # Given a tagged entry that fills at once, a GTT protecting it, a second GTT deleted by hand
    order_id = kite.place_order(
        variety="regular",
        exchange="NSE",
        tradingsymbol="INFY",
        transaction_type="BUY",
        quantity=2,
        product="MIS",
        order_type="LIMIT",
        price=1500,
        tag="BFTESTE",
    )
    legs = [{"transaction_type": "SELL", "quantity": 2, "price": 1470, "order_type": "LIMIT", "product": "MIS"}]
    condition = {"exchange": "NSE", "tradingsymbol": "INFY", "trigger_values": [1480], "last_price": 1500}
    gtt_id = kite.place_gtt("single", "INFY", "NSE", [1480], 1500, legs)["trigger_id"]
    spare = kite.place_gtt("single", "INFY", "NSE", [1480], 1500, legs)["trigger_id"]
    kite.delete_gtt(spare)
    # When the market falls through the stop
    paper_exchange.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1475, "bid": 1470, "ask": 1475}])

    # Then the timeline tells it all, in order
    events = timeline(paper_exchange, start)["events"]
    summary = [(e["event"], e.get("status"), e.get("change"), e.get("order_id") or e.get("id")) for e in events]
    entry = [e for e in events if e["event"] == "order" and e["order_id"] == order_id]
    assert entry[-1]["status"] == "COMPLETE" and entry[-1]["filled_quantity"] == 2 and entry[-1]["tag"] == "BFTESTE"
    changes = [(e["change"], e["id"]) for e in events if e["event"] == "gtt"]
    assert changes == [("created", gtt_id), ("created", spare), ("deleted", spare), ("triggered", gtt_id)], summary
    triggered = next(e for e in events if e.get("change") == "triggered")
    child = [e for e in events if e["event"] == "order" and e["order_id"] == triggered["order_id"]]
    assert child and child[-1]["status"] == "COMPLETE" and child[-1]["transaction_type"] == "SELL", summary
    assert events.index(triggered) < events.index(child[0]), "the trigger comes before the child it placed"
    assert triggered["legs"] == [{"transaction_type": "SELL", "quantity": 2, "product": "MIS"}]
    assert condition["tradingsymbol"] == triggered["tradingsymbol"]
    times = [e["t"] for e in events]
    assert times == sorted(times)
    assert any(t != int(t) for t in times), "times carry fractions of a second (Kite's own timestamps do not)"


def test_the_timeline_pages_with_since_and_refuses_a_bad_one(paper_exchange) -> None:
    paper_exchange.set_quotes([{"exchange": "NSE", "tradingsymbol": "SBIN", "ltp": 800, "bid": 799.95, "ask": 800}])
    kite = KiteConnect(api_key="paper", root=paper_exchange.base_url)
    kite.set_access_token("paper-token")
    first = timeline(paper_exchange)
    kite.place_order(
        variety="regular",
        exchange="NSE",
        tradingsymbol="SBIN",
        transaction_type="BUY",
        quantity=1,
        product="CNC",
        order_type="LIMIT",
        price=790,
    )
    later = timeline(paper_exchange, first["next"])
    assert [e["status"] for e in later["events"]] == ["OPEN"]
    assert later["next"] == first["next"] + 1
    bad = requests.get(f"{paper_exchange.base_url}/_paper/timeline", params={"since": "x"}, timeout=10)
    assert bad.status_code == 400, bad.text
    assert json.loads(bad.text)["status"] == "error"


def test_the_walk_step_is_configurable_and_a_bigger_step_moves_further() -> None:
    master = default_master()
    calm, fast = RandomWalk(master, 7), RandomWalk(master, 7, step_bps=20)
    token = next(i.instrument_token for i in master if i.tradingsymbol == "INFY")
    start = calm.prices[token]
    calm_moves, fast_moves = [], []
    for _ in range(200):
        calm.step()
        fast.step()
        calm_moves.append(abs(calm.prices[token] - start))
        fast_moves.append(abs(fast.prices[token] - start))
    assert max(fast_moves) > max(calm_moves)
    assert max(calm_moves) > Decimal(0)
    env = PaperConfig.from_env({"PAPER_WALK_STEP_BPS": "8", "PAPER_WALK_INTERVAL_S": "0.1"})
    assert (env.walk_step_bps, env.walk_interval_s) == (8.0, 0.1)
