"""Pushing to WebSocket clients through API Gateway's @connections management API (post_to_connection).

The endpoint is WEBSOCKET_MANAGEMENT_URL: https://<api-id>.execute-api.<region>.amazonaws.com/<stage> in AWS, the
local WebSocket server (local/websocket_api.py) on the local stack. The client is built lazily, once per endpoint.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from bracketflow.settings import get_settings

_CONFIG = Config(connect_timeout=2, read_timeout=3, retries={"mode": "standard", "max_attempts": 2})
_lock = threading.Lock()
_clients: dict[str, Any] = {}


class ConnectionGone(Exception):
    """The client has disconnected (API Gateway answers 410 Gone): forget the connection."""


class PushFailed(Exception):
    """The push did not go out for another reason (throttled, endpoint unreachable); the connection may live."""


def enabled() -> bool:
    return bool(get_settings().websocket_management_url)


def _client() -> Any:
    settings = get_settings()
    url = settings.websocket_management_url
    with _lock:
        found = _clients.get(url)
        if found is None:
            found = _clients[url] = boto3.client(
                "apigatewaymanagementapi", endpoint_url=url, region_name=settings.region, config=_CONFIG
            )
        return found


def post(connection_id: str, message: dict[str, Any]) -> None:
    """Send one JSON message to one connection; ConnectionGone or PushFailed when it did not arrive."""
    data = json.dumps(message, separators=(",", ":"), default=str).encode()
    try:
        _client().post_to_connection(ConnectionId=connection_id, Data=data)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "GoneException" or status == 410:
            raise ConnectionGone(connection_id) from exc
        raise PushFailed(f"{code or status}: {exc}") from exc
    except BotoCoreError as exc:
        raise PushFailed(type(exc).__name__) from exc
