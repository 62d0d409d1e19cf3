"""Wire models of a strategy's own signals on the REST API: close a position, flatten the account.

TradingView sends the same signals as alerts to the webhook (services/signals.py reads those by hand, like bracket
alerts); these models type the REST bodies and document them in the OpenAPI document.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ClosePositionRequest(BaseModel):
    """Close a strategy's open brackets: on one symbol (close/exit, closelong, closeshort), or all (closeall)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "example": {"action": "close", "symbol": "NSE:INFY", "strategy": "breakout", "client_order_id": "bo-exit-7"}
        },
    )

    apikey: str | None = Field(None, max_length=1024, description="The account's API key (or the X-API-KEY header)")
    action: Literal[
        "close", "exit", "closelong", "closeshort", "closeall", "CLOSE", "EXIT", "CLOSELONG", "CLOSESHORT", "CLOSEALL"
    ] = Field(
        description="close/exit: the strategy's brackets on the symbol; closelong/closeshort: only its BUY/SELL "
        "brackets there; closeall: every open bracket of the strategy, or of the account when no strategy is given"
    )
    symbol: str | None = Field(
        None, max_length=64, description="Tradingsymbol (or NSE:INFY); required except for closeall"
    )
    exchange: str | None = Field(None, max_length=8, description="Optional: only brackets on this exchange")
    strategy: str | None = Field(
        None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="The strategy (default: 'default')"
    )
    client_order_id: str | None = Field(None, max_length=128, description="Idempotency key: a resend does nothing more")


class FlattenRequest(BaseModel):
    """Flatten the whole account now (the kill switch by hand)."""

    model_config = ConfigDict(extra="ignore")

    apikey: str | None = Field(None, max_length=1024, description="The account's API key (or the X-API-KEY header)")
    reason: str | None = Field(None, max_length=200, description="Why, for the audit trail and the Telegram notice")
