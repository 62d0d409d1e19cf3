"""The Kite session: the trader's daily login, and where the credentials live.

One Secrets Manager secret (settings.broker_secret) holds JSON {"api_key", "api_secret", "access_token",
"user_id", "login_time"}. The trader creates it with api_key and api_secret; the login callback trades Kite's
one-time request_token for the day's access_token (`exchange_request_token`) and stores it there. Lambdas read it
through Powertools parameters with an in-memory cache (settings.broker_credentials_cache_s), and read it again at
once when Kite says the token they hold is no longer valid — the trader may have logged in since. Access tokens
expire at 06:00 IST every day. Nothing here logs a token or a secret.
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime
from typing import Any

import requests
from aws_lambda_powertools.utilities.parameters import SecretsProvider

from bracketflow.adapters.aws import client
from bracketflow.adapters.broker.endpoints import check_paper_safety
from bracketflow.adapters.broker.kite_http import KITE_VERSION, KiteCredentials, send_kite_request
from bracketflow.adapters.broker.kite_json import IST
from bracketflow.errors import BrokerError, SessionExpired
from bracketflow.observability import logger
from bracketflow.settings import get_settings

NO_SESSION = "there is no Kite session yet — log in to Kite to start one"
BAD_REQUEST_TOKEN = "Kite refused the login (the request_token is invalid or already used) — log in again"

_lock = threading.Lock()
_provider: tuple[Any, SecretsProvider] | None = None


def checksum(api_key: str, request_token: str, api_secret: str) -> str:
    """Kite's login checksum: SHA-256 of api_key + request_token + api_secret, in hex."""
    return hashlib.sha256((api_key + request_token + api_secret).encode()).hexdigest()


def _secrets() -> SecretsProvider:
    """One provider (and its cache) per boto3 client, so a test's fresh moto never sees an old cache."""
    global _provider
    sm = client("secretsmanager")
    with _lock:
        if _provider is None or _provider[0] is not sm:
            _provider = (sm, SecretsProvider(boto3_client=sm))
        return _provider[1]


def read_secret(refresh: bool = False) -> dict[str, Any]:
    """The broker secret's JSON; refused before any read when paper mode could reach real credentials."""
    settings = get_settings()
    check_paper_safety(settings)
    value = _secrets().get(
        settings.broker_secret,
        transform="json",
        max_age=settings.broker_credentials_cache_s,
        force_fetch=refresh,
    )
    if not isinstance(value, dict):
        raise BrokerError(f"broker secret {settings.broker_secret!r} is not a JSON object")
    return value


def read_secret_now() -> dict[str, Any]:
    """The broker secret's JSON straight from Secrets Manager, no cache: for the login, its check and /health,
    which run rarely and must see the latest session. ResourceNotFound and the like come as botocore ClientError."""
    settings = get_settings()
    check_paper_safety(settings)
    raw = client("secretsmanager").get_secret_value(SecretId=settings.broker_secret)["SecretString"]
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise BrokerError(f"broker secret {settings.broker_secret!r} is not a JSON object")
    return value


def read_credentials(refresh: bool = False) -> KiteCredentials:
    """The api_key and today's access_token; SessionExpired when nobody has logged in yet."""
    secret = read_secret(refresh)
    if not secret.get("api_key"):
        raise BrokerError(f"broker secret {get_settings().broker_secret!r} has no api_key")
    if not secret.get("access_token"):
        raise SessionExpired(NO_SESSION)
    return KiteCredentials(api_key=str(secret["api_key"]), access_token=str(secret["access_token"]))


def exchange_request_token(
    request_token: str,
    *,
    http: requests.Session | None = None,
    now: datetime | None = None,
) -> dict[str, str]:
    """Trade the login redirect's request_token for an access_token, store it in the secret, return the session.

    Returns {"user_id", "login_time"} (never the token). A refused token raises SessionExpired with a clear message.
    """
    settings = get_settings()
    secret = read_secret_now()
    api_key, api_secret = secret.get("api_key"), secret.get("api_secret")
    if not api_key or not api_secret:
        raise BrokerError(f"broker secret {settings.broker_secret!r} needs api_key and api_secret to log in")
    form = {
        "api_key": str(api_key),
        "request_token": request_token,
        "checksum": checksum(str(api_key), request_token, str(api_secret)),
    }
    try:
        data = send_kite_request(
            http or requests.Session(),
            "POST",
            settings.broker_base_url.rstrip("/") + "/session/token",
            {"X-Kite-Version": KITE_VERSION},
            (settings.broker_connect_timeout_s, settings.broker_timeout_s),
            form,
        )
    except SessionExpired as exc:
        raise SessionExpired(BAD_REQUEST_TOKEN, http_status=exc.http_status, error_type=exc.error_type) from exc
    if not isinstance(data, dict) or not data.get("access_token"):
        raise BrokerError("Kite's login answer carried no access_token")
    login_time = str(data.get("login_time") or (now or datetime.now(IST)).strftime("%Y-%m-%d %H:%M:%S"))
    stored = {
        **secret,
        "access_token": str(data["access_token"]),
        "user_id": str(data.get("user_id") or ""),
        "login_time": login_time,
    }
    client("secretsmanager").put_secret_value(SecretId=settings.broker_secret, SecretString=json.dumps(stored))
    _secrets().clear_cache()
    logger.info("Kite session started", extra={"user_id": stored["user_id"], "login_time": login_time})
    return {"user_id": stored["user_id"], "login_time": login_time}


def verify_session(http: requests.Session | None = None) -> str:
    """The logged-in user id if the stored session works; SessionExpired ("log in again") if not."""
    settings = get_settings()
    secret = read_secret_now()
    if not secret.get("api_key") or not secret.get("access_token"):
        raise SessionExpired(NO_SESSION)
    creds = KiteCredentials(api_key=str(secret["api_key"]), access_token=str(secret["access_token"]))
    data = send_kite_request(
        http or requests.Session(),
        "GET",
        settings.broker_base_url.rstrip("/") + "/user/profile",
        {"X-Kite-Version": KITE_VERSION, "Authorization": f"token {creds.api_key}:{creds.access_token}"},
        (settings.broker_connect_timeout_s, settings.broker_timeout_s),
    )
    return str((data or {}).get("user_id") or "")
