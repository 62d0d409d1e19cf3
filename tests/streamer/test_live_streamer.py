"""The live streamer against the paper exchange's real ticker, with moto for DynamoDB and SQS: a PROTECTED bracket is
picked up by resync, trailed on live quotes, its stop persisted (and sent to the broker-stop sync queue), and one exit
intent lands on the exit queue; a restart resumes from the persisted stop; control messages watch and unwatch;
order updates are forwarded to the watcher's queue; stop() flushes and returns."""

# ruff: noqa: F811  (the `world` fixture imported from tests.support.exits is redefined as test parameters)
from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from tests.support.exits import INFY_TOKEN, seed_protected, world  # noqa: F401

DEADLINE_S = 20


def eventually(check: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S) -> Any:
    """Poll until check() is truthy (the feed and the threads are asynchronous); fail with `what` otherwise."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for: {what}")


def quote(paper, ltp: str, bid: str | None = None) -> None:
    bid = bid or ltp
    ask = str(Decimal(bid) + Decimal("0.05"))
    paper.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": ltp, "bid": bid, "ask": ask}])


@pytest.fixture
def fast(monkeypatch, world):
    """Short intervals so a test sees persistence, resync and stop sync within a second."""
    from bracketflow.adapters.aws import reset_clients

    for key, value in {
        "STREAMER_PERSIST_INTERVAL_S": "0.1",
        "STREAMER_RESYNC_INTERVAL_S": "0.3",
        "STREAMER_STOP_SYNC_INTERVAL_S": "0",
        "STREAMER_STOP_SYNC_STEP_PERCENT": "0.1",
        "STREAMER_WATCHDOG_S": "5",
        "STREAMER_BACKOFF_BASE_S": "0.05",
        "STREAMER_METRICS_INTERVAL_S": "3600",
        "STREAMER_CONTROL_WAIT_S": "1",
    }.items():
        monkeypatch.setenv(key, value)
    reset_clients()
    return world


@pytest.fixture
def start_streamer():
    started = []

    def start():
        from bracketflow.settings import get_settings
        from streamer.main import Streamer

        streamer = Streamer(get_settings()).start()
        started.append(streamer)
        eventually(lambda: streamer.supervisor.connected, "the streamer to connect to the paper ticker")
        return streamer

    yield start
    for streamer in started:
        streamer.stop()


def stored_stop(bracket_id: str) -> Decimal:
    from bracketflow.adapters.dynamo.brackets import BracketRepository

    return BracketRepository().get(bracket_id).stop_price


def drain(world, name: str) -> list[dict]:
    out = []
    while True:
        got = world.messages(name)
        if not got:
            return out
        out += got


def test_a_protected_bracket_is_trailed_persisted_synced_and_exited_once(fast, start_streamer):
    # Given a PROTECTED long MIS bracket (stop 1480, 1% trail) in DynamoDB and the streamer running
    bracket = seed_protected(fast.paper)
    streamer = start_streamer()
    eventually(lambda: bracket.id in streamer.watched_ids(), "resync to watch the bracket")
    # When the market rises (the MIS trail follows the best bid)
    quote(fast.paper, "1520", bid="1519.95")
    quote(fast.paper, "1530", bid="1530")
    # Then the stop trailed to 1% under the best bid, rounded down to the tick, and was persisted
    eventually(lambda: stored_stop(bracket.id) == Decimal("1514.70"), "the trailed stop 1514.70 in DynamoDB")
    # And the broker-side stop sync was asked for it
    syncs = eventually(lambda: drain(fast, "stop-sync"), "a stop-sync intent")
    assert syncs[-1]["bracket_id"] == bracket.id
    assert Decimal(syncs[-1]["stop_price"]) in (Decimal("1504.65"), Decimal("1514.70"))
    # When the price falls through the trailed stop (twice)
    quote(fast.paper, "1514")
    quote(fast.paper, "1500")
    # Then exactly one exit intent was sent, for TRAIL_STOP at the trailed stop
    exits = eventually(lambda: drain(fast, "exits"), "an exit intent")
    time.sleep(0.3)
    exits += drain(fast, "exits")
    assert len(exits) == 1
    assert exits[0]["bracket_id"] == bracket.id
    assert (exits[0]["reason"], exits[0]["stop_price"], exits[0]["ltp"]) == ("TRAIL_STOP", "1514.70", "1514.00")
    assert bracket.id not in streamer.watched_ids()


def test_an_untouched_stop_exits_as_stop(fast, start_streamer):
    # Given a bracket without a trail, watched at its original stop
    bracket = seed_protected(fast.paper, trail={})
    streamer = start_streamer()
    eventually(lambda: bracket.id in streamer.watched_ids(), "resync to watch the bracket")
    # When the market falls straight through it
    quote(fast.paper, "1479.50")
    # Then the exit says STOP at the original stop
    exits = eventually(lambda: drain(fast, "exits"), "an exit intent")
    assert (exits[0]["reason"], exits[0]["stop_price"]) == ("STOP", "1480.00")


def test_a_restarted_streamer_resumes_from_the_persisted_stop(fast, start_streamer):
    # Given a bracket trailed to 1514.70 and persisted, then the streamer stopped (as on SIGTERM)
    bracket = seed_protected(fast.paper)
    first = start_streamer()
    eventually(lambda: bracket.id in first.watched_ids(), "resync to watch the bracket")
    quote(fast.paper, "1530", bid="1530")
    eventually(lambda: stored_stop(bracket.id) == Decimal("1514.70"), "the trailed stop in DynamoDB")
    first.stop()
    # When a new streamer starts and the price dips below the trailed stop (but far above the original)
    second = start_streamer()
    eventually(lambda: second.stop_of(bracket.id) is not None, "the new streamer to watch the bracket")
    assert second.stop_of(bracket.id) == 151470
    quote(fast.paper, "1510")
    # Then the new streamer exits it at the persisted trailed stop
    exits = eventually(lambda: drain(fast, "exits"), "an exit intent")
    assert (exits[0]["bracket_id"], exits[0]["reason"], exits[0]["stop_price"]) == (bracket.id, "TRAIL_STOP", "1514.70")


def test_control_messages_watch_and_unwatch_and_bad_ones_are_dropped(fast, start_streamer, monkeypatch):
    # Given a streamer that resyncs rarely (so only control messages change what it watches)
    from bracketflow.adapters.aws import reset_clients

    monkeypatch.setenv("STREAMER_RESYNC_INTERVAL_S", "3600")
    reset_clients()
    streamer = start_streamer()
    watch = {
        "type": "watch",
        "bracket_id": "br_control_1",
        "account_id": "acc_asha",
        "instrument_token": INFY_TOKEN,
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "side": "SHORT",
        "product": "CNC",
        "quantity": 5,
        "entry_price": "1500",
        "stop_price": "1520",
        "target_price": "1450",
        "tick_size": "0.05",
        "trail": {"type": "points", "value": "10"},
        "activation_price": None,
        "gtt_id": None,
    }
    send = fast.sqs.send_message
    # When a bad message and a watch arrive
    send(QueueUrl=fast.queues["control"], MessageBody="{not json")
    send(QueueUrl=fast.queues["control"], MessageBody=json.dumps(watch))
    # Then the bracket is watched and trails down with the LTP (CNC: LTP is the reference)
    eventually(lambda: "br_control_1" in streamer.watched_ids(), "the watch to apply")
    quote(fast.paper, "1495")
    eventually(lambda: streamer.stop_of("br_control_1") == 150500, "the short stop to trail to 1505")
    assert streamer.control.rejected == 1
    # When an unwatch arrives
    send(QueueUrl=fast.queues["control"], MessageBody=json.dumps({"type": "unwatch", "bracket_id": "br_control_1"}))
    # Then it is no longer trailed, and a rise through its old stop sends no exit
    eventually(lambda: "br_control_1" not in streamer.watched_ids(), "the unwatch to apply")
    quote(fast.paper, "1530")
    time.sleep(0.3)
    assert drain(fast, "exits") == []


def test_a_second_watch_of_a_watched_bracket_updates_its_quantity_and_keeps_its_trail(
    fast, start_streamer, monkeypatch
):
    # Given a streamer trailing a SHORT of 4 whose stop has already trailed down to 1505
    from bracketflow.adapters.aws import reset_clients

    monkeypatch.setenv("STREAMER_RESYNC_INTERVAL_S", "3600")
    reset_clients()
    streamer = start_streamer()
    watch = {
        "type": "watch",
        "bracket_id": "br_grown_1",
        "account_id": "acc_asha",
        "instrument_token": INFY_TOKEN,
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "side": "SHORT",
        "product": "CNC",
        "quantity": 4,
        "entry_price": "1500",
        "stop_price": "1520",
        "target_price": "1450",
        "tick_size": "0.05",
        "trail": {"type": "points", "value": "10"},
        "activation_price": None,
        "gtt_id": "7",
    }
    send = fast.sqs.send_message
    send(QueueUrl=fast.queues["control"], MessageBody=json.dumps(watch))
    eventually(lambda: streamer.quantity_of("br_grown_1") == 4, "the watch to apply")
    quote(fast.paper, "1495")
    eventually(lambda: streamer.stop_of("br_grown_1") == 150500, "the short stop to trail to 1505")
    # When the entry fills further and the workflow sends a fresh watch for 10 (with the stop as first placed)
    send(QueueUrl=fast.queues["control"], MessageBody=json.dumps({**watch, "quantity": 10}))
    # Then the streamer holds 10, and its trailed stop is kept, not reset to 1520
    eventually(lambda: streamer.quantity_of("br_grown_1") == 10, "the quantity to update")
    assert streamer.stop_of("br_grown_1") == 150500
    assert streamer.watched_ids() == {"br_grown_1"}


def test_a_breakeven_stop_stored_by_the_workflow_is_taken_at_resync_and_exits_there(fast, start_streamer):
    # Given a streamer watching a LONG at stop 1480 (a 30-point trail) with the market at 1500
    from bracketflow.adapters.dynamo.brackets import BracketRepository
    from bracketflow.domain.events import BreakevenStopSet

    bracket = seed_protected(fast.paper, trail={"type": "points", "value": "30"})
    streamer = start_streamer()
    eventually(lambda: streamer.stop_of(bracket.id) == 148000, "resync to watch the bracket")
    # When the workflow stores a breakeven stop of 1501 for it (a scale-out's first target filled)
    repo = BracketRepository()
    current = repo.get(bracket.id)
    moved = BreakevenStopSet(bracket.id, {"old_stop": "1480", "new_stop": "1501"}, bracket_version=current.version + 1)
    repo.append_event(current, moved, stop_price=Decimal("1501"))
    # Then the streamer's next resync takes it
    eventually(lambda: streamer.stop_of(bracket.id) == 150100, "the streamer to take the breakeven stop")
    # And when the price comes back to 1500.95, the exit is at that stop, as a moved stop
    quote(fast.paper, "1500.95")
    exits = eventually(lambda: drain(fast, "exits"), "an exit intent")
    assert (exits[0]["bracket_id"], exits[0]["reason"], exits[0]["stop_price"]) == (bracket.id, "TRAIL_STOP", "1501.00")


def test_a_price_breakeven_is_stored_synced_and_counted_in_the_streamers_metrics(fast, start_streamer):
    # Given a streamer watching a LONG bought at 1500, stop 1480, a 30-point trail and breakeven at 1520
    from bracketflow import metrics_names

    bracket = seed_protected(fast.paper, trail={"type": "points", "value": "30"}, breakeven_at=Decimal("1520"))
    streamer = start_streamer()
    eventually(lambda: streamer.stop_of(bracket.id) == 148000, "resync to watch the bracket")
    assert streamer.flush_metrics()[metrics_names.BREAKEVEN_STOPS_SET] == 0
    # When the price reaches 1520
    quote(fast.paper, "1520")
    # Then the stop is at the entry (no cost buffer), stored, and sent to the broker's GTT
    eventually(lambda: streamer.stop_of(bracket.id) == 150000, "the breakeven stop")
    syncs = eventually(lambda: drain(fast, "stop-sync"), "the breakeven's stop sync")
    assert (syncs[-1]["bracket_id"], Decimal(syncs[-1]["stop_price"])) == (bracket.id, Decimal("1500"))
    # And the next metrics flush counts one breakeven, the one after none
    assert streamer.flush_metrics()[metrics_names.BREAKEVEN_STOPS_SET] == 1
    assert streamer.flush_metrics()[metrics_names.BREAKEVEN_STOPS_SET] == 0


def test_order_updates_from_the_ticker_reach_the_watchers_queue(fast, start_streamer):
    # Given the streamer connected
    from bracketflow.adapters.broker import get_broker
    from bracketflow.adapters.broker.port import OrderRequest

    start_streamer()
    quote(fast.paper, "1500")
    # When an order is placed and fills at the paper exchange
    order_id = get_broker().place_order(OrderRequest("NSE", "INFY", "BUY", 1, "MIS", "MARKET", tag="BFTESTORDER"))
    # Then its updates arrive on the order-events queue, verbatim under "order", marked as from the ticker
    events = eventually(
        lambda: [e for e in drain(fast, "order-events") if e["order"].get("order_id") == order_id],
        "an order update on the order-events queue",
    )
    assert events[0]["source"] == "ticker"
    assert events[0]["order"]["tradingsymbol"] == "INFY"
    assert "received_at" in events[0]


def test_stop_flushes_what_is_queued_and_ends_every_thread(fast, start_streamer):
    # Given a streamer with an exit waiting in its publisher
    streamer = start_streamer()
    streamer.exit_publisher.put({"bracket_id": "br_flush", "reason": "STOP"})
    # When it is stopped
    streamer.stop()
    # Then the message was sent and the tick thread is gone
    assert [m["bracket_id"] for m in drain(fast, "exits")] == ["br_flush"]
    assert not any(t.is_alive() for t in streamer._threads)


def test_the_last_prices_of_watched_instruments_are_recorded_for_the_console(fast, start_streamer, monkeypatch):
    from datetime import UTC, datetime, timedelta

    from bracketflow.adapters.dynamo.prices import prices_between

    # Given a watched bracket, and prices recorded every 0.1 s
    monkeypatch.setenv("STREAMER_PRICE_INTERVAL_S", "0.1")
    bracket = seed_protected(fast.paper)
    streamer = start_streamer()
    eventually(lambda: bracket.id in streamer.watched_ids(), "resync to watch the bracket")
    since = datetime.now(UTC) - timedelta(seconds=1)
    # When the market moves
    quote(fast.paper, "1507.5")
    # Then its last price is recorded under the instrument, in rupees, once per change
    recorded = eventually(
        lambda: [p for _, p in prices_between("NSE:INFY", since, datetime.now(UTC)) if p == Decimal("1507.5")],
        "the price 1507.50 in the console's price history",
    )
    assert recorded == [Decimal("1507.5")]
