"""A resend is answered as a resend whatever the key's placement bucket holds, and refused requests spend nothing.

TradingView resends an alert it believes failed and does not retry a 4xx: answering a resend 429 because the bucket
happens to be empty tells it the alert failed, when it was placed. And a run of broken requests (a typo in an alert
template) must not use up the placements of the next valid alert. The placement clock is frozen here, so the
bucket does not refill during a test.
"""

# ruff: noqa: F811  (pytest fixtures imported from the support modules are redefined as test parameters)
from __future__ import annotations

import json

import pytest

from tests.support.batch import batch_aws, batch_executions, leg, post_batch  # noqa: F401
from tests.support.intake import aws, bracket_request, call_api, call_webhook, trader  # noqa: F401


@pytest.fixture
def frozen_clock(monkeypatch):
    from bracketflow.services import register_bracket

    monkeypatch.setattr(register_bracket, "now_ms", lambda: 1_775_000_000_000)


def alert(api_key: str, price: int) -> str:
    return json.dumps({**bracket_request(api_key), "entry_price": price, "sl_price": price - 20,
                       "target_price": price + 50})  # fmt: skip


def empty_the_bucket(send) -> None:
    """Send new, valid requests until the key is refused 429 (the bucket is then empty at the frozen instant)."""
    for n in range(1, 50):
        if send(n).status == 429:
            return
    raise AssertionError("the placement limit never refused a request")


def test_a_resent_alert_is_a_duplicate_even_when_the_bucket_is_empty(aws, trader, frozen_clock, monkeypatch):
    from bracketflow.settings import get_settings

    monkeypatch.setenv("ALERT_BURST", "3")  # a bucket small enough to empty here
    get_settings.cache_clear()
    # Given an alert that was registered
    first = call_webhook(alert(trader.api_key, 1500), content_type="text/plain")
    assert first.status == 200 and first.body["duplicate"] is False, first.body
    # And the key has since used up its placements
    empty_the_bucket(lambda n: call_webhook(alert(trader.api_key, 1500 + n)))
    # When TradingView resends the first alert
    again = call_webhook(alert(trader.api_key, 1500), content_type="text/plain")
    # Then it is told the alert was placed, as a resend of the same bracket
    assert again.status == 200, again.body
    assert again.body["duplicate"] is True and again.body["bracket_id"] == first.body["bracket_id"]


def test_a_resent_rest_order_with_its_client_order_id_is_a_duplicate_when_the_bucket_is_empty(
    aws, trader, frozen_clock
):
    body = bracket_request(trader.api_key, client_order_id="breakout-1")
    first = call_api("POST", "/api/v1/placebracketorder", body)
    assert first.status == 200, first.body
    empty_the_bucket(
        lambda n: call_api("POST", "/api/v1/placebracketorder", bracket_request(trader.api_key, entry_price=1500 + n))
    )
    again = call_api("POST", "/api/v1/placebracketorder", body)
    assert again.status == 200 and again.body["duplicate"] is True, again.body
    assert again.body["bracket_id"] == first.body["bracket_id"]


def test_a_resent_batch_is_a_duplicate_when_the_bucket_is_empty(batch_aws, trader, frozen_clock):
    first = post_batch(trader, [leg()], client_batch_id="one-leg")
    assert first.status in (200, 202), first.body
    empty_the_bucket(lambda n: post_batch(trader, [leg(quantity=75 * (n + 1))]))
    again = post_batch(trader, [leg()], client_batch_id="one-leg")
    assert again.status in (200, 202) and again.body["duplicate"] is True, again.body
    assert again.body["batch_id"] == first.body["batch_id"]
    assert first.body["batch_id"] in [e["name"] for e in batch_executions(batch_aws)]


@pytest.mark.parametrize(
    "broken",
    [
        {"sl_price": 1600},  # a stop on the wrong side of the entry
        {"symbol": "NOSUCHSYMBOL"},
        {"quantity": "ten"},
        {"entry_price": "1e999999999"},
    ],
    ids=["stop above entry", "unknown symbol", "quantity not a number", "huge price"],
)
def test_refused_requests_do_not_spend_the_next_valid_alerts_placements(aws, trader, frozen_clock, broken):
    # Given a key whose alert template is broken, fired many times in one instant
    for _ in range(20):
        answer = call_webhook(json.dumps({**bracket_request(trader.api_key), **broken}))
        assert answer.status == 400, answer.body
    for _ in range(5):
        assert call_webhook(json.dumps(bracket_request("bfk_wrong_key"))).status == 401
    # When the template is fixed and the next alert arrives in that same instant
    fixed = call_webhook(alert(trader.api_key, 1500))
    # Then it is registered: none of the refused ones spent a placement
    assert fixed.status == 200, fixed.body


def test_invalid_batches_do_not_spend_placements(batch_aws, trader, frozen_clock):
    for _ in range(20):
        assert post_batch(trader, [leg(tradingsymbol="NOSUCHSYMBOL")]).status == 400
    answer = post_batch(trader, [leg()])
    assert answer.status in (200, 202), answer.body
