"""One Kite Connect HTTP call: the credentials it carries, its timeouts and trace, and the answer's envelope or a
named error (a connection that never opened told apart: the broker cannot have acted)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import requests
from urllib3.exceptions import NewConnectionError

from bracketflow.adapters.broker.kite_json import error_from_response
from bracketflow.errors import BrokerRateLimited, BrokerTimeout, BrokerUnavailable
from bracketflow.observability import subsegment

KITE_VERSION = "3"


@dataclass(frozen=True)
class KiteCredentials:
    api_key: str
    access_token: str

    def __repr__(self) -> str:  # never print the token
        return f"KiteCredentials(api_key={self.api_key!r}, access_token=***)"


# Called with refresh=False for the cached credentials, refresh=True after a TokenException (the trader may have
# logged in again since this warm Lambda cached them).
CredentialsProvider = Callable[[bool], KiteCredentials]


def static_credentials(api_key: str, access_token: str) -> CredentialsProvider:
    creds = KiteCredentials(api_key, access_token)

    def provide(refresh: bool = False) -> KiteCredentials:
        return creds

    return provide


class BrokerUnreachable(BrokerUnavailable):
    """The connection never opened: the broker cannot have acted, so even a placement may be repeated. Its name is
    what a task reports when the retries run out (the workflows retry it like BrokerUnavailable)."""


_NeverSent = BrokerUnreachable


def _never_sent(exc: requests.RequestException) -> bool:
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        reason: Any = exc.args[0] if exc.args else None
        reason = getattr(reason, "reason", reason)
        return isinstance(reason, NewConnectionError)
    return False


def send_kite_request(
    session: requests.Session,
    method: str,
    url: str,
    headers: dict[str, str],
    timeout: tuple[float, float],
    form: dict[str, str] | None = None,
    query: dict[str, Any] | None = None,
) -> Any:
    """One Kite HTTP call: the envelope's `data`, or a named BrokerError. Shared with the login exchange.

    Traced (when tracing is on) as a subsegment "kite" annotated with the method and path, never the query or token."""
    try:
        with subsegment("kite", method=method, path=path_of(url)):
            response = session.request(method, url, data=form, params=query, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        if _never_sent(exc):
            raise _NeverSent(f"could not connect to the broker: {type(exc).__name__}") from exc
        if isinstance(exc, requests.Timeout):
            raise BrokerTimeout(f"the broker did not answer {method} {path_of(url)} in time") from exc
        raise BrokerUnavailable(
            f"broker connection failed during {method} {path_of(url)}: {type(exc).__name__}"
        ) from exc
    try:
        body: Any = json.loads(response.text, parse_float=Decimal)
    except ValueError:
        body = response.text[:200]
    if response.status_code >= 400 or not isinstance(body, dict) or body.get("status") != "success":
        error = error_from_response(response.status_code if response.status_code >= 400 else 500, body)
        if isinstance(error, BrokerRateLimited):
            setattr(error, "retry_after_s", _retry_after(response.headers.get("Retry-After")))  # noqa: B010
        raise error
    return body.get("data")


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def path_of(url: str) -> str:
    return "/" + url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
