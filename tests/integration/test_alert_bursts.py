"""A burst of TradingView alerts from one key is accepted, and the per-key limits keep their anti-abuse role.

A screener or a multi-symbol strategy fires many alerts on one candle close (09:15:00), and TradingView does not
retry a 4xx: each of them must be registered. Pacing their entries is the account-wide order limiter's job at the
broker. The clock the limits read is frozen, so "one second" here is one instant: the strictest case.
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.support.intake are redefined as test parameters)
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests.support.intake import aws, bracket_request, call_api, call_webhook  # noqa: F401


@pytest.fixture
def screener_trader(aws, monkeypatch):
    """A trader whose risk limits allow 300 open brackets, and a placement clock that does not move."""
    from bracketflow.domain.accounts import RiskLimits
    from bracketflow.services import register_bracket
    from bracketflow.services.accounts import create_account

    monkeypatch.setattr(register_bracket, "now_ms", lambda: 1_775_000_000_000)
    limits = RiskLimits(max_open_brackets=300, daily_loss_limit=Decimal(10**7), max_order_value=Decimal(10**8))
    _, key = create_account("Screener", account_id="acc_screener", limits=limits)
    return key


def settings_env(monkeypatch, **values: str) -> None:
    from bracketflow.settings import get_settings

    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def alert(api_key: str, n: int) -> str:
    # one alert per strategy: intake refuses a second open bracket of one symbol and strategy
    return json.dumps({**bracket_request(api_key), "strategy": f"screen-{n}"})


def test_a_hundred_alerts_in_one_instant_are_all_registered(screener_trader):
    answers = [call_webhook(alert(screener_trader, n), content_type="text/plain") for n in range(100)]
    assert [a.status for a in answers] == [200] * 100, [a.body for a in answers if a.status != 200][:3]
    assert len({a.body["bracket_id"] for a in answers}) == 100


def test_the_alert_limit_still_stops_a_runaway_loop_past_its_burst(screener_trader, monkeypatch):
    settings_env(monkeypatch, ALERT_BURST="5", ALERT_RATE_LIMIT_PER_SECOND="1")
    answers = [call_webhook(alert(screener_trader, n)) for n in range(7)]
    assert [a.status for a in answers] == [200] * 5 + [429] * 2
    assert answers[5].body["message"] == (
        "rate limit exceeded: at most 5 alerts at once and 1 per second after that for this API key"
    )


def test_alerts_and_rest_placements_have_separate_buckets(screener_trader):
    # Given a key that has just sent a burst of alerts
    for n in range(50):
        assert call_webhook(alert(screener_trader, n)).status == 200
    # Then its REST placements still have their own two a second
    rest = [call_api("POST", "/api/v1/placebracketorder", bracket_request(screener_trader, strategy=f"rest-{n}"))
            for n in range(3)]  # fmt: skip
    assert [a.status for a in rest] == [200, 200, 429]


def test_the_rest_burst_is_configurable(screener_trader, monkeypatch):
    settings_env(monkeypatch, PLACEMENT_BURST="4")
    rest = [call_api("POST", "/api/v1/placebracketorder", bracket_request(screener_trader, strategy=f"rest-{n}"))
            for n in range(5)]  # fmt: skip
    assert [a.status for a in rest] == [200] * 4 + [429]
    assert rest[4].body["message"] == "rate limit exceeded: at most 2 bracket orders per second for this API key"
