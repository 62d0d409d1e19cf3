"""The template's API Gateway WebSocket API, served locally (aiohttp on 127.0.0.1).

What it reads from template.yaml: the AWS::ApiGatewayV2::Api with ProtocolType WEBSOCKET (its
RouteSelectionExpression), its Routes (RouteKey -> Integration -> the function in IntegrationUri), RouteResponses
(two-way routes: the function's `body` goes back to the client) and the Stage's name.

What it serves, like API Gateway:
  ws://<host>:<port>/<stage>?apikey=...      connect: $connect runs first; a non-2xx answer refuses the handshake;
                                             each text message is routed by the selection expression (else $default)
                                             and handled one at a time per connection; closing runs $disconnect.
  POST/GET/DELETE http://<host>:<port>/<stage>/@connections/<id>
                                             the management API (boto3 `apigatewaymanagementapi` with this endpoint):
                                             post_to_connection sends the body as one text frame; 410 GoneException
                                             for a connection that is not open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from local.runtime import FunctionError, LambdaRuntime
from local.template import load_yaml

log = logging.getLogger("local.websocket")

_WS_API = "AWS::ApiGatewayV2::Api"


@dataclass
class WebSocketRoutes:
    """The template's WebSocket API: route key -> function logical id, and which routes answer the client."""

    api_id: str
    selection_expression: str
    stage: str
    functions: dict[str, str] = field(default_factory=dict)
    two_way: set[str] = field(default_factory=set)

    def route_for(self, body: str) -> str | None:
        """The route key a message selects ($request.body.<path>), else $default (None if there is none)."""
        found = re.fullmatch(r"\$request\.body\.([\w.]+)", self.selection_expression.strip())
        if found:
            try:
                value: Any = json.loads(body)
                for part in found.group(1).split("."):
                    value = value.get(part) if isinstance(value, dict) else None
            except ValueError:
                value = None
            if isinstance(value, str) and value in self.functions:
                return value
        return "$default" if "$default" in self.functions else None


def _refs(value: Any) -> list[str]:
    """Logical ids a raw template value points at (Ref, GetAtt, ${X.Arn} inside Sub)."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.append(inner)
            elif key == "Fn::GetAtt":
                found.append(inner[0] if isinstance(inner, list) else str(inner).split(".", 1)[0])
            elif key == "Fn::Sub":
                text = inner[0] if isinstance(inner, list) else inner
                found += [m.split(".", 1)[0] for m in re.findall(r"\$\{([^}!]+)\}", str(text))]
                if isinstance(inner, list) and len(inner) > 1:
                    found += _refs(inner[1])
            else:
                found += _refs(inner)
    elif isinstance(value, list):
        for inner in value:
            found += _refs(inner)
    return found


def read_websocket_routes(template_path: Path, parameters: dict[str, str]) -> WebSocketRoutes | None:
    """The first WEBSOCKET API of the template, or None when it has none."""
    resources: dict[str, dict[str, Any]] = load_yaml(template_path)["Resources"]

    def of_type(kind: str) -> dict[str, dict[str, Any]]:
        return {lid: res.get("Properties") or {} for lid, res in resources.items() if res.get("Type") == kind}

    apis = {lid: p for lid, p in of_type(_WS_API).items() if str(p.get("ProtocolType", "")).upper() == "WEBSOCKET"}
    if not apis:
        return None
    api_id, api = next(iter(apis.items()))
    stage = _stage_name(of_type("AWS::ApiGatewayV2::Stage").values(), api_id, parameters)
    integrations = _function_integrations(of_type("AWS::ApiGatewayV2::Integration"), resources)
    routes = WebSocketRoutes(api_id, str(api.get("RouteSelectionExpression") or "$request.body.action"), stage)
    route_ids: dict[str, str] = {}
    for lid, props in of_type("AWS::ApiGatewayV2::Route").items():
        if api_id not in _refs(props.get("ApiId")):
            continue
        function = next((integrations[r] for r in _refs(props.get("Target")) if r in integrations), None)
        if function is not None:
            routes.functions[str(props["RouteKey"])] = function
            route_ids[lid] = str(props["RouteKey"])
    for props in of_type("AWS::ApiGatewayV2::RouteResponse").values():
        for ref in _refs(props.get("RouteId")):
            if ref in route_ids:
                routes.two_way.add(route_ids[ref])
    return routes


def _stage_name(stages: Iterable[dict[str, Any]], api_id: str, parameters: dict[str, str]) -> str:
    """The API's stage name (a parameter's value when the template refers to one), "local" when no stage names it."""
    stage = "local"
    for props in stages:
        if api_id in _refs(props.get("ApiId")):
            name = props.get("StageName")
            refs = _refs(name) if isinstance(name, dict) else []
            stage = parameters.get(refs[0], stage) if refs else str(name or stage)
    return stage


def _function_integrations(
    integrations: dict[str, dict[str, Any]], resources: dict[str, dict[str, Any]]
) -> dict[str, str]:
    """Each integration that invokes a function: its logical id -> the function's."""
    found = {}
    for lid, props in integrations.items():
        targets = [
            r for r in _refs(props.get("IntegrationUri")) if resources.get(r, {}).get("Type", "").endswith("Function")
        ]
        if targets:
            found[lid] = targets[0]
    return found


def _connection_id() -> str:
    # API Gateway's ids look like "L0SM9cOFvHcCIhw=": 16 characters; ours stay URL-safe (no '=') for the path.
    return secrets.token_urlsafe(12).replace("-", "A").replace("_", "B")


class LocalWebSocketApi:
    """Runs in its own thread with its own event loop; handlers run on worker threads (they block)."""

    def __init__(self, routes: WebSocketRoutes, runtime: LambdaRuntime, host: str = "127.0.0.1", port: int = 0):
        self.routes, self.runtime, self.host, self.port = routes, runtime, host, port
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._connected_at: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- what callers need --

    @property
    def url(self) -> str:
        """Where clients connect (add ?apikey=...)."""
        return f"ws://{self.host}:{self.port}/{self.routes.stage}"

    @property
    def management_url(self) -> str:
        """WEBSOCKET_MANAGEMENT_URL for the functions: boto3 apigatewaymanagementapi's endpoint_url."""
        return f"http://{self.host}:{self.port}/{self.routes.stage}"

    def connection_ids(self) -> list[str]:
        return list(self._sockets)

    # -- lifecycle --

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="local-websocket-api", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError(f"local WebSocket API did not start: {self._error}") from self._error
        if not self._ready.is_set():
            raise RuntimeError("local WebSocket API did not start within 10 s")

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        try:
            future.result(10)
        except Exception:
            log.debug("websocket shutdown", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _serve(self) -> None:
        app = web.Application()
        stage = self.routes.stage
        app.router.add_get(f"/{stage}", self._socket)
        app.router.add_get("/", self._socket)
        app.router.add_post(f"/{stage}/@connections/{{cid}}", self._post_to_connection)
        app.router.add_get(f"/{stage}/@connections/{{cid}}", self._get_connection)
        app.router.add_delete(f"/{stage}/@connections/{{cid}}", self._delete_connection)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        addresses = self._runner.addresses  # the bound sockets' addresses; port 0 means "tell me which"
        if addresses:
            self.port = int(addresses[0][1])

    async def _shutdown(self) -> None:
        for ws in list(self._sockets.values()):
            await ws.close(code=1001, message=b"the local stack stopped")
        if self._runner is not None:
            await self._runner.cleanup()

    # -- API Gateway events --

    def _event(self, route: str, event_type: str, cid: str, request: web.Request, body: str | None = None) -> dict:
        now_ms = int(time.time() * 1000)
        event: dict[str, Any] = {
            "requestContext": {
                "routeKey": route,
                "eventType": event_type,
                "connectionId": cid,
                "messageId": uuid.uuid4().hex[:16] if event_type == "MESSAGE" else None,
                "extendedRequestId": uuid.uuid4().hex,
                "requestId": uuid.uuid4().hex,
                "messageDirection": "IN",
                "stage": self.routes.stage,
                "apiId": self.routes.api_id,
                "domainName": f"{self.host}:{self.port}",
                "connectedAt": self._connected_at.get(cid, now_ms),
                "requestTimeEpoch": now_ms,
                "requestTime": datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "identity": {"sourceIp": request.remote or self.host},
            },
            "isBase64Encoded": False,
        }
        if event_type == "CONNECT":
            event["headers"] = dict(request.headers)
            event["multiValueHeaders"] = {k: request.headers.getall(k) for k in request.headers}
            event["queryStringParameters"] = dict(request.query) or None
            event["multiValueQueryStringParameters"] = {k: request.query.getall(k) for k in request.query} or None
        if body is not None:
            event["body"] = body
        return event

    async def _invoke(self, route: str, event: dict[str, Any]) -> Any:
        function = self.routes.functions[route]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.runtime.invoke, function, event)

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        cid = _connection_id()
        self._connected_at[cid] = int(time.time() * 1000)
        if "$connect" in self.routes.functions:
            try:
                result = await self._invoke("$connect", self._event("$connect", "CONNECT", cid, request))
            except FunctionError:
                self._connected_at.pop(cid, None)
                return web.json_response({"message": "Internal server error"}, status=500)
            status = int((result or {}).get("statusCode", 200)) if isinstance(result, dict) else 200
            if not 200 <= status < 300:
                self._connected_at.pop(cid, None)
                body = (result or {}).get("body") or ""
                return web.Response(status=status, text=str(body), content_type="application/json")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets[cid] = ws
        log.info("websocket %s connected", cid)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_message(cid, request, ws, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._sockets.pop(cid, None)
            if "$disconnect" in self.routes.functions:
                # a failure is logged by the runtime; API Gateway does not retry a $disconnect either
                with contextlib.suppress(FunctionError):
                    await self._invoke("$disconnect", self._event("$disconnect", "DISCONNECT", cid, request))
            self._connected_at.pop(cid, None)
            log.info("websocket %s disconnected", cid)
        return ws

    async def _on_message(self, cid: str, request: web.Request, ws: web.WebSocketResponse, data: str) -> None:
        route = self.routes.route_for(data)
        if route is None:
            await ws.send_str(json.dumps({"message": "Forbidden", "connectionId": cid}))
            return
        try:
            result = await self._invoke(route, self._event(route, "MESSAGE", cid, request, data))
        except FunctionError:
            await ws.send_str(json.dumps({"message": "Internal server error", "connectionId": cid}))
            return
        if route in self.routes.two_way and isinstance(result, dict) and result.get("body") is not None:
            await ws.send_str(str(result["body"]))

    # -- the @connections management API --

    def _gone(self, cid: str) -> web.Response:
        return web.json_response(
            {"message": f"connection {cid} is gone"}, status=410, headers={"x-amzn-ErrorType": "GoneException"}
        )

    async def _post_to_connection(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        ws = self._sockets.get(cid)
        if ws is None or ws.closed:
            return self._gone(cid)
        data = await request.read()
        try:
            await ws.send_str(data.decode())
        except (ConnectionError, RuntimeError):
            return self._gone(cid)
        return web.Response(status=200)

    async def _get_connection(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        if cid not in self._sockets:
            return self._gone(cid)
        connected = datetime.fromtimestamp(self._connected_at.get(cid, 0) / 1000, UTC).isoformat()
        return web.json_response(
            {"ConnectedAt": connected, "Identity": {"SourceIp": self.host}, "LastActiveAt": connected}
        )

    async def _delete_connection(self, request: web.Request) -> web.Response:
        cid = request.match_info["cid"]
        ws = self._sockets.get(cid)
        if ws is None:
            return self._gone(cid)
        await ws.close(code=1000, message=b"closed by the server")
        return web.Response(status=204)
