"""AWS clients, created lazily on first use and cached for the life of the process (a warm Lambda reuses them).

No client is built at import time: tests start moto first, and the local stack points AWS_ENDPOINT_URL at its
moto server before the first call. `reset_clients()` drops the cache (tests, and the local stack on restart).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import boto3
from botocore.config import Config

from bracketflow.settings import get_settings

_lock = threading.Lock()
_clients: dict[str, Any] = {}
_resources: dict[str, Any] = {}

_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})


def client(service: str) -> Any:
    """A cached boto3 client for `service` in the configured region."""
    found = _clients.get(service)
    if found is not None:
        return found
    with _lock:
        if service not in _clients:
            settings = get_settings()
            _clients[service] = boto3.client(
                service, region_name=settings.region, endpoint_url=settings.aws_endpoint_url, config=_CONFIG
            )
        return _clients[service]


def resource(service: str) -> Any:
    """A cached boto3 resource (DynamoDB tables are easier to use through it)."""
    found = _resources.get(service)
    if found is not None:
        return found
    with _lock:
        if service not in _resources:
            settings = get_settings()
            _resources[service] = boto3.resource(
                service, region_name=settings.region, endpoint_url=settings.aws_endpoint_url, config=_CONFIG
            )
        return _resources[service]


def reset_clients() -> None:
    """Forget every cached client and the cached settings (for tests and local restarts)."""
    with _lock:
        _clients.clear()
        _resources.clear()
    get_settings.cache_clear()


def invoke_async(function_name: str, payload: dict[str, Any]) -> None:
    """Invoke a Lambda function without waiting for it (InvocationType Event: Lambda retries it twice on error)."""
    client("lambda").invoke(FunctionName=function_name, InvocationType="Event", Payload=json.dumps(payload).encode())
