"""Broker adapters: the port services use (port.py), Kite v3 on requests (kite.py; its JSON read in kite_json.py, one
HTTP call in kite_http.py), the login session (session.py).

`get_broker()` builds the configured broker once per settings object: BROKER=kite talks to Kite with the trader's
stored session; BROKER=paper talks to the local paper exchange, which speaks the same Kite v3 API, and is refused
anywhere it could reach the real broker or its credentials (endpoints.check_paper_safety). Order-placing calls take
a slot from the account-wide DynamoDB rate limiter first and leave no later than it allows.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bracketflow.adapters.broker.kite import KiteBroker

_lock = threading.Lock()
_built: tuple[Any, KiteBroker] | None = None

# The paper exchange's default credentials; they stand in when no broker secret exists on the local stack.
PAPER_API_KEY = "paper"
PAPER_ACCESS_TOKEN = "paper-token"


def get_broker() -> KiteBroker:
    """The configured broker, built on first use and kept for the life of the process (and its settings)."""
    global _built
    from bracketflow.settings import get_settings

    settings = get_settings()
    with _lock:
        if _built is None or _built[0] is not settings:
            _built = (settings, _build(settings))
        return _built[1]


def _build(settings: Any) -> KiteBroker:
    from bracketflow.adapters.broker.endpoints import check_paper_safety
    from bracketflow.adapters.broker.kite import KiteBroker
    from bracketflow.adapters.dynamo.ratelimit import OrderRateLimiter

    check_paper_safety(settings)
    credentials = credentials_provider(settings)
    limiter = OrderRateLimiter.from_settings()

    def take_order_token() -> float:
        return limiter.acquire(settings.broker_account, timeout_s=settings.order_rate_wait_s).send_by

    return KiteBroker(
        settings.broker_base_url,
        credentials,
        connect_timeout_s=settings.broker_connect_timeout_s,
        read_timeout_s=settings.broker_timeout_s,
        max_attempts=settings.broker_max_attempts,
        market_protection=settings.broker_market_protection,
        lookup_pause_s=settings.broker_lookup_pause_s,
        lookup_window_s=settings.broker_lookup_window_s,
        order_throttle=take_order_token,
    )


def credentials_provider(settings: Any) -> Any:
    """read_credentials for kite; for paper, the paper secret's session when someone logged in, else the fixed one."""
    from bracketflow.adapters.broker.kite_http import KiteCredentials
    from bracketflow.adapters.broker.session import read_credentials

    if settings.broker == "kite":
        return read_credentials
    return _paper_credentials(read_credentials, KiteCredentials(PAPER_API_KEY, PAPER_ACCESS_TOKEN))


def _paper_credentials(read: Any, fallback: Any) -> Any:
    """Paper mode uses the stored secret when there is one (to rehearse the login flow), else fixed paper ones.

    That there is no secret is remembered as long as a read secret would be (BROKER_CREDENTIALS_CACHE_S), or until a
    refused token asks to read again: otherwise every order asked Secrets Manager again, and a burst of entries spent
    a failing call per broker request."""
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

    from bracketflow.errors import SessionExpired
    from bracketflow.settings import get_settings

    absent_since: list[float] = []

    def provide(refresh: bool = False) -> Any:
        remembered = absent_since and time.monotonic() - absent_since[0] < get_settings().broker_credentials_cache_s
        if remembered and not refresh:
            return fallback
        try:
            found = read(refresh)
        except GetParameterError as exc:
            if "ResourceNotFoundException" not in str(exc):
                raise
            absent_since[:] = [time.monotonic()]
            return fallback
        except SessionExpired:  # the paper secret holds the app's key but nobody has logged in yet
            return fallback
        absent_since.clear()
        return found

    return provide
