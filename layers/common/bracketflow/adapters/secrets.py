"""The API-key pepper, from Secrets Manager, cached in memory (a warm Lambda reads it once per few minutes).

API keys and webhook tokens are stored only as HMAC-SHA256(pepper, key): a leaked table alone does not let
anyone test guessed keys offline. The pepper never appears in logs or environment variables.
On the local stack (STAGE=local) a missing pepper secret is created with a random value, so a fresh moto
starts working without a setup step; in AWS the template creates it (PepperSecret).
"""

from __future__ import annotations

import secrets
import threading
import time

from botocore.exceptions import ClientError

from bracketflow.adapters.aws import client
from bracketflow.settings import get_settings

_CACHE_SECONDS = 300.0
_lock = threading.Lock()
_cached: tuple[bytes, float] | None = None


def get_pepper() -> bytes:
    """The pepper bytes; raises RuntimeError when the secret is missing outside the local stack."""
    global _cached
    found = _cached
    if found is not None and time.monotonic() - found[1] < _CACHE_SECONDS:
        return found[0]
    with _lock:
        pepper = _read_or_create()
        _cached = (pepper, time.monotonic())
        return pepper


def reset_pepper_cache() -> None:
    """Forget the cached pepper (tests start a fresh moto, the local stack restarts)."""
    global _cached
    with _lock:
        _cached = None


def _read_or_create() -> bytes:
    settings = get_settings()
    sm = client("secretsmanager")
    try:
        value = sm.get_secret_value(SecretId=settings.api_key_pepper_secret_name)["SecretString"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException" or settings.stage != "local":
            raise RuntimeError(f"API key pepper secret {settings.api_key_pepper_secret_name!r} is unreadable") from exc
        value = secrets.token_hex(32)
        try:
            sm.create_secret(Name=settings.api_key_pepper_secret_name, SecretString=value)
        except ClientError as race:
            if race.response["Error"]["Code"] != "ResourceExistsException":
                raise
            value = sm.get_secret_value(SecretId=settings.api_key_pepper_secret_name)["SecretString"]
    return value.encode()
