"""GET /api/v1/status: the console's status panel — the broker session, the streamer and its feed, the last
reconciliation and what it repaired, the stack's alarms that are firing (bracketflow.services.status).

Read-only, behind the account's API key. A function of its own so that only it may read the stack's alarms.
"""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Header
from aws_lambda_powertools.logging import correlation_paths

from bracketflow.observability import logger, metrics, tracer
from bracketflow.schemas.http import error_responses, make_resolver, success
from bracketflow.services.accounts import authenticate_api_key
from bracketflow.services.status import status

app = make_resolver(
    "bracketflow status API", "The broker session, the streamer, reconciliation and alarms.", swagger=False
)  # API Gateway routes /swagger to the REST API's function only
ApiKeyHeader = Annotated[str | None, Header(alias="X-API-KEY", description="The account's API key")]


@app.get(
    "/api/v1/status",
    summary="The broker session, the streamer and its feed, the last reconciliation, firing alarms",
    responses={200: {"description": "The stack's status (data)"}, **error_responses(401)},
)
def get_status(x_api_key: ApiKeyHeader = None) -> Response[dict]:
    caller = authenticate_api_key(x_api_key)
    return success({"data": status(caller)})


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
