"""Index instruments (segment INDICES, token & 0xFF == 9: NIFTY 50, NIFTY BANK) cannot be traded, and the streamer
skips their packets, so a bracket on one could never be protected or trailed: intake refuses it with a clear 400 on
every way in (REST, TradingView webhook, batch legs), writing nothing and starting nothing."""

# ruff: noqa: F811  (pytest fixtures imported from tests.support.intake are redefined as test parameters)
from __future__ import annotations

import pytest

from bracketflow.domain.instruments import default_master, is_index_token
from tests.support.intake import aws, bracket_request, call_api, call_webhook, trader  # noqa: F401


def nothing_written(aws) -> bool:
    return aws.items("BRACKET#") == [] and aws.executions() == []


def test_the_shipped_master_marks_nifty_50_as_an_index():
    # (the premise of every test below: the instrument is in the master and its token says INDICES)
    nifty = default_master().get("NSE", "NIFTY 50")
    assert nifty is not None and nifty.segment == "INDICES" and is_index_token(nifty.instrument_token)
    assert not nifty.tradable


@pytest.mark.parametrize(
    ("symbol", "exchange", "shown"),
    [
        ("NIFTY 50", "NSE", "NIFTY 50"),
        ("nifty 50", "nse", "NIFTY 50"),
        ("NSE:NIFTY BANK", "NSE", "NIFTY BANK"),
    ],
)
def test_a_rest_bracket_on_an_index_is_a_400_that_names_it(aws, trader, symbol, exchange, shown):
    # Given a well-formed bracket whose instrument is an index
    body = bracket_request(
        trader.api_key, symbol=symbol, exchange=exchange, entry_price=24000, sl_price=23900, target_price=24200
    )
    # When it is placed through the REST API
    answer = call_api("POST", "/api/v1/placebracketorder", body)
    # Then a 400 says which instrument and why, and nothing was registered or started
    assert answer.status == 400, answer.body
    assert answer.body["status"] == "error"
    assert answer.body["message"].startswith(f"{shown} is an index and cannot be traded")
    assert nothing_written(aws)


def test_the_refusal_holds_with_the_real_broker_too(aws, trader, monkeypatch):
    # Given the Kite broker (where symbols missing from our master are passed on to Kite)
    from bracketflow.adapters.aws import reset_clients

    monkeypatch.setenv("BROKER", "kite")
    reset_clients()
    body = bracket_request(trader.api_key, symbol="NIFTY 50", entry_price=24000, sl_price=23900, target_price=24200)
    answer = call_api("POST", "/api/v1/placebracketorder", body)
    assert answer.status == 400 and "NIFTY 50 is an index and cannot be traded" in answer.body["message"]
    assert nothing_written(aws)


@pytest.mark.parametrize(
    "levels",
    [
        {"entry_price": "24000", "sl_price": "23900", "target_price": "24200"},
        {"entry_price": "24000", "sl_percent": "0.5", "target_percent": "1"},
    ],
)
def test_a_tradingview_alert_on_an_index_is_a_400_that_names_it(aws, trader, levels):
    from bracketflow.services.accounts import create_webhook_token

    # Given a webhook token and an alert for NSE:NIFTY 50 (absolute levels, or levels relative to the entry)
    _, token = create_webhook_token(trader.account_id, "index-alerts")
    alert = {"symbol": "NSE:NIFTY 50", "action": "buy", "product": "MIS", "quantity": "50", **levels}
    # When TradingView posts it
    answer = call_webhook(alert, token=token)
    # Then a 400 names the index, and nothing was registered or started
    assert answer.status == 400, answer.body
    assert "NIFTY 50 is an index and cannot be traded" in answer.body["message"]
    assert nothing_written(aws)


@pytest.mark.parametrize(
    ("ticker", "index"),
    [("NSE:NIFTY", "NIFTY 50"), ("NSE:BANKNIFTY", "NIFTY BANK"), ("NSE:CNXIT", "NIFTY IT"), ("BSE:SENSEX", "SENSEX")],
)
def test_an_alert_from_a_tradingview_index_chart_is_refused_as_the_index_it_is(aws, trader, ticker, index):
    from bracketflow.services.accounts import create_webhook_token

    # Given an alert whose {{ticker}} is TradingView's name of an index (not Kite's, and not all in our master)
    _, token = create_webhook_token(trader.account_id, "index-alerts")
    alert = {"symbol": ticker, "action": "buy", "product": "MIS", "quantity": "50", "entry_price": "24000",
             "sl_price": "23900", "target_price": "24200"}  # fmt: skip
    # When TradingView posts it
    answer = call_webhook(alert, token=token)
    # Then the 400 says it is that index, not "unknown instrument", and nothing was registered or started
    assert answer.status == 400, answer.body
    assert answer.body["message"].startswith(f"{index} is an index and cannot be traded")
    assert nothing_written(aws)


def test_a_stock_is_still_placed(aws, trader):
    # Given INFY on NSE (a stock); When it is placed; Then the index rule does not get in its way
    answer = call_api("POST", "/api/v1/placebracketorder", bracket_request(trader.api_key))
    assert answer.status == 200, answer.body
