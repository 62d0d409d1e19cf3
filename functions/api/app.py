"""REST API: place a bracket, read it, cancel it, the order book and the order log (the README's API section).

Thin: each route authenticates, calls one service function and shapes the answer; errors are mapped in
bracketflow.schemas.http. The OpenAPI document is at /swagger?format=json, Swagger UI at /swagger.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.logging import correlation_paths

from bracketflow.errors import ValidationFailed
from bracketflow.observability import logger, metrics, tracer
from bracketflow.schemas.bracket import PlaceBracketOrderRequest
from bracketflow.schemas.http import error_responses, make_resolver, success
from bracketflow.schemas.signals import ClosePositionRequest, FlattenRequest
from bracketflow.services import cancel_bracket as cancelling
from bracketflow.services import intake, kill_switch, orderbook
from bracketflow.services.accounts import authenticate_api_key

app = make_resolver("bracketflow REST API", "Bracket orders with trailing stop-losses (paper or Kite).")
ApiKeyHeader = Annotated[str | None, Header(alias="X-API-KEY", description="The account's API key")]


@app.post(
    "/api/v1/placebracketorder",
    summary="Place a bracket order",
    responses={200: {"description": "Registered (or a resend of an earlier request)"}, **error_responses()},
)
def place_bracket_order(
    body: Annotated[PlaceBracketOrderRequest, Body()], x_api_key: ApiKeyHeader = None
) -> Response[dict]:
    event = app.current_event
    return success(intake.place_from_rest(body, x_api_key, event.json_body, event.request_context.request_id))


@app.get(
    "/api/v1/brackets/<bracket_id>",
    summary="A bracket, its current stop and its audit trail",
    responses={200: {"description": "The bracket (data)"}, **error_responses(400, 401, 404, 503)},
)
def get_bracket(bracket_id: Annotated[str, Path(max_length=64)], x_api_key: ApiKeyHeader = None) -> Response[dict]:
    caller = authenticate_api_key(x_api_key)
    return success({"data": orderbook.get_bracket(caller, bracket_id)})


@app.get(
    "/api/v1/brackets/<bracket_id>/prices",
    summary="The market price of the bracket's instrument over its life (for charts)",
    responses={200: {"description": "The prices (data)"}, **error_responses(400, 401, 404, 503)},
)
def get_bracket_prices(
    bracket_id: Annotated[str, Path(max_length=64)], x_api_key: ApiKeyHeader = None
) -> Response[dict]:
    caller = authenticate_api_key(x_api_key)
    return success({"data": orderbook.bracket_prices(caller, bracket_id)})


@app.delete(
    "/api/v1/brackets/<bracket_id>",
    summary="Cancel the entry, or exit the position",
    description="202 with the bracket's status and what will happen (action ENTRY_NOT_SENT, CANCEL_ENTRY or "
    "EXIT_POSITION); the workflow or the exit Lambda acts on it, never this request. 409 while it is already "
    "exiting, finished, under review, or placing its protection (send it again in a few seconds).",
    responses={202: {"description": "Cancel (or exit) accepted"}, **error_responses(400, 401, 404, 409, 503)},
)
def cancel_bracket(bracket_id: Annotated[str, Path(max_length=64)], x_api_key: ApiKeyHeader = None) -> Response[dict]:
    caller = authenticate_api_key(x_api_key)
    return success({"data": cancelling.cancel_bracket(caller, bracket_id)}, status_code=202)


@app.post(
    "/api/v1/closeposition",
    summary="Close a strategy's position (exit, close, closelong, closeshort, closeall)",
    description="Cancels the matching working entries and exits the matching open brackets at market with reason "
    "SIGNAL; the workflow and the exit Lambda act on it, never this request. A resend with the same client_order_id "
    "does nothing more (duplicate: true).",
    responses={200: {"description": "Accepted: what happens to each bracket"}, **error_responses(400, 401, 403, 409)},
)
def close_position(body: Annotated[ClosePositionRequest, Body()], x_api_key: ApiKeyHeader = None) -> Response[dict]:
    event = app.current_event
    return success(intake.exit_from_rest(body.model_dump(), x_api_key, event.request_context.request_id))


@app.post(
    "/api/v1/flatten",
    summary="Flatten the account now (the kill switch by hand)",
    description="Every open bracket is exited at market (reason KILL_SWITCH) and every working entry cancelled; new "
    "brackets are refused (RISK_BLOCKED:FLATTENED) until the next session. Telegram and the KillSwitch alarm say so.",
    responses={200: {"description": "Flattening: what happens to each bracket"}, **error_responses(400, 401)},
)
def flatten(body: Annotated[FlattenRequest | None, Body()] = None, x_api_key: ApiKeyHeader = None) -> Response[dict]:
    sent = (app.current_event.body or "").strip()
    kind = (app.current_event.get_header_value("content-type", "", case_sensitive=False) or "").lower()
    if sent and (body is None or not kind.startswith(("application/json", "text/plain"))):
        # Something was sent that is not a JSON object: never take an unreadable request for "flatten everything"
        raise ValidationFailed('the body must be a JSON object ({"reason": ...}) or empty')
    caller = authenticate_api_key(x_api_key or (body.apikey if body else None))
    reason = body.reason if body else None
    return success(kill_switch.flatten(caller.account_id, kill_switch.FLATTENED, by="user", detail={"note": reason}))


@app.get(
    "/api/v1/orderbook",
    summary="The order book with filters and counts per status",
    responses={200: {"description": "The brackets and the counts (data)"}, **error_responses(400, 401, 503)},
)
def get_order_book(
    x_api_key: ApiKeyHeader = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
    symbol: Annotated[str | None, Query(max_length=64)] = None,
    strategy: Annotated[str | None, Query(max_length=64)] = None,
    date: Annotated[str | None, Query(max_length=10, description="YYYY-MM-DD (UTC)")] = None,
) -> Response[dict]:
    caller = authenticate_api_key(x_api_key)
    data = orderbook.order_book(caller, status=status, symbol=symbol, strategy=strategy, day=date)
    return success({"data": data})


@app.get(
    "/api/v1/orderlogs",
    summary="Placement requests and answers (API keys redacted)",
    responses={200: {"description": "The order log (data)"}, **error_responses(400, 401, 503)},
)
def get_order_logs(
    x_api_key: ApiKeyHeader = None, date: Annotated[str | None, Query(max_length=10)] = None
) -> Response[dict]:
    caller = authenticate_api_key(x_api_key)
    return success({"data": orderbook.order_logs(caller, date)})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
