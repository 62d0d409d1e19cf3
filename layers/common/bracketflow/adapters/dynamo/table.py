"""The one DynamoDB table (single-table design, see records.py), reached lazily through the shared client cache."""

from __future__ import annotations

from typing import Any

from bracketflow.adapters.aws import resource
from bracketflow.settings import get_settings


def table() -> Any:
    return resource("dynamodb").Table(get_settings().table_name)


def ddb() -> Any:
    """The resource's client: same Python-typed values as the Table, plus TransactWriteItems."""
    return resource("dynamodb").meta.client


def table_name() -> str:
    return get_settings().table_name
