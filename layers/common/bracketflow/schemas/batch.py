"""Wire models of batch orders (the batch API): the request Powertools validates, and the saga's task messages.

POST /api/v1/batchorders (and POST /accounts/{account_id}/batch-orders):
  {"orders": [<1..10 legs>], "rollback_on_failure": true, "wait": false, "apikey": "..." (or X-API-KEY),
   "client_batch_id": "..." (optional idempotency key, or the Idempotency-Key header)}
A leg: tradingsymbol, exchange, transaction_type, quantity (UNITS, a multiple of the lot size, as Kite takes it),
order_type (LIMIT, MARKET, SL, SL-M), product (MIS, CNC, NRML), price (LIMIT/SL), trigger_price (SL/SL-M),
validity (DAY default). The model checks shapes and bounds; bracketflow.services.batch.validate_leg checks the
trading rules (instrument master, lot, tick, product for the segment) and names the leg and field on failure.

Saga task events (statemachine/batch.asl.json -> functions/*/app.py):
  PlaceBatchLeg, RollbackBatchLeg:  {"batch_id": "bt_...", "leg": 1..10}
  FinishBatch:  {"step": "settle", "batch_id", "outcomes": [<PlaceBatchLeg results or {"leg", "error"}>]}
                {"step": "finish", "batch_id", "outcomes": [<RollbackBatchLeg results or {"leg", "error"}>]}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bracketflow.schemas.bracket import MAX_QUANTITY, Price

MAX_LEGS = 10
Text = Annotated[str, Field(min_length=1, max_length=64)]


class BatchLegIn(BaseModel):
    """One order of the batch, in the API's (and Kite's) field names."""

    model_config = ConfigDict(extra="forbid")

    tradingsymbol: Text = Field(description="Kite tradingsymbol, e.g. NIFTY26DEC23500PE")
    exchange: Text = Field(description="NSE, BSE, NFO, MCX, NCDEX or CDS")
    transaction_type: Text = Field(description="BUY or SELL (any case)")
    quantity: Annotated[int, Field(gt=0, le=MAX_QUANTITY, description="Units (a multiple of the lot size)")]
    order_type: Text = Field(description="LIMIT, MARKET, SL or SL-M")
    product: Text = Field(description="MIS, CNC (cash equity) or NRML (derivatives)")
    price: Price | None = Field(None, description="Required for LIMIT and SL, not allowed for MARKET and SL-M")
    trigger_price: Price | None = Field(None, description="Required for SL and SL-M")
    validity: str = Field("DAY", max_length=8, description="DAY (default) or IOC")


class BatchOrderRequest(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "example": {
                "orders": [
                    {
                        "tradingsymbol": "NIFTY26DEC23500PE",
                        "exchange": "NFO",
                        "transaction_type": "BUY",
                        "quantity": 75,
                        "order_type": "MARKET",
                        "product": "NRML",
                    }
                ],
                "rollback_on_failure": True,
                "wait": True,
            }
        },
    )

    apikey: str | None = Field(None, max_length=1024, description="The account's API key (or the X-API-KEY header)")
    orders: list[BatchLegIn] = Field(min_length=1, max_length=MAX_LEGS, description="1 to 10 orders")
    rollback_on_failure: bool = Field(
        True, description="If any order fails: cancel the open ones and square off the filled ones, in reverse"
    )
    wait: bool = Field(False, description="Hold the answer (up to BATCH_WAIT_SECONDS) until the batch is final")
    client_batch_id: str | None = Field(
        None,
        max_length=128,
        description="Idempotency key (or the Idempotency-Key header): a resend of the same batch with it answers the"
        " first batch with duplicate: true; the same key with a different batch is refused 409",
    )


class LegTask(BaseModel):
    model_config = ConfigDict(extra="ignore")
    batch_id: Annotated[str, Field(min_length=4, max_length=64)]
    leg: Annotated[int, Field(ge=1, le=MAX_LEGS)]


class FinishTask(BaseModel):
    model_config = ConfigDict(extra="ignore")
    step: Literal["settle", "finish"]
    batch_id: Annotated[str, Field(min_length=4, max_length=64)]
    outcomes: list[dict[str, Any]] = Field(default_factory=list)


def legs_as_dicts(request: BatchOrderRequest) -> list[dict[str, Any]]:
    """The legs as plain mappings for the service's trading-rule checks."""
    return [leg.model_dump() for leg in request.orders]
