"""GET /health on the deployed API: the API is up, which stage and broker it serves, and the broker session's state.

The session comes from the broker secret alone (no broker call): "valid" with its expiry (06:00 IST), "expired", or
"none" when nobody has logged in. Public, so it shows neither the token nor the user id.
"""

from __future__ import annotations

import json
from typing import Any

from bracketflow.errors import BrokerMisconfigured
from bracketflow.services.broker_session import session_status
from bracketflow.settings import get_settings


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = get_settings()
    try:
        broker_session: dict[str, Any] = {**session_status().as_dict(), "login": "/broker/login"}
    except BrokerMisconfigured as exc:
        broker_session = {"state": "misconfigured", "error": exc.message}
    body = {
        "status": "ok",
        "components": {"api": "up"},
        "stage": settings.stage,
        "broker": settings.broker,
        "broker_session": broker_session,
    }
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}
