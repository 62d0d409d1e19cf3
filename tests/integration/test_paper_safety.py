"""Paper mode can never touch real money: it reaches neither a real broker URL nor the real broker credentials.

Two locks on one door: the template refuses Broker=paper at deploy time (its Rules), and the code refuses, before
anything is sent or read, paper mode outside the local stack, a paper broker URL on a Kite/Zerodha host and a paper
secret named like the Kite one. Kite mode verifies postbacks with the app's own api_secret, never the paper default.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from bracketflow.adapters.aws import reset_clients
from bracketflow.errors import BrokerMisconfigured
from local.template import load_template, load_yaml

ROOT = Path(__file__).resolve().parents[2]
REGION = "ap-south-1"
KITE_SECRET = "bracketflow/local/kite"
READS: list[str] = []
REAL_LOOKING = {"api_key": "kiteappkey", "api_secret": "kite-app-secret", "access_token": "real-day-token"}


@pytest.fixture
def secrets(monkeypatch):
    with mock_aws():
        reset_clients()
        sm = boto3.client("secretsmanager", region_name=REGION)
        # The real broker's credentials exist in this account, as in a trader's AWS account
        sm.create_secret(Name=KITE_SECRET, SecretString=json.dumps(REAL_LOOKING))
        yield sm


def _settings(monkeypatch, **env: str):
    for key in ("BROKER_BASE_URL", "BROKER_TICKER_URL", "BROKER_SECRET_NAME", "STAGE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_clients()  # and the cached settings
    from bracketflow.adapters.aws import client
    from bracketflow.settings import get_settings

    # Every secret the code reads, seen on the one Secrets Manager client it uses (boto3's own event hook)
    READS.clear()
    client("secretsmanager").meta.events.register(
        "before-parameter-build.secrets-manager.GetSecretValue",
        lambda params, **_: READS.append(str(params["SecretId"])),
    )
    return get_settings()


@pytest.mark.parametrize(
    "env",
    [
        {"BROKER_BASE_URL": "https://api.kite.trade"},
        {"BROKER_BASE_URL": "https://API.Kite.Trade./"},
        {"BROKER_BASE_URL": "https://kite.zerodha.com"},
        {"BROKER_TICKER_URL": "wss://ws.kite.trade"},
        {"STAGE": "dev"},  # a deployed Lambda's stage
        {"STAGE": "prod"},
        {"BROKER_SECRET_NAME": KITE_SECRET},
        {"BROKER_SECRET_NAME": f"arn:aws:secretsmanager:{REGION}:123456789012:secret:bracketflow/prod/kite-AbCdEf"},
    ],
)
def test_paper_mode_refuses_a_real_broker_url_a_deployed_stage_and_the_kite_secret(secrets, monkeypatch, env):
    from bracketflow.adapters.broker import get_broker
    from bracketflow.adapters.broker.session import exchange_request_token, read_secret, verify_session
    from bracketflow.services.broker_session import broker_login_url
    from streamer.main import credentialed_ticker_url

    settings = _settings(monkeypatch, BROKER="paper", **env)
    # Every way paper mode could reach the broker or its credentials is refused, before any call or read
    for attempt in (
        get_broker,
        read_secret,
        verify_session,
        lambda: exchange_request_token("a-request-token"),
        broker_login_url,
        lambda: credentialed_ticker_url(settings, refresh=True),
    ):
        with pytest.raises(BrokerMisconfigured, match="paper"):
            attempt()
    # And no secret at all was read, the real credentials least of all
    assert READS == []


def test_paper_mode_uses_its_own_secret_and_the_paper_exchange_never_the_kite_ones(
    secrets, monkeypatch, paper_exchange
):
    from bracketflow.adapters.broker import get_broker
    from bracketflow.services.broker_session import broker_login_url
    from streamer.main import credentialed_ticker_url

    # Given the local stack's paper mode, with the Kite secret beside it and no paper secret yet
    settings = _settings(monkeypatch, BROKER="paper", BROKER_BASE_URL=paper_exchange.base_url)
    assert settings.broker_secret == "bracketflow/local/paper"
    # When it talks to the broker
    orders = get_broker().orders()
    ticker = credentialed_ticker_url(settings)
    # Then the paper exchange answered with its own session, and the streamer would use the same
    assert orders == []
    assert "api_key=paper" in ticker and "access_token=paper-token" in ticker and "real-day-token" not in ticker
    # And the login is the paper exchange's copy of Kite's, for the paper secret's key
    secrets.create_secret(
        Name="bracketflow/local/paper", SecretString=json.dumps({"api_key": "paper", "api_secret": "paper-secret"})
    )
    assert broker_login_url() == f"{paper_exchange.base_url}/connect/login?api_key=paper&v=3"
    # And only the paper secret was ever read, never the Kite one
    assert READS and set(READS) == {"bracketflow/local/paper"}


def test_kite_mode_follows_kites_urls_and_the_stages_kite_secret(secrets, monkeypatch):
    from bracketflow.services.broker_session import broker_login_url

    settings = _settings(monkeypatch, BROKER="kite", STAGE="dev")
    assert (settings.broker_base_url, settings.broker_ticker_url) == ("https://api.kite.trade", "wss://ws.kite.trade")
    assert settings.broker_secret == "bracketflow/dev/kite"
    secrets.create_secret(Name="bracketflow/dev/kite", SecretString=json.dumps({"api_key": "app1", "api_secret": "s"}))
    assert broker_login_url() == "https://kite.zerodha.com/connect/login?api_key=app1&v=3"


def _postback(secret: str) -> dict[str, str]:
    order_id, ts = "250101000000001", "2025-01-01 09:20:00"
    checksum = hashlib.sha256(f"{order_id}{ts}{secret}".encode()).hexdigest()
    return {"order_id": order_id, "order_timestamp": ts, "checksum": checksum, "status": "COMPLETE"}


def test_kite_postbacks_are_verified_with_the_apps_secret_never_the_paper_default(secrets, monkeypatch):
    from bracketflow.services.order_updates import BadPostback, verify_postback

    _settings(monkeypatch, BROKER="kite", STAGE="dev")
    # Without a broker secret nothing verifies: a clear refusal (401), not a crash
    with pytest.raises(BadPostback, match="cannot be read"):
        verify_postback(_postback("paper-secret"))
    # With the app's secret, its checksum verifies and the paper exchange's public one does not
    secrets.create_secret(Name="bracketflow/dev/kite", SecretString=json.dumps(REAL_LOOKING))
    assert verify_postback(_postback("kite-app-secret"))["order_id"] == "250101000000001"
    with pytest.raises(BadPostback, match="does not match"):
        verify_postback(_postback("paper-secret"))


def test_kite_mode_refuses_the_paper_secret_even_when_stored_as_the_apps(secrets, monkeypatch):
    from bracketflow.services.order_updates import BadPostback, verify_postback

    _settings(monkeypatch, BROKER="kite", STAGE="dev", BROKER_CREDENTIALS_CACHE_S="0")
    secrets.create_secret(
        Name="bracketflow/dev/kite", SecretString=json.dumps({"api_key": "app1", "api_secret": "paper-secret"})
    )
    with pytest.raises(BadPostback, match="public api_secret"):
        verify_postback(_postback("paper-secret"))


def test_the_template_refuses_broker_paper_at_deploy_time_and_defaults_to_kite():
    doc = load_yaml(ROOT / "template.yaml")
    assert doc["Parameters"]["Broker"]["Default"] == "kite"
    assertions = doc["Rules"]["PaperRunsOnlyOnTheLocalStack"]["Assertions"]
    assert assertions[0]["Assert"] == {"Fn::Equals": [{"Ref": "Broker"}, "kite"]}
    assert "make run" in assertions[0]["AssertDescription"]
    assert "BrokerBaseUrl" not in doc["Parameters"] and "BrokerSecretName" not in doc["Parameters"]


@pytest.mark.parametrize(
    ("broker", "url", "secret"),
    [
        ("kite", "https://api.kite.trade", "bracketflow/dev/kite"),
        ("paper", "http://127.0.0.1:8700", "bracketflow/dev/paper"),
    ],
)
def test_the_broker_url_and_secret_follow_from_broker_in_every_function(broker, url, secret):
    template = load_template(ROOT / "template.yaml", parameter_overrides={"Broker": broker}, region=REGION)
    for function in template.functions.values():
        assert function.environment["BROKER"] == broker
        assert function.environment["BROKER_BASE_URL"] == url, function.logical_id
        assert function.environment["BROKER_SECRET_NAME"] == secret, function.logical_id
    streamer = next(iter(template.container_environment.values()))
    assert streamer["BROKER_SECRET_NAME"] == secret
