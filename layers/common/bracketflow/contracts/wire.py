"""What every wire contract shares: its timestamps and reading a message body as a JSON object."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bracketflow.errors import ValidationFailed


def wire_time(at: datetime) -> str:
    """A message's timestamp: UTC ISO-8601 with microseconds and a Z (2026-01-05T04:00:00.123456Z)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def json_object(body: str | bytes, what: str) -> dict[str, Any]:
    """The message body as a JSON object, its numbers exact (a float in the JSON is read as the decimal written);
    ValidationFailed names `what` and what is wrong."""
    try:
        raw = json.loads(body, parse_float=Decimal)
    except ValueError as exc:
        raise ValidationFailed(f"{what} is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValidationFailed(f"{what} must be a JSON object")
    return raw


def compact_json(body: dict[str, Any]) -> str:
    """A message's body as sent: JSON without blanks."""
    return json.dumps(body, separators=(",", ":"))
