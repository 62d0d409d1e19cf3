"""Plain types the intake use cases trade in (accounts, tokens, order-log entries); no AWS, no wire format."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class RiskLimits:
    max_open_brackets: int
    daily_loss_limit: Decimal
    max_order_value: Decimal


@dataclass(frozen=True)
class Account:
    account_id: str
    name: str
    created_at: str
    limits: RiskLimits
    # None = the deployment's default (PLACEMENT_RATE_LIMIT_PER_SECOND).
    placement_rate_per_second: float | None = None
    # The trading capital risk_percent is a percent of; None = DEFAULT_CAPITAL (none set: risk_percent is refused).
    capital: Decimal | None = None


@dataclass(frozen=True)
class Caller:
    """Who is calling: the account, the hash of the credential used (rate limits key on it) and, for a
    webhook token, the one strategy it may place brackets for."""

    account_id: str
    key_hash: str
    strategy: str | None = None


@dataclass(frozen=True)
class WebhookToken:
    token_hash: str
    account_id: str
    strategy: str
    created_at: str
    revoked: bool = False


@dataclass(frozen=True)
class OrderLogEntry:
    account_id: str
    at: str
    request_id: str
    api_type: str
    request: dict[str, Any]
    response: dict[str, Any]
    status_code: int
    extra: dict[str, Any] = field(default_factory=dict)
