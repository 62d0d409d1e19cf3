"""The HTTP edge shared by the REST and webhook functions: the resolver, the error envelope, the status codes.

Every error leaves as {"status": "error", "message": "<what and why>"} with 400/401/403/404/409/429, mapped
here and only here; the OpenAPI responses (ERROR_RESPONSES) list the same codes. Powertools' 422 for a body
that does not fit the model becomes a 400 naming the field. Nothing a caller sends can produce a 5xx.

The one 5xx we answer on purpose is 503, when AWS (the table, the workflow service) did not answer in time or
asked us to slow down: the request may be sent again as it is, and a resend is recognised, never placed twice.
TradingView resends an alert answered 5xx, which is what such a passing failure wants.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import aws_lambda_powertools.event_handler
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError, ValidationException
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from bracketflow.errors import BracketflowError, BracketRefused
from bracketflow.observability import logger
from bracketflow.schemas import wire_json

# Written by `make openapi` (local/openapi.py) from every function's route declarations, shipped in the layer.
OPENAPI_DOCUMENT = Path(__file__).resolve().parent.parent / "openapi.json"

ERROR_CODES = {
    400: "Invalid request: a field is missing or wrong (the message names it)",
    401: "Invalid API key or webhook token",
    403: "Not allowed: risk-blocked bracket, token for another strategy, or source address not allowed",
    404: "No such bracket for this account",
    409: "Conflict: guard or duplicate block, or the bracket's state does not allow it",
    429: "Rate limit exceeded for this API key",
    503: "AWS did not answer in time; send the request again (a resend is recognised, never placed twice)",
}

# AWS error codes that mean "busy, try again", not "this request is wrong".
AWS_BUSY_CODES = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)
AWS_BUSY_MESSAGE = (
    "the service's AWS storage did not answer in time; send the request again "
    "(a resend is recognised and never placed twice)"
)


def error_responses(*codes: int) -> dict[int, OpenAPIResponse]:
    """OpenAPI `responses` for the given error codes (all of them when none are named)."""
    schema = {
        "type": "object",
        "properties": {"status": {"type": "string", "enum": ["error"]}, "message": {"type": "string"}},
        "required": ["status", "message"],
    }
    return {
        code: {"description": text, "content": {"application/json": {"schema": schema}}}
        for code, text in ERROR_CODES.items()
        if not codes or code in codes
    }


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Prices carry at most a few decimals and stay under 1e8, so float's shortest repr prints the exact
        # decimal (1480.05 stays 1480.05); the arithmetic never happens in float, only this last printing.
        exponent = value.as_tuple().exponent  # a letter for NaN and infinity, which no validated price is
        whole = value == value.to_integral_value() and isinstance(exponent, int) and exponent >= 0
        return int(value) if whole else float(value)
    if hasattr(value, "value"):
        return value.value
    return str(value)


def to_json(payload: Any) -> str:
    return json.dumps(payload, default=_default, separators=(",", ":"))


def error(status_code: int, message: str, **extra: Any) -> Response:
    return Response(
        status_code=status_code,
        content_type=content_types.APPLICATION_JSON,
        body={"status": "error", "message": message, **extra},
    )


def aws_busy() -> Response:
    """503 with a message and Retry-After: AWS did not answer in time, or throttled us."""
    return Response(
        status_code=503,
        content_type=content_types.APPLICATION_JSON,
        body={"status": "error", "message": AWS_BUSY_MESSAGE},
        headers={"Retry-After": "1"},
    )


def success(payload: dict[str, Any], status_code: int = 200) -> Response:
    return Response(
        status_code=status_code, content_type=content_types.APPLICATION_JSON, body={"status": "success", **payload}
    )


def describe_validation_errors(errors: Any) -> str:
    """Powertools/pydantic errors -> "quantity: Input should be greater than 0; sl_price: Field required"."""
    parts = []
    for err in list(errors or [])[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        field = ".".join(loc) or "body"
        msg = str(err.get("msg", "is invalid"))
        if err.get("type") == "json_invalid":
            field, msg = "body", "is not valid JSON"
        elif err.get("type") == "unsupported_content_type":
            field, msg = "body", f"{msg}: send application/json"
        parts.append(f"{field}: {msg}")
    return "; ".join(parts) or "the request is invalid"


def openapi_document() -> dict[str, Any]:
    """The whole API's OpenAPI document (every route of every function), as `make openapi` wrote it from the
    functions' own route declarations: one Lambda's package holds only its own routes' code."""
    return json.loads(OPENAPI_DOCUMENT.read_text(encoding="utf-8"))


def _serve_openapi(app: APIGatewayRestResolver) -> None:
    @app.get(
        "/swagger",
        summary="This document (?format=json), or Swagger UI to try the API from a browser",
        responses={
            200: {
                "description": "Swagger UI, or the OpenAPI document with ?format=json",
                "content": {"text/html": {"schema": {"type": "string"}}, "application/json": {"schema": {}}},
            },
            **error_responses(400),
        },
    )
    def swagger(format: Annotated[str | None, Query(max_length=16)] = None) -> Response[str]:
        event = app.current_event
        stage = event.request_context.stage
        # Under the stage's path on execute-api ("/dev"), at the root on a custom domain or the local stack.
        base = f"/{stage}" if stage and event.request_context.path.startswith(f"/{stage}/") else ""
        document = {**openapi_document(), "servers": [{"url": base or "/"}]}
        spec = json.dumps(document).replace("</", "<\\/")
        if format == "json":
            return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=spec)
        from aws_lambda_powertools.event_handler.openapi.swagger_ui import generate_swagger_html

        ui = Path(aws_lambda_powertools.event_handler.__file__).parent / "openapi" / "swagger_ui"
        page = generate_swagger_html(
            spec,
            (ui / "swagger-ui-bundle.min.js").read_text(encoding="utf-8"),
            (ui / "swagger-ui.min.css").read_text(encoding="utf-8"),
            "",
            None,
        )
        return Response(status_code=200, content_type="text/html", body=page)


def make_resolver(title: str, description: str, *, swagger: bool = True) -> APIGatewayRestResolver:  # noqa: C901 - one small handler per error kind
    """A validating resolver with the error envelope; `swagger` serves the API's OpenAPI document and its UI at
    /swagger (only where API Gateway routes /swagger)."""
    # Bodies are read with wire_json's limits (size, nesting, number length): a hostile body is a 400, never a 5xx.
    app = APIGatewayRestResolver(enable_validation=True, serializer=to_json, json_body_deserializer=wire_json.loads)
    if swagger:
        _serve_openapi(app)

    @app.exception_handler(RequestValidationError)
    def _invalid(exc: RequestValidationError) -> Response:
        return error(400, describe_validation_errors(exc.errors()))

    @app.exception_handler(ValidationException)
    def _unreadable(exc: ValidationException) -> Response:  # e.g. a content type other than JSON
        return error(400, describe_validation_errors(exc.errors()))

    @app.exception_handler(UnicodeDecodeError)
    def _not_text(exc: UnicodeDecodeError) -> Response:  # Powertools decodes a base64 body as UTF-8 itself
        return error(400, "body is not UTF-8 text: send JSON")

    @app.exception_handler(UnicodeEncodeError)
    def _not_a_form(exc: UnicodeEncodeError) -> Response:
        # Powertools reads a multipart/form-data body as latin-1 bytes before validating it: characters beyond
        # latin-1 are the caller's wrong content type, not our failure. Anywhere else it is a bug of ours.
        content_type = (app.current_event.get_header_value("content-type", "", case_sensitive=False) or "").lower()
        if content_type.startswith("multipart/"):
            return error(400, "body is not readable as multipart/form-data: send JSON (application/json)")
        return _unexpected(exc)

    @app.exception_handler(BracketRefused)
    def _blocked(exc: BracketRefused) -> Response:
        return error(exc.status_code, exc.message, **exc.body())

    @app.exception_handler(BracketflowError)
    def _known(exc: BracketflowError) -> Response:
        code = exc.status_code if 400 <= exc.status_code < 500 else 409
        return error(code, exc.message)

    @app.exception_handler([HTTPClientError, BotocoreConnectionError])
    def _aws_unreachable(exc: BotoCoreError) -> Response:  # a read or connect timeout, a dropped connection
        logger.warning("AWS did not answer", extra={"error": type(exc).__name__, "detail": str(exc)[:200]})
        return aws_busy()

    @app.exception_handler(ClientError)
    def _aws_refused(exc: ClientError) -> Response:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in AWS_BUSY_CODES:
            logger.warning("AWS asked us to slow down", extra={"error": code})
            return aws_busy()
        logger.exception("unexpected AWS error")
        return error(500, "internal error")

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # A bug of ours, never the caller's input: log the stack, say nothing about internals.
        logger.exception("unexpected error")
        return error(500, "internal error")

    @app.not_found
    def _no_route(exc: Exception) -> Response:
        return error(404, f"no route for {app.current_event.http_method} {app.current_event.path}")

    return app
