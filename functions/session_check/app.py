"""The pre-market session check (a schedule before each session's open): is there a working Kite session?

When there is none: metric BrokerSessionMissing = 1 (its alarm goes to the alarm topic) and a Telegram message with
the login link (LOGIN_URL), once per IST day.
"""

from __future__ import annotations

from typing import Any

from bracketflow.observability import logger, metrics
from bracketflow.services.broker_session import premarket_check
from bracketflow.settings import get_settings


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return premarket_check(login_link=get_settings().broker_login_link)
