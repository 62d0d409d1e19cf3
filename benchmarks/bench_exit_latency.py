"""Benchmark: on the local stack, the time from the quote that crosses a stop to the exit order at the paper exchange.

The whole local stack comes up on free ports (moto, the in-process Lambdas and their SQS pollers, the paper exchange
and the streamer as child processes). N protected INFY brackets are seeded one after another, each with a GTT lower
than its streamer stop (so the GTT never fires first) and watched through the control queue, as the bracket
workflow does. For each: the market sits above the stop, then one POST /_paper/quotes crosses it; the clock runs
from just before that call until the exit order (tagged for the bracket) shows in the paper exchange's state,
polled every few milliseconds. The path measured: paper ticker -> streamer (parse, trail, exit intent) -> SQS ->
the local SQS poller -> functions/exit (claim, cancel GTT, look up the tag, place) -> paper exchange.
Target: p50 < 250 ms.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import requests

BRACKETS = 20
POLL_S = 0.005
BOUND_S = 30.0


def _quote(paper_url: str, ltp: str) -> None:
    bid, ask = ltp, str(Decimal(ltp) + Decimal("0.05"))
    body = {"quotes": [{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": ltp, "bid": bid, "ask": ask}]}
    requests.post(f"{paper_url}/_paper/quotes", json=body, timeout=10).raise_for_status()


def _orders(paper_url: str) -> list[dict[str, Any]]:
    return requests.get(f"{paper_url}/_paper/state", timeout=10).json()["data"]["orders"]


def _seed(stack: Any, index: int) -> str:
    """A PROTECTED bracket (entry filled, GTT at 1470) whose streamer stop is 1490, watched via the control queue."""
    from bracketflow.adapters.broker import get_broker
    from bracketflow.adapters.broker.port import GttLeg, GttRequest, OrderRequest
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.domain.bracket import Bracket, BracketSpec, LegOrder
    from bracketflow.domain.enums import Action, BracketStatus, Exchange, LegRole, OrderStatus, Product
    from bracketflow.domain.ids import AccountId, order_tag
    from bracketflow.services.protect import watch_request

    spec = BracketSpec(
        account_id=AccountId("local"),
        symbol="INFY",
        exchange=Exchange.NSE,
        product=Product.CNC,
        action=Action.BUY,
        quantity=1,
        entry_price=Decimal("1500"),
        sl_price=Decimal("1470"),
        target_price=Decimal("1600"),
        strategy="bench-exit-latency",
    )
    created = Bracket.register(spec, now=datetime.now(UTC))
    broker = get_broker()
    entry = broker.place_order(
        OrderRequest("NSE", "INFY", "BUY", 1, "CNC", "MARKET", tag=order_tag(created.id, "ENTRY"))
    )
    legs = (GttLeg("SELL", 1, Decimal("1465"), "CNC"), GttLeg("SELL", 1, Decimal("1600"), "CNC"))
    gtt_id = broker.create_gtt(GttRequest("NSE", "INFY", (Decimal("1470"), Decimal("1600")), Decimal("1500"), legs))
    protected = dataclasses.replace(
        created,
        status=BracketStatus.PROTECTED,
        version=4,
        stop_price=Decimal("1490"),
        entry=LegOrder(LegRole.ENTRY, OrderStatus.EXECUTED, entry, 1, 1, Decimal("1500")),
        gtt_id=str(gtt_id),
    )
    BracketRepository().create(protected, [{"type": "ProtectionPlaced", "gtt_id": str(gtt_id), "bench": index}])
    watch = watch_request(protected, 408065, Decimal("0.05"))
    stack.client("sqs").send_message(QueueUrl=stack.queue_url("StreamerControlQueue"), MessageBody=watch.to_json())
    return protected.id


def _wait_for(check: Any) -> Any:
    end = time.perf_counter() + BOUND_S
    while time.perf_counter() < end:
        found = check()
        if found:
            return found
        time.sleep(POLL_S)
    raise TimeoutError("no exit order within the bound")


def run() -> dict[str, Any]:
    from bracketflow.domain.ids import order_tag
    from local.stack import LocalStack, StackConfig

    stack = LocalStack(StackConfig(api_port=0, moto_port=0, paper_port=0, schedules=False))
    stack.start()
    latencies_ms: list[float] = []
    try:
        paper_url = stack.paper_url
        assert paper_url is not None
        requests.post(f"{paper_url}/_paper/config", json={"market": "manual"}, timeout=10).raise_for_status()
        for i in range(BRACKETS):
            _quote(paper_url, "1500")
            bracket_id = _seed(stack, i)
            time.sleep(3.0)  # the control queue's long poll hands the watch over (not part of the measure)
            tag = order_tag(bracket_id, "EXIT")
            started = time.perf_counter()
            _quote(paper_url, "1485")
            _wait_for(lambda tag=tag: [o for o in _orders(paper_url) if o.get("tag") == tag])
            latencies_ms.append((time.perf_counter() - started) * 1000)
    finally:
        stack.stop()
    ordered = sorted(latencies_ms)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "headline": f"quote crossing a stop -> exit order at the paper exchange: p50 {p50:.0f} ms, p99 {p99:.0f} ms "
        f"({len(ordered)} brackets, local stack)",
        "brackets": len(ordered),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "min_ms": round(ordered[0], 1),
        "max_ms": round(ordered[-1], 1),
        "mean_ms": round(statistics.fmean(ordered), 1),
        "target_p50_ms": 250,
        "samples_ms": [round(x, 1) for x in latencies_ms],
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
