"""A local API Gateway (REST, proxy integration) on 127.0.0.1 for the template's Api routes.

Each request becomes an API Gateway v1 proxy event for the function whose Api event matches the path and method (path
parameters like {id}, a greedy {proxy+}, method ANY); the handler runs in-process and its proxy response is written
back. `GET /health` is answered by the local stack itself. As API Gateway does: a path or a method the template does
not route (TRACE, PATCH on a GET route ...) is a 403 {"message": "Missing Authentication Token"}, a handler that
crashes or answers something that is not a proxy response is a 502.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from local.runtime import FunctionError, LambdaRuntime
from local.template import ACCOUNT_ID, Template

log = logging.getLogger("local.api")

HealthProbe = Callable[[], tuple[bool, dict[str, Any]]]  # (healthy, the body of GET /health)


@dataclass(frozen=True)
class Route:
    resource: str  # the template's path, e.g. /api/v1/brackets/{id}
    method: str  # GET, POST ... or ANY
    function: str  # logical id
    pattern: re.Pattern[str]
    literal_chars: int  # more literal path wins over a parameterised one, as in API Gateway

    def matches(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        return None if found is None else {k: unquote(v) for k, v in found.groupdict().items()}


def _compile(resource: str) -> re.Pattern[str]:
    parts = []
    for piece in re.split(r"(\{[^}]+\})", resource):
        if piece.startswith("{") and piece.endswith("+}"):
            parts.append(f"(?P<{piece[1:-2]}>.+)")
        elif piece.startswith("{"):
            parts.append(f"(?P<{piece[1:-1]}>[^/]+)")
        else:
            parts.append(re.escape(piece))
    return re.compile("".join(parts))


def routes_from(template: Template) -> list[Route]:
    routes = []
    for fn in template.functions.values():
        for event in fn.events:
            if event.type != "Api":
                continue
            resource = "/" + str(event.properties["Path"]).lstrip("/")
            method = str(event.properties.get("Method", "ANY")).upper()
            literal = len(re.sub(r"\{[^}]+\}", "", resource))
            routes.append(Route(resource, method, fn.logical_id, _compile(resource), literal))
    # most specific first: more literal characters, then explicit methods before ANY
    routes.sort(key=lambda r: (-r.literal_chars, r.method == "ANY", r.resource))
    return routes


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a timed-out alert sender, a closed browser tab) is routine, as it is for API
        Gateway: one debug line, not a traceback on the terminal. Anything else is still printed in full."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("client %s hung up", client_address)
            return
        super().handle_error(request, client_address)


class Gateway:
    """ThreadingHTTPServer on host:port serving the template's Api routes; start() binds, stop() closes."""

    def __init__(
        self,
        template: Template,
        runtime: LambdaRuntime,
        health: HealthProbe,
        host: str = "127.0.0.1",
        port: int = 3000,
        stage: str = "dev",
    ):
        self.routes = routes_from(template)
        self.runtime = runtime
        self.health = health
        self.host = host
        self.stage = stage
        self.accepting = threading.Event()  # routes are served once the stack is up; /health always
        self._server = _Server((host, port), self._handler_class())
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- request handling --

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "bracketflow-local-api"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one readable line per request is logged by the gateway instead

            def _serve(self) -> None:
                gateway.serve(self)

            def __getattr__(self, name: str) -> Any:
                # Every method, TRACE or one nobody has heard of, reaches the routing: API Gateway refuses one a
                # route does not have itself, where http.server would answer 501 with an HTML page.
                if name.startswith("do_"):
                    return self._serve
                raise AttributeError(name)

        return Handler

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        started = time.monotonic()
        split = urlsplit(request.path)
        path = split.path or "/"
        length = int(request.headers.get("Content-Length") or 0)
        raw_body = request.rfile.read(length) if length else b""

        if path == "/health" and request.command in ("GET", "HEAD"):
            ok, report = self.health()
            if ok:
                report.update(self._deployed_health(request, split.query))
            self._write(request, 200 if ok else 503, {"Content-Type": "application/json"}, json.dumps(report).encode())
            return
        if not self.accepting.is_set():
            self._error(request, 503, "the local stack is still starting; try again when GET /health answers 200")
            return

        route, params, _ = self._match(path, request.command)
        if route is None:
            self._missing_authentication_token(request)
            log.info("%s %s -> 403 (no such route)", request.command, path)
            return

        event = self._event(request, route, path, split.query, params, raw_body)
        try:
            result = self.runtime.invoke(route.function, event)
            status, headers, body = self._proxy_response(result)
        except FunctionError as err:
            log.error("%s %s -> 502: %s raised %s", request.command, path, err.function, err.error_type)
            self._error(request, 502, f"the {err.function} function failed: {err.error_type}")
            return
        except ValueError as err:
            log.error("%s %s -> 502: %s", request.command, path, err)
            self._error(request, 502, f"malformed Lambda proxy response from {route.function}: {err}")
            return
        self._write(request, status, headers, body)
        log.info(
            "%s %s -> %s (%s, %.0f ms)",
            request.command,
            path,
            status,
            route.function,
            (time.monotonic() - started) * 1000,
        )

    def _deployed_health(self, request: BaseHTTPRequestHandler, query: str) -> dict[str, Any]:
        """What the template's own GET /health function adds (stage, broker, the broker session), if it has one."""
        route, params, _ = self._match("/health", "GET")
        if route is None:
            return {}
        try:
            status, _, data = self._proxy_response(
                self.runtime.invoke(route.function, self._event(request, route, "/health", query, params, b""))
            )
            found = json.loads(data) if status == 200 else {}
        except (FunctionError, ValueError) as err:
            log.warning("GET /health: the %s function failed: %s", route.function, err)
            return {}
        return {k: v for k, v in found.items() if k not in ("status", "components")} if isinstance(found, dict) else {}

    def _match(self, path: str, method: str) -> tuple[Route | None, dict[str, str], list[str]]:
        allowed = []
        for route in self.routes:
            params = route.matches(path)
            if params is None:
                continue
            if route.method in (method, "ANY") or (method == "HEAD" and route.method == "GET"):
                return route, params, []
            allowed.append(route.method)
        return None, {}, allowed

    def _event(
        self, request: BaseHTTPRequestHandler, route: Route, path: str, query: str, params: dict[str, str], body: bytes
    ) -> dict[str, Any]:
        headers: dict[str, str] = {}
        multi_headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers[name] = value
            multi_headers.setdefault(name, []).append(value)
        multi_query: dict[str, list[str]] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            multi_query.setdefault(key, []).append(value)
        try:
            text, is_b64 = body.decode("utf-8"), False
        except UnicodeDecodeError:
            text, is_b64 = base64.b64encode(body).decode(), True
        now = datetime.now(UTC)
        request_id = str(uuid.uuid4())
        return {
            "resource": route.resource,
            "path": path,
            "httpMethod": request.command,
            "headers": headers or None,
            "multiValueHeaders": multi_headers or None,
            "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": params or None,
            "stageVariables": None,
            "body": text if body else None,
            "isBase64Encoded": is_b64,
            "requestContext": {
                "accountId": ACCOUNT_ID,
                "apiId": "local",
                "resourceId": "local",
                "resourcePath": route.resource,
                "httpMethod": request.command,
                "path": path,  # served at the root, as a custom domain (or sam local) is: no "/dev" in front
                "stage": self.stage,
                "protocol": request.request_version,
                "requestId": request_id,
                "extendedRequestId": request_id,
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "domainName": f"{self.host}:{self.port}",
                "identity": {
                    "sourceIp": request.client_address[0],
                    "userAgent": request.headers.get("User-Agent"),
                    "apiKey": None,
                    "accountId": None,
                    "caller": None,
                    "user": None,
                    "userArn": None,
                },
            },
        }

    @staticmethod
    def _proxy_response(result: Any) -> tuple[int, dict[str, str], bytes]:
        if not isinstance(result, dict) or "statusCode" not in result:
            raise ValueError("a proxy integration must return a dict with statusCode")
        status = int(result["statusCode"])
        headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
        for key, values in (result.get("multiValueHeaders") or {}).items():
            headers[str(key)] = ", ".join(str(v) for v in values)
        body = result.get("body") or ""
        if not isinstance(body, str):
            raise ValueError("the proxy response body must be a string")
        data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
        return status, headers, data

    def _missing_authentication_token(self, request: BaseHTTPRequestHandler) -> None:
        """API Gateway's answer to a path or a method the API does not have (it says nothing about which)."""
        body = json.dumps({"message": "Missing Authentication Token"}).encode()
        headers = {"Content-Type": "application/json", "x-amzn-ErrorType": "MissingAuthenticationTokenException"}
        self._write(request, 403, headers, body)

    def _error(
        self, request: BaseHTTPRequestHandler, status: int, message: str, extra: dict[str, str] | None = None
    ) -> None:
        body = json.dumps({"status": "error", "message": message}).encode()
        self._write(request, status, {"Content-Type": "application/json", **(extra or {})}, body)

    @staticmethod
    def _write(request: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
        request.send_response(status)
        for key, value in headers.items():
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                request.send_header(key, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(body)
