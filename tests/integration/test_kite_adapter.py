"""The Kite adapter against the paper exchange (a Kite v3 look-alike), with the broker's failures injected.

What must hold: a 429 is retried with backoff; a placement whose answer is lost is found by its tag and never
becomes two orders; a 5xx on a call that is not safe to repeat is only repeated after the order book shows the
request is absent; an expired session says "log in again". The official kiteconnect client reads the paper
exchange's books as an independent witness.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal

import boto3
import pytest
import requests
from kiteconnect import KiteConnect
from moto import mock_aws

from bracketflow.adapters.broker.kite import KiteBroker
from bracketflow.adapters.broker.kite_http import static_credentials
from bracketflow.adapters.broker.port import GttLeg, GttRequest, OrderChange, OrderRequest
from bracketflow.errors import (
    BrokerOrderNotFound,
    BrokerRateLimited,
    BrokerRejected,
    BrokerTimeout,
    RateLimited,
    SessionExpired,
)

TAG = "BF0123456789ABCDEFE"


class RecordingSession(requests.Session):
    """A real requests.Session that notes each call (method, path) so tests can see the order of calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def request(self, method, url, *args, **kwargs):  # type: ignore[override]
        self.calls.append((method, "/" + url.split("/", 3)[3].split("?")[0]))
        return super().request(method, url, *args, **kwargs)


@pytest.fixture
def paper(paper_exchange):
    paper_exchange.set_quotes(
        [
            {"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1500, "bid": 1499.95, "ask": 1500.05},
            {"exchange": "NSE", "tradingsymbol": "TCS", "ltp": 4000, "bid": 3999.9, "ask": 4000.1},
        ]
    )
    return paper_exchange


@pytest.fixture
def witness(paper) -> KiteConnect:
    return KiteConnect(api_key=paper.api_key, access_token=paper.access_token, root=paper.base_url)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_broker(paper, **kw) -> tuple[KiteBroker, RecordingSession, Sleeps]:
    http = RecordingSession()
    sleeps = Sleeps()
    options = {"read_timeout_s": 0.5, "lookup_pause_s": 0.05, "jitter": lambda: 1.0, "sleep": sleeps}
    options.update(kw)
    broker = KiteBroker(paper.base_url, static_credentials(paper.api_key, paper.access_token), session=http, **options)
    return broker, http, sleeps


def resting_buy(tag: str | None = TAG, symbol: str = "INFY") -> OrderRequest:
    # Below the market, so it rests OPEN and stays in the book
    return OrderRequest("NSE", symbol, "BUY", 1, "MIS", "LIMIT", price=Decimal("1490"), tag=tag)


def our_orders(witness: KiteConnect, tag: str = TAG) -> list[dict]:
    return [o for o in witness.orders() if o.get("tag") == tag]


def protection(last_price: str = "1500") -> GttRequest:
    return GttRequest(
        "NSE",
        "INFY",
        (Decimal("1480"), Decimal("1550")),
        Decimal(last_price),
        (GttLeg("SELL", 1, Decimal("1479"), "MIS"), GttLeg("SELL", 1, Decimal("1550"), "MIS")),
    )


# ---- placement -------------------------------------------------------------------------------------------------


def test_a_429_on_placement_is_retried_with_growing_backoff(paper, witness):
    # Given the broker answers 429 twice to order placement
    paper.set_faults([{"kind": "http_429", "match": {"path": "/orders/regular", "method": "POST"}, "count": 2}])
    broker, http, sleeps = make_broker(paper, backoff_base_s=0.2)
    # When we place an order
    order_id = broker.place_order(resting_buy())
    # Then it went through on the third try, after two growing pauses, and exactly one order exists
    assert [c for c in http.calls if c[0] == "POST"] == [("POST", "/orders/regular")] * 3
    assert sleeps == [pytest.approx(0.2), pytest.approx(0.4)]
    assert [o["order_id"] for o in our_orders(witness)] == [order_id]


def test_429s_that_never_stop_surface_as_rate_limited(paper, witness):
    paper.set_faults([{"kind": "http_429", "match": {"path": "/orders/regular"}, "count": 10}])
    broker, _, sleeps = make_broker(paper, max_attempts=3)
    with pytest.raises(BrokerRateLimited):
        broker.place_order(resting_buy())
    assert len(sleeps) == 2
    assert our_orders(witness) == []


def test_a_placement_refused_by_the_brokers_own_rate_limit_is_retried_and_placed_once(paper, witness, monkeypatch):
    # Given the broker's second already holds Kite's 10 orders (its clock held still, moved only by our pauses)
    held = [1_775_000_000.0]
    monkeypatch.setattr(paper.exchange.order_limits, "clock", lambda: held[0])
    for n in range(10):
        witness.place_order(variety="regular", exchange="NSE", tradingsymbol="TCS", transaction_type="BUY",
                            quantity=1, product="MIS", order_type="LIMIT", price=3990, tag=f"other{n}")  # fmt: skip
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        held[0] += 1.0

    broker, http, _ = make_broker(paper, sleep=pause)
    # When we place an order
    order_id = broker.place_order(resting_buy())
    # Then the broker refused the first try for rate (nothing placed), and the one after a pause placed it, once
    assert [c for c in http.calls if c[0] == "POST"] == [("POST", "/orders/regular")] * 2
    assert len(pauses) == 1
    assert paper.state()["rate_limited"] == 1
    assert [o["order_id"] for o in our_orders(witness)] == [order_id]


def test_an_order_still_unsent_past_its_slot_takes_a_new_slot_and_is_placed_once(paper, witness):
    # Given a rate limiter whose first slot has already passed by the time the order could leave
    now = time.time()
    slots = [now - 0.01, now + 60.0]
    taken: list[float] = []

    def throttle() -> float:
        taken.append(slots[len(taken)])
        return taken[-1]

    broker, http, _ = make_broker(paper, order_throttle=throttle)
    # When we place an order
    order_id = broker.place_order(resting_buy())
    # Then it did not go on the missed slot: it took a second one and went once, on that
    assert len(taken) == 2
    assert [c for c in http.calls if c[0] == "POST"] == [("POST", "/orders/regular")]
    assert [o["order_id"] for o in our_orders(witness)] == [order_id]


def test_an_order_that_keeps_missing_its_slot_is_refused_for_rate_and_never_sent(paper, witness):
    taken: list[str] = []

    def throttle() -> float:
        taken.append("slot")
        return time.time() - 1.0

    broker, http, _ = make_broker(paper, order_throttle=throttle)
    with pytest.raises(RateLimited, match="could not leave within its order rate-limit slot 3 times; not sent"):
        broker.place_order(resting_buy())
    assert len(taken) == 3
    assert [c for c in http.calls if c[0] == "POST"] == []
    assert our_orders(witness) == []


def test_a_timed_out_placement_is_found_by_its_tag_and_not_placed_again(paper, witness):
    # Given the broker places the order but its answer never reaches us
    paper.set_faults([{"kind": "timeout", "match": {"path": "/orders/regular", "method": "POST"}, "seconds": 5}])
    broker, http, _ = make_broker(paper)
    # When we place it
    order_id = broker.place_order(resting_buy())
    # Then the adapter found the order by our tag and returned its id, with one POST only
    assert [c for c in http.calls if c[0] == "POST"] == [("POST", "/orders/regular")]
    assert [o["order_id"] for o in our_orders(witness)] == [order_id]


def test_an_earlier_order_with_the_same_tag_is_not_mistaken_for_the_lost_one(paper, witness):
    # Given an earlier exit of this bracket with the same tag, already cancelled
    broker, _, _ = make_broker(paper)
    earlier = broker.place_order(resting_buy())
    broker.cancel_order(earlier)
    # And the broker now places our new order but loses the answer
    paper.set_faults([{"kind": "timeout", "match": {"path": "/orders/regular", "method": "POST"}, "seconds": 5}])
    # When we place it
    order_id = broker.place_order(resting_buy())
    # Then the answer is the new order, and there are exactly the two
    assert order_id != earlier
    statuses = {o["order_id"]: o["status"] for o in our_orders(witness)}
    assert statuses == {earlier: "CANCELLED", order_id: "OPEN"}


def test_a_5xx_on_placement_is_never_repeated_in_the_call_only_looked_for_over_the_window(paper, witness):
    # Given the broker answers 500 to the first placement (and did not place it)
    paper.set_faults([{"kind": "http_500", "match": {"path": "/orders/regular", "method": "POST"}, "count": 1}])
    broker, http, sleeps = make_broker(paper, lookup_pause_s=0.25, lookup_window_s=1.0)
    # When we place an order, the outcome is unknown: it is not in the book over the whole window
    with pytest.raises(BrokerTimeout, match="outcome unknown"):
        broker.place_order(resting_buy())
    # Then the book was read, a pause apart, until the window was over (by the pauses or the clock, whichever ends it
    # first), and the placement was not repeated
    assert [c for c in http.calls if c[0] == "POST"] == [("POST", "/orders/regular")]
    looks = http.calls.count(("GET", "/orders")) - 1  # after the `before` look
    assert 1 <= looks <= 5 and len(sleeps) == looks - 1
    assert all(0 < pause <= 0.25 for pause in sleeps) and sum(sleeps) <= 1.0
    assert our_orders(witness) == []
    # And the caller's retry, after the window, places it once
    order_id = broker.place_order(resting_buy())
    assert [o["order_id"] for o in our_orders(witness)] == [order_id]


def test_a_lost_placement_the_broker_shows_late_is_found_within_the_window(paper, witness):
    # Given the broker places the order, answers 500 and shows it in its book only after a second
    paper.set_faults(
        [
            {"kind": "http_500_after", "match": {"path": "/orders/regular", "method": "POST"}},
            {"kind": "slow_visibility", "match": {"path": "/orders/regular", "method": "POST"}, "seconds": 1},
        ]
    )
    broker, http, _ = make_broker(paper, sleep=time.sleep, lookup_pause_s=0.2, lookup_window_s=3.0)
    # When we place it / Then the adapter keeps looking until the broker shows it, and places nothing more
    order_id = broker.place_order(resting_buy())
    assert [c for c in http.calls if c[0] == "POST"] == [("POST", "/orders/regular")]
    assert [o["order_id"] for o in our_orders(witness)] == [order_id]


def test_a_5xx_after_the_broker_placed_the_order_finds_it_and_places_nothing_more(paper, witness):
    # Given the broker places the order but answers 500 (it acted, then said it failed)
    paper.set_faults([{"kind": "http_500_after", "match": {"path": "/orders/regular", "method": "POST"}}])
    broker, http, _ = make_broker(paper)
    # When we place an order
    order_id = broker.place_order(resting_buy())
    # Then the adapter found the order it had placed by its tag, and never sent the placement again
    assert [c for c in http.calls if c[0] == "POST"] == [("POST", "/orders/regular")]
    assert [o["order_id"] for o in our_orders(witness)] == [order_id]


def test_an_unreadable_book_after_a_lost_answer_means_outcome_unknown(paper, witness):
    # Given the broker places the order, the answer is lost, and then every read of the order book fails
    class FailingLookups(RecordingSession):
        posted = False

        def request(self, method, url, *args, **kwargs):  # type: ignore[override]
            if method == "POST":
                self.posted = True
            if self.posted and method == "GET":
                paper.set_faults([{"kind": "http_500", "match": {"path": "/orders", "method": "GET"}, "count": 100}])
            return super().request(method, url, *args, **kwargs)

    failing = FailingLookups()
    broker, _, _ = make_broker(paper, max_attempts=2)
    broker._session = failing
    paper.set_faults([{"kind": "timeout", "match": {"path": "/orders/regular", "method": "POST"}, "seconds": 5}])
    # When we place it / Then we are told the outcome is unknown, and nothing was sent twice
    with pytest.raises(BrokerTimeout, match="outcome unknown"):
        broker.place_order(resting_buy())
    paper.set_faults([])
    assert [c for c in failing.calls if c[0] == "POST"] == [("POST", "/orders/regular")]
    assert len(our_orders(witness)) == 1


def test_a_timed_out_placement_without_a_tag_is_never_repeated(paper, witness):
    paper.set_faults([{"kind": "timeout", "match": {"path": "/orders/regular", "method": "POST"}, "seconds": 5}])
    broker, http, _ = make_broker(paper)
    with pytest.raises(BrokerTimeout, match="no tag"):
        broker.place_order(resting_buy(tag=None))
    assert [c for c in http.calls if c[0] == "POST"] == [("POST", "/orders/regular")]
    assert len([o for o in witness.orders() if o["tradingsymbol"] == "INFY"]) == 1


def test_a_market_exit_carries_market_protection_and_fills(paper, witness):
    # Given an open long position
    broker, _, _ = make_broker(paper)
    broker.place_order(OrderRequest("NSE", "INFY", "BUY", 2, "MIS", "MARKET", tag="BFENTRY"))
    # When we exit it at market
    exit_id = broker.place_order(OrderRequest("NSE", "INFY", "SELL", 2, "MIS", "MARKET", tag="BFEXIT"))
    # Then the broker accepted it (it refuses MARKET orders without market_protection) and it filled
    (history_last,) = broker.order_history(exit_id)[-1:]
    assert history_last.status == "COMPLETE"
    assert Decimal(str(witness.order_history(exit_id)[-1]["market_protection"])) == Decimal("5")
    assert [p.quantity for p in broker.positions() if p.tradingsymbol == "INFY"] == [0]
    assert {t.order_id for t in broker.order_trades(exit_id)} == {exit_id}
    assert exit_id in {t.order_id for t in broker.trades()}


def test_a_rejected_order_raises_with_the_brokers_reason(paper):
    broker, _, _ = make_broker(paper)
    with pytest.raises(BrokerRejected) as caught:
        broker.place_order(OrderRequest("NSE", "NOSUCHSYMBOL", "BUY", 1, "MIS", "LIMIT", price=Decimal("10")))
    assert caught.value.message
    assert caught.value.http_status == 400


# ---- safe calls ----------------------------------------------------------------------------------------------


def test_reads_are_retried_through_5xx_and_timeouts(paper):
    broker, http, sleeps = make_broker(paper)
    broker.place_order(resting_buy())
    paper.set_faults(
        [
            {"kind": "http_500", "match": {"path": "/orders", "method": "GET"}, "count": 1},
            {"kind": "timeout", "match": {"path": "/orders", "method": "GET"}, "count": 1, "seconds": 5},
        ]
    )
    http.calls.clear()
    orders = broker.orders()
    assert [o.tag for o in orders] == [TAG]
    assert http.calls == [("GET", "/orders")] * 3
    assert len(sleeps) == 2


def test_modify_and_cancel_go_through_a_429(paper, witness):
    broker, _, _ = make_broker(paper)
    order_id = broker.place_order(resting_buy())
    paper.set_faults([{"kind": "http_429", "match": {"path": f"/orders/regular/{order_id}"}, "count": 1}])
    broker.modify_order(order_id, OrderChange(price=Decimal("1491.5")))
    paper.set_faults([{"kind": "http_429", "match": {"path": f"/orders/regular/{order_id}"}, "count": 1}])
    broker.cancel_order(order_id)
    last = witness.order_history(order_id)[-1]
    assert last["status"] == "CANCELLED"
    assert Decimal(str(last["price"])) == Decimal("1491.5")


def test_a_cancel_whose_answer_was_lost_is_done_when_repeated(paper, witness):
    # Given the broker cancels the order but the answer is lost
    broker, http, _ = make_broker(paper)
    order_id = broker.place_order(resting_buy())
    paper.set_faults([{"kind": "timeout", "match": {"path": f"/orders/regular/{order_id}"}, "seconds": 5}])
    # When we cancel (the adapter repeats the cancel, which the broker refuses as already cancelled)
    assert broker.cancel_order(order_id) == order_id
    # Then it is cancelled, and the repeat was seen as success
    assert [c for c in http.calls if c[0] == "DELETE"] == [("DELETE", f"/orders/regular/{order_id}")] * 2
    assert witness.order_history(order_id)[-1]["status"] == "CANCELLED"


def test_an_unknown_order_is_not_found(paper):
    broker, _, _ = make_broker(paper)
    with pytest.raises(BrokerOrderNotFound):
        broker.order_history("999999")


# ---- GTT -----------------------------------------------------------------------------------------------------


def test_a_gtt_create_whose_answer_was_lost_is_found_and_not_created_twice(paper, witness):
    paper.set_faults([{"kind": "timeout", "match": {"path": "/gtt/triggers", "method": "POST"}, "seconds": 5}])
    broker, http, _ = make_broker(paper)
    gtt_id = broker.create_gtt(protection())
    assert [c for c in http.calls if c[0] == "POST"] == [("POST", "/gtt/triggers")]
    assert [g["id"] for g in witness.get_gtts()] == [gtt_id]


def test_a_gtt_create_that_failed_with_5xx_is_not_repeated_in_the_call(paper, witness):
    paper.set_faults([{"kind": "http_500", "match": {"path": "/gtt/triggers", "method": "POST"}, "count": 1}])
    broker, http, _ = make_broker(paper, lookup_window_s=0.2)
    with pytest.raises(BrokerTimeout, match="outcome unknown"):
        broker.create_gtt(protection())
    assert [c for c in http.calls if c[0] == "POST"] == [("POST", "/gtt/triggers")]
    assert witness.get_gtts() == []
    # The caller's retry, after the window, creates it once
    gtt_id = broker.create_gtt(protection())
    assert [g["id"] for g in witness.get_gtts()] == [gtt_id]


def test_a_lost_gtt_create_the_broker_lists_late_is_found_not_made_twice(paper, witness):
    paper.set_faults(
        [
            {"kind": "http_500_after", "match": {"path": "/gtt/triggers", "method": "POST"}},
            {"kind": "slow_visibility", "match": {"path": "/gtt/triggers", "method": "POST"}, "seconds": 1},
        ]
    )
    broker, http, _ = make_broker(paper, sleep=time.sleep, lookup_pause_s=0.2, lookup_window_s=3.0)
    gtt_id = broker.create_gtt(protection())
    assert [c for c in http.calls if c[0] == "POST"] == [("POST", "/gtt/triggers")]
    assert [g["id"] for g in witness.get_gtts()] == [gtt_id]


def test_an_existing_identical_gtt_is_not_taken_for_the_new_one(paper, witness):
    # Given an identical GTT already exists (another bracket on the same levels)
    broker, _, _ = make_broker(paper)
    first = broker.create_gtt(protection())
    paper.set_faults([{"kind": "http_500", "match": {"path": "/gtt/triggers", "method": "POST"}, "count": 1}])
    # When a create fails with 5xx, the existing one is not taken for the lost answer (outcome unknown)
    broker, _, _ = make_broker(paper, lookup_window_s=0.2)
    with pytest.raises(BrokerTimeout, match="outcome unknown"):
        broker.create_gtt(protection())
    # Then the retry makes a second one rather than mistaking the existing one for it
    second = broker.create_gtt(protection())
    assert second != first
    assert sorted(g["id"] for g in witness.get_gtts()) == sorted([first, second])


def test_gtt_modify_delete_and_read_back(paper, witness):
    broker, _, _ = make_broker(paper)
    gtt_id = broker.create_gtt(protection())
    tighter = GttRequest(
        "NSE",
        "INFY",
        (Decimal("1490"), Decimal("1550")),
        Decimal("1500"),
        (GttLeg("SELL", 1, Decimal("1489"), "MIS"), GttLeg("SELL", 1, Decimal("1550"), "MIS")),
    )
    broker.modify_gtt(gtt_id, tighter)
    assert broker.gtt(gtt_id).same_trigger_as(tighter)
    assert broker.delete_gtt(gtt_id) == gtt_id
    # Deleting again counts as done (the answer to the first delete might have been lost)
    assert broker.delete_gtt(gtt_id) == gtt_id
    assert broker.gtt(gtt_id).status in ("deleted", "cancelled")


def test_a_triggered_gtt_reports_the_order_it_placed(paper):
    broker, _, _ = make_broker(paper)
    broker.place_order(OrderRequest("NSE", "INFY", "BUY", 1, "MIS", "MARKET", tag="BFENTRY"))
    gtt_id = broker.create_gtt(protection())
    paper.set_quotes([{"exchange": "NSE", "tradingsymbol": "INFY", "ltp": 1478, "bid": 1477.95, "ask": 1478.05}])
    report = broker.gtt(gtt_id)
    assert report.status == "triggered"
    assert len(report.triggered_order_ids) == 1
    with pytest.raises(BrokerRejected):
        broker.delete_gtt(gtt_id)  # the exit path must learn the broker already acted


# ---- market data and session -------------------------------------------------------------------------------------


def test_quotes_and_ltp(paper):
    broker, _, _ = make_broker(paper)
    quote = broker.quote(["NSE:INFY"])["NSE:INFY"]
    assert quote.last_price == Decimal("1500")
    assert (quote.best_bid, quote.best_ask) == (Decimal("1499.95"), Decimal("1500.05"))
    assert broker.ltp(["NSE:INFY", "NSE:TCS"]) == {"NSE:INFY": Decimal("1500"), "NSE:TCS": Decimal("4000")}


def test_an_invalid_session_tells_the_trader_to_log_in_again(paper):
    broker = KiteBroker(paper.base_url, static_credentials(paper.api_key, "yesterdays-token"))
    with pytest.raises(SessionExpired, match="the Kite session has expired or is invalid — log in again"):
        broker.orders()


@pytest.fixture
def aws(monkeypatch, paper):
    """Moto for Secrets Manager and DynamoDB, with settings pointing at the paper exchange."""
    monkeypatch.setenv("BROKER_BASE_URL", paper.base_url)
    monkeypatch.setenv("BROKER_SECRET_NAME", "bracketflow/test-broker")
    monkeypatch.setenv("TABLE_NAME", "bracketflow-test-brackets")
    with mock_aws():
        boto3.client("dynamodb", region_name="ap-south-1").create_table(
            TableName="bracketflow-test-brackets",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        )
        yield boto3.client("secretsmanager", region_name="ap-south-1")


def test_login_exchanges_the_request_token_and_stores_the_session(aws, paper):
    from bracketflow.adapters.broker.session import exchange_request_token, read_credentials, verify_session

    # Given the trader stored the app's key and secret
    aws.create_secret(
        Name="bracketflow/test-broker",
        SecretString=json.dumps({"api_key": paper.api_key, "api_secret": "paper-secret"}),
    )
    # When the login callback hands us the request_token of the login page's redirect
    session = exchange_request_token(paper.login_request_token())
    # Then the day's new access token is in the secret (not in the answer), and the stored session works
    stored = json.loads(aws.get_secret_value(SecretId="bracketflow/test-broker")["SecretString"])
    assert stored["access_token"].startswith("paper-") and stored["access_token"] != paper.access_token
    assert stored["api_secret"] == "paper-secret"
    assert "access_token" not in session and session["user_id"] == "PAPER1"
    assert read_credentials().access_token == stored["access_token"]
    assert verify_session() == "PAPER1"


def test_a_wrong_api_secret_makes_login_fail_clearly(aws):
    from bracketflow.adapters.broker.session import exchange_request_token, read_credentials

    aws.create_secret(Name="bracketflow/test-broker", SecretString=json.dumps({"api_key": "paper", "api_secret": "x"}))
    with pytest.raises(SessionExpired, match="log in again"):
        exchange_request_token("request-token-from-redirect")
    with pytest.raises(SessionExpired, match="no Kite session yet"):
        read_credentials()


def test_the_configured_broker_takes_an_order_token_before_placing(aws, paper, witness, monkeypatch):
    from bracketflow.adapters.broker import get_broker

    # Given paper mode with no broker secret (the local stack's default)
    monkeypatch.setenv("BROKER", "paper")
    monkeypatch.setenv("BROKER_ACCOUNT", "acct-test")
    broker = get_broker()
    # When it places an order
    order_id = broker.place_order(resting_buy())
    # Then it went to the paper exchange, through the account's shared rate bucket
    assert [o["order_id"] for o in our_orders(witness)] == [order_id]
    bucket = boto3.resource("dynamodb", region_name="ap-south-1").Table("bracketflow-test-brackets")
    item = bucket.get_item(Key={"pk": "RATELIMIT#acct-test", "sk": "BUCKET"})["Item"]
    assert item["grants"]  # one slot, or more if a slow first booking made it miss one
    assert get_broker() is broker


def test_paper_mode_without_a_secret_asks_for_it_once_not_for_every_order(aws, paper, witness, monkeypatch):
    from bracketflow.adapters.aws import client
    from bracketflow.adapters.broker import get_broker

    # Given paper mode with no broker secret, and Secrets Manager's calls counted
    monkeypatch.setenv("BROKER", "paper")
    reads: list[str] = []
    client("secretsmanager").meta.events.register(
        "before-call.secrets-manager.GetSecretValue", lambda **_: reads.append("read")
    )
    broker = get_broker()
    # When three orders are placed
    ids = [broker.place_order(resting_buy(tag=f"{TAG[:-1]}{n}")) for n in range(3)]
    # Then all three reached the paper exchange with its own credentials, and the missing secret was looked up once
    assert {o["order_id"] for o in witness.orders()} >= set(ids)
    assert reads == ["read"]
