"""The WebSocket API's one function: routes $connect, $disconnect, subscribe, unsubscribe, ping and $default.

$connect needs the account's API key (query string `apikey` or header X-API-KEY); a refused connect answers 401 and
API Gateway closes the socket. Message routes answer through their route response (the body goes back to the client).
"""

from __future__ import annotations

import json
from typing import Any

from bracketflow.errors import Unauthorized
from bracketflow.observability import logger, metrics
from bracketflow.services import notify


def _answer(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "body": json.dumps(body)}


def _api_key(event: dict[str, Any]) -> str | None:
    query = event.get("queryStringParameters") or {}
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    return query.get("apikey") or headers.get("x-api-key")


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    ctx = event.get("requestContext") or {}
    route, connection_id = ctx.get("routeKey"), str(ctx.get("connectionId") or "")
    if route == "$connect":
        try:
            account = notify.connect(connection_id, _api_key(event), (ctx.get("identity") or {}).get("sourceIp"))
        except Unauthorized as exc:
            return _answer(401, {"status": "error", "message": exc.message})
        return _answer(200, {"status": "connected", "account_id": account})
    if route == "$disconnect":
        notify.disconnect(connection_id)
        return _answer(200, {"status": "disconnected"})
    try:
        body = json.loads(event.get("body") or "")
    except ValueError:
        body = None
    return _answer(200, notify.on_message(connection_id, body))
