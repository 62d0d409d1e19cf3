"""Telegram Bot API client (sendMessage only) and the bot's credentials.

Credentials: a Secrets Manager secret (TELEGRAM_SECRET_NAME) or an SSM SecureString (TELEGRAM_PARAMETER_NAME) whose
value is JSON {"bot_token": "...", "chat_id": "..."}; cached in memory for a few minutes, never logged.
Wire: POST <base>/bot<token>/sendMessage with chat_id, text, parse_mode; answers {"ok": true, "result": {...}} or
{"ok": false, "error_code": 429, "description": "...", "parameters": {"retry_after": 3}}.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests

from bracketflow.adapters.aws import client
from bracketflow.settings import get_settings

_CACHE_S = 300.0
_lock = threading.Lock()
_cached: tuple[TelegramCredentials | None, float] | None = None


@dataclass(frozen=True)
class TelegramCredentials:
    bot_token: str
    chat_id: str

    def __repr__(self) -> str:  # the token must never reach a log line
        return f"TelegramCredentials(chat_id={self.chat_id!r}, bot_token=***)"


class TelegramError(Exception):
    """The Bot API refused or could not be reached. retry_after is set for 429 Too Many Requests."""

    def __init__(self, error_code: int | None, description: str, retry_after: float | None = None):
        super().__init__(f"{error_code}: {description}")
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after


def credentials() -> TelegramCredentials | None:
    """The bot token and chat id, or None when Telegram is not configured (or its secret holds no token)."""
    global _cached
    found = _cached
    if found is not None and time.monotonic() - found[1] < _CACHE_S:
        return found[0]
    with _lock:
        creds = _read()
        _cached = (creds, time.monotonic())
        return creds


def reset_credentials_cache() -> None:
    global _cached
    with _lock:
        _cached = None


def _read() -> TelegramCredentials | None:
    settings = get_settings()
    if settings.telegram_secret_name:
        raw = client("secretsmanager").get_secret_value(SecretId=settings.telegram_secret_name)["SecretString"]
    elif settings.telegram_parameter_name:
        raw = client("ssm").get_parameter(Name=settings.telegram_parameter_name, WithDecryption=True)["Parameter"][
            "Value"
        ]
    else:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    token, chat = str(data.get("bot_token") or "").strip(), str(data.get("chat_id") or "").strip()
    return TelegramCredentials(token, chat) if token and chat else None


def send_message(creds: TelegramCredentials, text: str, parse_mode: str | None = "HTML") -> dict[str, Any]:
    """sendMessage; returns the sent message (`result`) or raises TelegramError."""
    settings = get_settings()
    url = f"{settings.telegram_api_base_url.rstrip('/')}/bot{creds.bot_token}/sendMessage"
    body: dict[str, Any] = {"chat_id": creds.chat_id, "text": text, "disable_web_page_preview": True}
    if parse_mode:
        body["parse_mode"] = parse_mode
    try:
        answer = requests.post(url, json=body, timeout=(2.0, settings.telegram_timeout_s))
    except requests.RequestException as exc:
        raise TelegramError(None, f"unreachable: {type(exc).__name__}") from None  # the URL holds the token
    try:
        data = answer.json()
    except ValueError:
        raise TelegramError(answer.status_code, f"not JSON (HTTP {answer.status_code})") from None
    if answer.status_code == 200 and isinstance(data, dict) and data.get("ok"):
        return dict(data.get("result") or {})
    data = data if isinstance(data, dict) else {}
    retry_after = (data.get("parameters") or {}).get("retry_after")
    raise TelegramError(
        int(data.get("error_code") or answer.status_code),
        str(data.get("description") or f"HTTP {answer.status_code}"),
        float(retry_after) if retry_after is not None else None,
    )
