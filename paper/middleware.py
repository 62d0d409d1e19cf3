"""The paper exchange's HTTP plumbing: Kite's answer envelope, the request's exchange and parameters, and the
middleware every request passes (the session check, the order rate limits, the fault rules)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from paper.engine import KiteError
from paper.exchange import EXCHANGE_KEY, PaperExchange
from paper.faults import FaultRule
from paper.kite import dumps

log = logging.getLogger("paper")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOCAL_ADDRESSES = {"127.0.0.1", "::1", "localhost"}


def success(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps({"status": "success", "data": data}), status=status, content_type="application/json")


def error(message: str, error_type: str, status: int) -> web.Response:
    body = {"status": "error", "message": message, "error_type": error_type, "data": None}
    return web.Response(text=dumps(body), status=status, content_type="application/json")


def exchange_for(request: web.Request) -> PaperExchange:
    return request.app[EXCHANGE_KEY]


async def params_of(request: web.Request) -> dict[str, Any]:
    if request.method in {"GET", "DELETE"}:
        return dict(request.query)
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise KiteError("The body is not valid JSON.") from None
        return body if isinstance(body, dict) else {}
    return dict(await request.post())


async def _tradingsymbol_of(request: web.Request, exchange: PaperExchange) -> str | None:
    order_id = request.match_info.get("order_id")
    if order_id and order_id in exchange.engine.orders:
        return exchange.engine.orders[order_id].instrument.tradingsymbol
    if request.method in {"POST", "PUT"} and request.content_type != "application/json":
        form = await request.post()
        symbol = form.get("tradingsymbol")
        if symbol:
            return str(symbol)
        condition = form.get("condition")
        if condition:
            with contextlib.suppress(ValueError, AttributeError):
                return str(json.loads(str(condition)).get("tradingsymbol") or "") or None
    return None


ORDER_WRITES = frozenset({"POST", "PUT", "DELETE"})


def _over_order_rate(request: web.Request, exchange: PaperExchange) -> web.Response | None:
    """Kite's answer to an order write past the rate limits (429, nothing done), or None when it may go on."""
    if request.method not in ORDER_WRITES or not request.path.startswith("/orders/"):
        return None
    api_key = request.headers.get("Authorization", "").removeprefix("token ").split(":", 1)[0]
    refusal = exchange.order_limits.admit(api_key, placement=request.method == "POST")
    if refusal is None:
        return None
    log.info("rate limit: %s %s refused, over %s", request.method, request.path, refusal)
    return error("Too many requests", "NetworkException", 429)


async def _hold_answer(request: web.Request, exchange: PaperExchange, rule: FaultRule) -> None:
    """The timeout fault: the work is done, but the answer waits until the client gives up or time runs out."""
    log.info("fault: holding the answer to %s %s for up to %ss", request.method, request.path, rule.seconds)
    deadline = asyncio.get_running_loop().time() + (rule.seconds or 0)
    while asyncio.get_running_loop().time() < deadline and not exchange.stopping.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(0.05)


@web.middleware
async def kite_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:  # noqa: C901, PLR0912 - each request passes these gates in this order
    exchange = exchange_for(request)
    path = request.path
    if path.startswith("/_paper"):
        remote = request.remote or ""
        if remote not in LOCAL_ADDRESSES:
            return error("Test controls answer only on 127.0.0.1.", "PermissionException", 403)
        try:
            return await handler(request)
        except KiteError as exc:
            return web.json_response({"status": "error", "message": exc.message}, status=exc.http_status)
    is_socket = request.headers.get("Upgrade", "").lower() == "websocket"
    if path.startswith("/connect/"):  # Kite's login pages: a browser's, no API session
        return await handler(request)
    if not is_socket and path != "/session/token":
        prefix = f"token {exchange.config.api_key}:"
        given = request.headers.get("Authorization", "")
        if not (given.startswith(prefix) and exchange.token_works(given[len(prefix) :])):
            return error("Incorrect `api_key` or `access_token`.", "TokenException", 403)
    try:
        if not is_socket:
            if exchange.in_outage(path):
                log.info("fault: outage, %s %s refused", request.method, path)
                return error("Something went wrong at the exchange.", "GeneralException", 500)
            refused = _over_order_rate(request, exchange)
            if refused is not None:
                return refused
            symbol = await _tradingsymbol_of(request, exchange)
            rule = exchange.faults.take(
                {"http_500", "http_429"}, path=path, method=request.method, tradingsymbol=symbol
            )
            if rule is not None:
                log.info("fault: %s on %s %s", rule.kind, request.method, path)
                if rule.kind == "http_429":
                    return error(rule.message or "Too many requests", "NetworkException", 429)
                return error(rule.message or "Something went wrong at the exchange.", "GeneralException", 500)
            timeout_rule = exchange.faults.take(
                {"timeout", "http_500_after", "outage_after"}, path=path, method=request.method, tradingsymbol=symbol
            )
        else:
            timeout_rule = None
        response = await handler(request)
        exchange.flush_updates()
        if timeout_rule is not None and timeout_rule.kind == "outage_after":
            down = FaultRule(kind="outage_after", path=timeout_rule.path or path)
            exchange.outages.append((down, time.monotonic() + (timeout_rule.seconds or 0)))
            log.info(
                "fault: %s %s done, answered 500; %s down for %ss",
                request.method,
                path,
                down.path,
                timeout_rule.seconds,
            )
        if timeout_rule is not None and timeout_rule.kind in ("http_500_after", "outage_after"):
            log.info("fault: %s %s done, answered 500", request.method, path)
            return error(timeout_rule.message or "Something went wrong at the exchange.", "GeneralException", 500)
        if timeout_rule is not None:
            await _hold_answer(request, exchange, timeout_rule)
        return response
    except KiteError as exc:
        exchange.flush_updates()
        return error(exc.message, exc.error_type, exc.http_status)
    except web.HTTPNotFound:
        return error(f"Route not found: {request.method} {path}", "GeneralException", 404)
    except web.HTTPMethodNotAllowed:
        return error(f"Method not allowed: {request.method} {path}", "InputException", 405)
    except web.HTTPException:
        raise
    except Exception:  # an unexpected bug must still answer in Kite's envelope, and be logged
        log.exception("unhandled error on %s %s", request.method, path)
        return error("Internal error in the paper exchange.", "GeneralException", 500)
