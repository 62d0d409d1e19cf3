"""TradingView alerts -> brackets, answered in milliseconds (nothing here calls the broker; docs/architecture.md).

POST /tradingview/webhook/bracket          token or apikey in the JSON body
POST /tradingview/webhook/bracket/{token}  a per-strategy webhook token in the path
The body may be application/json or text/plain holding JSON (TradingView sends the alert message as typed).
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths

from bracketflow.observability import logger, metrics, tracer
from bracketflow.schemas.http import error_responses, make_resolver, success
from bracketflow.schemas.wire_json import body_text
from bracketflow.services import intake

# API Gateway routes only the two POSTs here; the REST API's function serves /swagger (and the cold start is
# TradingView's: it waits for this function's first answer).
app = make_resolver(
    "bracketflow TradingView webhook",
    "Alerts in, brackets out. See README: REST API and TradingView alerts.",
    swagger=False,
)
_ALERT_BODY = {
    "requestBody": {
        "description": "The alert message: JSON (as application/json or text/plain)",
        "required": True,
        "content": {"text/plain": {"schema": {"type": "string"}}, "application/json": {"schema": {"type": "object"}}},
    }
}
_RESPONSES: dict[int, OpenAPIResponse] = {
    200: {"description": "Registered, or a resend (duplicate: true)"},
    **error_responses(),
}


@app.post(
    "/tradingview/webhook/bracket", summary="A TradingView alert", responses=_RESPONSES, openapi_extensions=_ALERT_BODY
)
def alert() -> Response[dict]:
    return _place(None)


@app.post(
    "/tradingview/webhook/bracket/<token>",
    summary="A TradingView alert with a webhook token",
    responses=_RESPONSES,
    openapi_extensions=_ALERT_BODY,
)
def alert_with_token(token: Annotated[str, Path(max_length=256)]) -> Response[dict]:
    return _place(token)


def _place(token: str | None) -> Response:
    event = app.current_event
    ctx = event.request_context
    body = body_text(event.body, event.is_base64_encoded)
    return success(intake.place_from_alert(body, token, ctx.identity.source_ip, ctx.request_id))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
