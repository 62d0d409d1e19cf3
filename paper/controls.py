"""The /_paper/ test controls: quotes, fault rules, the books and the timeline, reset, sessions, config, replay.

They answer only on 127.0.0.1 (the middleware)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from paper.engine import KiteError
from paper.faults import FaultRuleError
from paper.kite import dumps
from paper.middleware import exchange_for


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise KiteError("The body must be JSON.") from None


async def control_quotes(request: web.Request) -> web.Response:
    """POST sets quotes; GET answers the current ones ({"NSE:INFY": {"ltp", "bid", "ask"}}, `?i=` narrows), past
    every fault rule: what the trader's screen shows while the broker's API is failing."""
    exchange = exchange_for(request)
    if request.method == "GET":
        quotes = exchange.engine.state_quotes()
        wanted = request.query.getall("i", [])
        if wanted:
            quotes = {key: quotes[key] for key in wanted if key in quotes}
        return web.Response(text=dumps({"status": "success", "data": quotes}), content_type="application/json")
    body = await _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("quotes"), list):
        raise KiteError('The body must be {"quotes": [{"exchange", "tradingsymbol", "ltp", "bid", "ask"}]}.')
    return web.json_response({"status": "success", "data": {"updated": exchange.set_quotes(body["quotes"])}})


async def control_faults(request: web.Request) -> web.Response:
    exchange = exchange_for(request)
    if request.method == "POST":
        try:
            exchange.faults.configure(await _json_body(request))
        except FaultRuleError as exc:
            raise KiteError(f"Invalid fault rules: {exc}") from None
    return web.json_response({"status": "success", "data": {"rules": [r.as_dict() for r in exchange.faults.rules]}})


async def control_state(request: web.Request) -> web.Response:
    exchange = exchange_for(request)
    state = exchange.engine.state()
    state["market"] = exchange.market
    state["ticker_connections"] = len(exchange.clients)
    state["ticker_subscriptions"] = [
        {str(token): mode for token, mode in client.modes.items()} for client in exchange.clients
    ]
    state["faults"] = [r.as_dict() for r in exchange.faults.rules]
    # Order writes refused for Kite's rate limits (429) since the start or the last reset.
    state["rate_limited"] = exchange.order_limits.refused
    # What slow_visibility still keeps out of GET answers, so a test can wait until the books show everything.
    state["hidden"] = sum(1 for kind, object_id in list(exchange.hidden) if not exchange.visible(kind, object_id))
    return web.Response(text=dumps({"status": "success", "data": state}), content_type="application/json")


async def control_timeline(request: web.Request) -> web.Response:
    """Order and GTT changes in the order they happened, each with a wall-clock `t` (seconds, sub-second);
    `?since=<n>` skips the first n (page on with `next`)."""
    timeline = exchange_for(request).engine.timeline
    try:
        since = max(int(request.query.get("since", "0")), 0)
    except ValueError:
        raise KiteError("since must be a whole number.") from None
    data = {"events": timeline[since:], "next": len(timeline)}
    return web.Response(text=dumps({"status": "success", "data": data}), content_type="application/json")


async def control_reset(request: web.Request) -> web.Response:
    exchange_for(request).reset()
    return web.json_response({"status": "success", "data": True})


async def control_session(request: web.Request) -> web.Response:
    """GET: how many sessions work; POST {"expire": true}: end them all (06:00 IST), until the next login."""
    exchange = exchange_for(request)
    if request.method == "POST":
        body = await _json_body(request)
        if not isinstance(body, dict) or body.get("expire") is not True:
            raise KiteError('The body must be {"expire": true}.')
        exchange.end_sessions()
    return web.json_response({"status": "success", "data": {"sessions": len(exchange.access_tokens)}})


async def control_config(request: web.Request) -> web.Response:
    exchange = exchange_for(request)
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise KiteError("The body must be a JSON object.")
    if "market" in body:
        if body["market"] not in {"manual", "walk"}:
            raise KiteError("market must be manual or walk.")
        exchange.market = body["market"]
    if "partial_fills" in body:
        exchange.engine.partial_fills = bool(body["partial_fills"])
    limits = exchange.order_limits
    fields = {"order_rate_per_second": "per_second", "order_rate_per_minute": "per_minute", "orders_per_day": "per_day"}
    for name, attribute in fields.items():
        if name in body:
            value = body[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise KiteError(f"{name} must be a whole number, 0 for no limit.")
            setattr(limits, attribute, value)
    data = {
        "market": exchange.market,
        "partial_fills": exchange.engine.partial_fills,
        "order_rate_per_second": limits.per_second,
        "order_rate_per_minute": limits.per_minute,
        "orders_per_day": limits.per_day,
    }
    return web.json_response({"status": "success", "data": data})


async def control_replay(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if not isinstance(body, dict) or not body.get("path"):
        raise KiteError('The body must be {"path": "<frames file>", "speed": 1.0}.')
    path = Path(str(body["path"]))
    if not path.is_file():
        raise KiteError(f"No frames file at {path}.")
    try:
        speed = float(body.get("speed", 1.0))
    except (TypeError, ValueError):
        raise KiteError("speed must be a number (0 plays as fast as possible).") from None
    count = await exchange_for(request).replay(path, speed)
    return web.json_response({"status": "success", "data": {"messages": count}}, status=202)
