"""Kite's instrument list as the master in Kite mode: stored compact in the stack's bucket by the morning download,
read lazily by the lookups; an unknown symbol is refused with a 400 naming it (never given a guessed tick and lot), an
expired contract is refused, the tick and lot come from Kite's list; the download refuses a list too short to be
Kite's and keeps the stored one; paper mode keeps the shipped master. AWS is moto; the broker is the paper exchange."""

# ruff: noqa: F811  (pytest fixtures imported from tests.support.intake are redefined as test parameters)
from __future__ import annotations

import csv
import io
import json

import boto3
import pytest

from benchmarks.bench_instruments import COLUMNS, full_size_csv
from tests.support.intake import REGION, aws, bracket_request, call_api, call_webhook, trader  # noqa: F401

BUCKET = "bf-instruments"


def kite_list(*rows: dict[str, str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in COLUMNS})
    return out.getvalue()


INFY = {
    "instrument_token": "408065",
    "exchange_token": "1594",
    "tradingsymbol": "INFY",
    "tick_size": "0.05",
    "lot_size": "1",
    "instrument_type": "EQ",
    "segment": "NSE",
    "exchange": "NSE",
}
NIFTY_FUT = {
    "instrument_token": "9999106",
    "exchange_token": "39059",
    "tradingsymbol": "NIFTY27JANFUT",
    "expiry": "2027-01-28",
    "tick_size": "0.1",
    "lot_size": "75",
    "instrument_type": "FUT",
    "segment": "NFO-FUT",
    "exchange": "NFO",
}
EXPIRED_OPT = {
    "instrument_token": "9999362",
    "exchange_token": "39060",
    "tradingsymbol": "NIFTY25JAN24000CE",
    "expiry": "2025-01-30",
    "strike": "24000",
    "tick_size": "0.05",
    "lot_size": "75",
    "instrument_type": "CE",
    "segment": "NFO-OPT",
    "exchange": "NFO",
}


@pytest.fixture
def kite_master(aws, monkeypatch):
    """Kite mode, with Kite's list of the day (INFY, a NIFTY future, an expired option) in the stack's bucket."""
    from bracketflow.adapters.aws import reset_clients
    from bracketflow.adapters.instrument_store import MASTER_KEY, forget_master
    from bracketflow.domain.instruments import to_compact

    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=BUCKET, Key=MASTER_KEY, Body=to_compact(kite_list(INFY, NIFTY_FUT, EXPIRED_OPT)))
    monkeypatch.setenv("BROKER", "kite")
    monkeypatch.setenv("INSTRUMENTS_BUCKET", BUCKET)
    reset_clients()
    forget_master()
    yield s3
    forget_master()


def test_in_kite_mode_an_unknown_symbol_is_a_400_naming_it_not_a_guessed_tick(kite_master, trader):
    # Given a symbol Kite does not list (the shipped paper master does list RELIANCE)
    answer = call_webhook(
        {
            "apikey": trader.api_key,
            "symbol": "NSE:RELIANCE",
            "action": "buy",
            "product": "MIS",
            "quantity": "1",
            "entry_price": "2500",
            "sl_price": "2480",
            "target_price": "2550",
        }
    )
    # Then it is refused by name, and nothing is recorded
    assert answer.status == 400, answer.body
    assert "NSE:RELIANCE" in answer.body["message"] and "instrument master" in answer.body["message"]


def test_in_kite_mode_an_expired_contract_is_a_400(kite_master, trader):
    answer = call_api(
        "POST",
        "/api/v1/placebracketorder",
        bracket_request(
            trader.api_key,
            symbol="NIFTY25JAN24000CE",
            exchange="NFO",
            product="NRML",
            quantity=75,
            entry_price=100,
            sl_price=80,
            target_price=150,
        ),
    )
    assert answer.status == 400, answer.body
    assert "expired on 2025-01-30" in answer.body["message"]


def test_in_kite_mode_the_lot_and_tick_come_from_kites_list(kite_master):
    from bracketflow.domain.accounts import Caller
    from bracketflow.domain.bracket import BracketSpec
    from bracketflow.errors import ValidationFailed
    from bracketflow.services.register_bracket import normalise

    caller = Caller("acc", "hash")
    fut = dict(account_id="acc", symbol="NIFTY27JANFUT", exchange="NFO", product="NRML", action="BUY")
    fut.update(entry_price="24000", sl_price="23900", target_price="24200")
    # A quantity that is not a multiple of Kite's lot (75) is refused; 75 passes
    with pytest.raises(ValidationFailed, match="75"):
        normalise(BracketSpec.from_dict({**fut, "quantity": 10}), caller, round_to_tick=False)
    spec = normalise(BracketSpec.from_dict({**fut, "quantity": 75}), caller, round_to_tick=False)
    assert spec.quantity == 75
    # and a price off Kite's tick (0.1) is refused
    with pytest.raises(ValidationFailed):
        normalise(
            BracketSpec.from_dict({**fut, "quantity": 75, "entry_price": "24000.05"}), caller, round_to_tick=False
        )


def test_kite_mode_before_the_first_download_says_what_to_do(aws, trader, monkeypatch):
    from bracketflow.adapters.aws import reset_clients
    from bracketflow.adapters.instrument_store import forget_master

    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    monkeypatch.setenv("BROKER", "kite")
    monkeypatch.setenv("INSTRUMENTS_BUCKET", BUCKET)
    reset_clients()
    forget_master()
    answer = call_webhook(
        {
            "apikey": trader.api_key,
            "symbol": "NSE:INFY",
            "action": "buy",
            "product": "MIS",
            "quantity": "1",
            "entry_price": "1500",
            "sl_price": "1480",
            "target_price": "1550",
        }
    )
    forget_master()
    # (the API answers every refusal that is not the caller's fault 409, never a 5xx)
    assert answer.status == 409 and "instruments function" in answer.body["message"]


def test_paper_mode_keeps_the_shipped_master(aws, monkeypatch):
    from bracketflow.adapters.instrument_store import current_master
    from bracketflow.domain.instruments import default_master

    monkeypatch.setenv("INSTRUMENTS_BUCKET", BUCKET)  # set, but paper mode never reads it (no bucket exists here)
    assert current_master() is default_master()


# ---------- the morning download ----------


@pytest.fixture
def kite_at_the_paper_exchange(aws, monkeypatch, paper_exchange):
    """Kite mode against the paper exchange (Kite's API shape), with a logged-in session in the broker secret."""
    from bracketflow.adapters.aws import reset_clients

    boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="bracketflow/test-broker",
        SecretString=json.dumps({"api_key": "paper", "api_secret": "s", "access_token": "paper-token"}),
    )
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    for key, value in {
        "BROKER": "kite",
        "BROKER_BASE_URL": paper_exchange.base_url,
        "BROKER_SECRET_NAME": "bracketflow/test-broker",
        "INSTRUMENTS_BUCKET": BUCKET,
    }.items():
        monkeypatch.setenv(key, value)
    reset_clients()
    yield s3


def test_the_download_refuses_a_list_too_short_to_be_kites_and_keeps_the_stored_one(kite_at_the_paper_exchange):
    from bracketflow.adapters.instrument_store import MASTER_KEY
    from functions.instruments.app import lambda_handler
    from tests.support.intake import FakeContext

    s3 = kite_at_the_paper_exchange
    s3.put_object(Bucket=BUCKET, Key=MASTER_KEY, Body=b"yesterday")
    # When the morning run downloads the paper exchange's 148-row list
    with pytest.raises(ValueError, match="rows"):
        lambda_handler({}, FakeContext())
    # Then yesterday's master is still the stored one
    assert s3.get_object(Bucket=BUCKET, Key=MASTER_KEY)["Body"].read() == b"yesterday"


def test_a_full_list_is_stored_compact_and_answers_lookups(aws, monkeypatch):
    from bracketflow.adapters.aws import reset_clients
    from bracketflow.adapters.instrument_store import current_master, forget_master, store_master

    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    text = full_size_csv(20_000)
    assert store_master(text, BUCKET) == 20_000
    monkeypatch.setenv("BROKER", "kite")
    monkeypatch.setenv("INSTRUMENTS_BUCKET", BUCKET)
    reset_clients()
    forget_master()
    master = current_master()
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows[:: len(rows) // 50]:
        found = master.get(row["exchange"], row["tradingsymbol"])
        assert found is not None and found.instrument_token == int(row["instrument_token"])
        assert str(found.tick_size) == row["tick_size"] and found.lot_size == int(row["lot_size"])
        assert master.by_token(found.instrument_token) == found
    assert master.get("NSE", "NOSUCH") is None
    forget_master()


def test_paper_mode_downloads_nothing(aws):
    from functions.instruments.app import lambda_handler
    from tests.support.intake import FakeContext

    assert lambda_handler({}, FakeContext())["downloaded"] is False
