"""Batch orders API (issue 7): place 1..10 orders all-or-nothing, and read a batch back (the README's API section).

POST /api/v1/batchorders                      the batch API's request (see bracketflow.schemas.batch)
POST /accounts/{account_id}/batch-orders      the API's alias; the path account must be the caller's own
GET  /api/v1/batches/{batch_id}               the batch, its legs and its audit events

A final batch answers 200; one still running answers 202 with batch_status IN_PROGRESS or ROLLING_BACK (poll the
GET). With "wait": true the POST holds the answer up to BATCH_WAIT_SECONDS for the final result.
A resend with the same client_batch_id (or Idempotency-Key header) answers the first batch, 200/202 as its state
says, with "duplicate": true; the same key with a different batch answers 409 and records nothing.
Auth and the error envelope are the REST API's own (bracketflow.services.accounts, bracketflow.schemas.http).
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths

from bracketflow.observability import logger, metrics, tracer
from bracketflow.schemas.batch import BatchOrderRequest, legs_as_dicts
from bracketflow.schemas.http import error_responses, make_resolver, success
from bracketflow.services import batch
from bracketflow.services.accounts import authenticate_api_key

app = make_resolver(
    "bracketflow batch orders API", "Multi-leg orders placed together, rolled back on failure.", swagger=False
)  # API Gateway routes /swagger to the REST API's function only
ApiKeyHeader = Annotated[str | None, Header(alias="X-API-KEY", description="The account's API key")]
IdempotencyHeader = Annotated[
    str | None,
    Header(alias="Idempotency-Key", max_length=128, description="The batch's idempotency key (as client_batch_id)"),
]
_POST_RESPONSES: dict[int, OpenAPIResponse] = {
    200: {"description": "The batch is final (PLACED, PARTIAL, ROLLED_BACK or FAILED)"},
    202: {"description": "Accepted and still running (IN_PROGRESS or ROLLING_BACK): poll GET /api/v1/batches/{id}"},
    **error_responses(400, 401, 404, 409, 429, 503),
}


def _answer(view: dict[str, Any]) -> Response[dict]:
    return success(view, status_code=200 if batch.is_final(view) else 202)


@app.post("/api/v1/batchorders", summary="Place a batch of orders", responses=_POST_RESPONSES)
def place_batch_orders(
    body: Annotated[BatchOrderRequest, Body()],
    x_api_key: ApiKeyHeader = None,
    idempotency_key: IdempotencyHeader = None,
) -> Response[dict]:
    caller = authenticate_api_key(x_api_key or body.apikey)
    client_batch_id = batch.parse_client_batch_id(body.client_batch_id, idempotency_key)
    view = batch.place_batch(
        caller, legs_as_dicts(body), body.rollback_on_failure, wait=body.wait, client_batch_id=client_batch_id
    )
    return _answer(view)


@app.post(
    "/accounts/<account_id>/batch-orders",
    summary="Place a batch of orders (the API's path)",
    responses=_POST_RESPONSES,
)
def place_account_batch_orders(
    account_id: Annotated[str, Path(max_length=64)],
    body: Annotated[BatchOrderRequest, Body()],
    x_api_key: ApiKeyHeader = None,
    idempotency_key: IdempotencyHeader = None,
) -> Response[dict]:
    caller = authenticate_api_key(x_api_key or body.apikey)
    client_batch_id = batch.parse_client_batch_id(body.client_batch_id, idempotency_key)
    view = batch.place_batch(
        caller,
        legs_as_dicts(body),
        body.rollback_on_failure,
        wait=body.wait,
        account_id=account_id,
        client_batch_id=client_batch_id,
    )
    return _answer(view)


@app.get(
    "/api/v1/batches/<batch_id>",
    summary="A batch, its legs and its audit trail",
    responses={
        200: {"description": "The batch is final"},
        202: {"description": "The batch is still running"},
        **error_responses(400, 401, 404, 503),
    },
)
def get_batch(batch_id: Annotated[str, Path(max_length=64)], x_api_key: ApiKeyHeader = None) -> Response[dict]:
    caller = authenticate_api_key(x_api_key)
    return success(batch.get_batch(caller, batch_id, with_events=True))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
