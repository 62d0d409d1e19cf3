"""The daily Kite login: GET /broker/login sends the trader to Kite, GET /broker/callback stores the day's session.

Register <ApiUrl>/broker/callback as the Kite app's redirect URL. The pages are plain HTML for a browser; the access
token never appears in them, in a log line or in the redirect.
"""

from __future__ import annotations

import html
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.types import (
    OpenAPIResponse,
    OpenAPIResponseContentModel,
    OpenAPIResponseContentSchema,
)

from bracketflow.errors import BracketflowError, BrokerMisconfigured, SessionExpired, ValidationFailed
from bracketflow.observability import logger, metrics
from bracketflow.services.broker_session import broker_login_url, complete_login

api = APIGatewayRestResolver()
_PAGE: dict[str, OpenAPIResponseContentSchema | OpenAPIResponseContentModel] = {
    "text/html": {"schema": {"type": "string"}}
}
_NOT_SET_UP: OpenAPIResponse = {
    "description": "Kite login is not set up (the broker secret has no api_key)",
    "content": dict(_PAGE),
}


@api.get(
    "/broker/login",
    summary="Start the daily Kite login (a browser page: redirects to Kite)",
    responses={
        302: {"description": "To Kite's login page", "headers": {"Location": {"schema": {"type": "string"}}}},
        503: _NOT_SET_UP,
    },
)
def login() -> Response[str]:
    try:
        url = broker_login_url()
    except BrokerMisconfigured as exc:
        return _page(503, "Kite login is not set up", exc.message)
    return Response(status_code=302, headers={"Location": url, "Cache-Control": "no-store"}, body="")


@api.get(
    "/broker/callback",
    summary="Kite's redirect after the login: stores the day's session (a browser page)",
    responses={
        200: {"description": "The session is stored", "content": _PAGE},
        400: {"description": "The login failed or was cancelled (request_token, status)", "content": _PAGE},
        502: {"description": "Kite refused the session exchange", "content": _PAGE},
        503: _NOT_SET_UP,
    },
    openapi_extensions={
        "parameters": [
            {"name": "request_token", "in": "query", "schema": {"type": "string"}, "description": "From Kite"},
            {"name": "status", "in": "query", "schema": {"type": "string"}, "description": "success, or why not"},
        ]
    },
)
def callback() -> Response[str]:
    query = api.current_event.query_string_parameters or {}
    try:
        started = complete_login(str(query.get("request_token") or ""), str(query.get("status") or ""))
    except (ValidationFailed, SessionExpired) as exc:
        return _page(400, "Kite login failed", exc.message, retry=True)
    except BrokerMisconfigured as exc:
        return _page(503, "Kite login is not set up", exc.message)
    except BracketflowError as exc:
        logger.warning("Kite login failed", extra={"error": exc.message})
        return _page(502, "Kite login failed", exc.message, retry=True)
    ends = started.expires_at.strftime("%A %d %B %Y") if started.expires_at else "the next morning"
    return _page(
        200,
        "Kite session valid",
        f"The Kite session is valid until 06:00 IST on {ends}. Orders, exits and the streamer use it from now on; "
        "log in again after it ends, before the next session opens.",
    )


def _page(status: int, title: str, message: str, retry: bool = False) -> Response[str]:
    again = '<p><a href="login">Log in again</a></p>' if retry else ""
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width'><title>{html.escape(title)} · bracketflow</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p id=message>{html.escape(message)}</p>{again}</body></html>"
    )
    return Response(
        status_code=status, content_type="text/html; charset=utf-8", body=body, headers={"Cache-Control": "no-store"}
    )


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return api.resolve(event, context)
