"""Settings, read from the environment in this one place, built once and lazily.

Small mixins compose the settings each component needs; nothing else in the code reads os.environ.
"""

from __future__ import annotations

import os
from decimal import Decimal
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field


class _Base(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class AwsSettings(_Base):
    region: str = Field("ap-south-1", alias="AWS_DEFAULT_REGION")
    # Set only on the local stack: every AWS client goes to the moto server there.
    aws_endpoint_url: str | None = Field(None, alias="AWS_ENDPOINT_URL")


class StoreSettings(_Base):
    table_name: str = Field("bracketflow-brackets", alias="TABLE_NAME")
    idempotency_table_name: str = Field("bracketflow-idempotency", alias="IDEMPOTENCY_TABLE_NAME")


class BrokerSettings(_Base):
    broker: str = Field("paper", alias="BROKER")
    broker_base_url: str = Field("http://127.0.0.1:8700", alias="BROKER_BASE_URL")
    broker_ticker_url: str = Field("ws://127.0.0.1:8700/ws", alias="BROKER_TICKER_URL")
    broker_secret_name: str = Field("bracketflow/broker", alias="BROKER_SECRET_NAME")
    broker_timeout_s: float = Field(5.0, alias="BROKER_TIMEOUT_S")
    order_rate_per_second: int = Field(8, alias="ORDER_RATE_LIMIT_PER_SECOND")
    order_rate_per_minute: int = Field(350, alias="ORDER_RATE_LIMIT_PER_MINUTE")
    # broker_timeout_s is the read timeout; connecting should be quick or not at all.
    broker_connect_timeout_s: float = Field(3.05, alias="BROKER_CONNECT_TIMEOUT_S")
    broker_max_attempts: int = Field(4, alias="BROKER_MAX_ATTEMPTS")
    # Percent band Kite applies to MARKET / SL-M orders (required from April 2026); -1 lets Kite choose.
    broker_market_protection: Decimal = Field(Decimal("5"), alias="BROKER_MARKET_PROTECTION")
    # Pause before re-checking the order book for a placement whose answer was lost.
    broker_lookup_pause_s: float = Field(0.5, alias="BROKER_LOOKUP_PAUSE_S")
    # Name of the account-wide order rate bucket every order-placing Lambda shares.
    broker_account: str = Field("primary", alias="BROKER_ACCOUNT")
    order_rate_wait_s: float = Field(5.0, alias="ORDER_RATE_LIMIT_WAIT_S")
    broker_credentials_cache_s: int = Field(300, alias="BROKER_CREDENTIALS_CACHE_S")


class BracketSettings(_Base):
    bracket_order_delay_s: float = Field(0.5, alias="BRACKET_ORDER_DELAY")
    placement_rate_per_second: float = Field(2.0, alias="PLACEMENT_RATE_LIMIT_PER_SECOND")
    default_tick_size: Decimal = Field(Decimal("0.05"), alias="DEFAULT_TICK_SIZE")


class IntakeSettings(_Base):
    """REST/TradingView intake: workflow start, API-key pepper, duplicate windows, source-IP allow-list."""

    # Empty until the bracket workflow is wired; registration then records the start as pending (recoverable).
    bracket_state_machine_arn: str = Field("", alias="BRACKET_STATE_MACHINE_ARN")
    api_key_pepper_secret_name: str = Field("bracketflow/api-key-pepper", alias="API_KEY_PEPPER_SECRET_NAME")
    alert_dedupe_window_s: int = Field(300, alias="ALERT_DEDUPE_WINDOW_SECONDS")
    client_order_id_window_s: int = Field(86400, alias="CLIENT_ORDER_ID_WINDOW_SECONDS")
    order_log_retention_days: int = Field(30, alias="ORDER_LOG_RETENTION_DAYS")
    # Comma-separated; empty = accept alerts from any source address.
    tradingview_allowed_ips: str = Field("", alias="TRADINGVIEW_ALLOWED_IPS")
    default_max_open_brackets: int = Field(10, alias="DEFAULT_MAX_OPEN_BRACKETS")
    default_daily_loss_limit: Decimal = Field(Decimal("5000"), alias="DEFAULT_DAILY_LOSS_LIMIT")
    default_max_order_value: Decimal = Field(Decimal("500000"), alias="DEFAULT_MAX_ORDER_VALUE")


class BatchSettings(_Base):
    """Batch orders (issue 7): the saga's state machine and how long POST {"wait": true} may hold the answer."""

    batch_state_machine_arn: str = Field("", alias="BATCH_STATE_MACHINE_ARN")
    batch_wait_s: float = Field(5.0, alias="BATCH_WAIT_SECONDS")


class Settings(BatchSettings, AwsSettings, StoreSettings, BrokerSettings, BracketSettings, IntakeSettings):
    stage: str = Field("local", alias="STAGE")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.model_validate(dict(os.environ))
