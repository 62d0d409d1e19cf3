"""The Kite Ticker's websocket on the paper exchange: the session check, subscriptions and modes."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from typing import Any

from aiohttp import WSMsgType, web

from paper import ticker
from paper.exchange import PaperExchange, TickerClient
from paper.kite import dumps
from paper.middleware import error, exchange_for


async def ticker_socket(request: web.Request) -> web.StreamResponse:
    exchange = exchange_for(request)
    if request.headers.get("Upgrade", "").lower() != "websocket":
        if request.path == "/":
            return web.json_response({"status": "success", "data": {"service": "bracketflow paper exchange"}})
        return error("The ticker needs a websocket upgrade.", "InputException", 400)
    config = exchange.config
    access_token = request.query.get("access_token", "")
    if not (
        hmac.compare_digest(request.query.get("api_key", ""), config.api_key) and exchange.token_works(access_token)
    ):
        return error("Incorrect `api_key` or `access_token`.", "TokenException", 403)
    ws = web.WebSocketResponse(autoping=True)
    client = TickerClient(ws, access_token)
    # Registered before the handshake completes, so no order update can slip past a client that just connected.
    exchange.clients.add(client)
    try:
        await ws.prepare(request)
    except Exception:
        exchange.clients.discard(client)
        raise
    pump = asyncio.get_running_loop().create_task(client.pump())
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                _handle_ticker_command(exchange, client, message.data)
            elif message.type in {WSMsgType.ERROR, WSMsgType.CLOSE}:
                break
    finally:
        exchange.clients.discard(client)
        client.send(None)
        with contextlib.suppress(asyncio.CancelledError):
            await pump
    return ws


def _tokens(values: Any) -> list[int]:
    if not isinstance(values, list):
        return []
    return [int(v) for v in values if isinstance(v, int | str) and str(v).isdigit()]


def _handle_ticker_command(exchange: PaperExchange, client: TickerClient, text: str) -> None:
    try:
        command = json.loads(text)
    except ValueError:
        client.send(dumps({"type": "error", "data": "Invalid message: not JSON."}))
        return
    if not isinstance(command, dict):
        return
    action, value = command.get("a"), command.get("v")
    if action == "subscribe":
        tokens = _tokens(value)
        for token in tokens:
            client.modes.setdefault(token, ticker.MODE_QUOTE)  # Kite's default mode on subscribe
        exchange.send_snapshot(client, tokens)
    elif action == "unsubscribe":
        for token in _tokens(value):
            client.modes.pop(token, None)
    elif action == "mode" and isinstance(value, list) and len(value) == 2 and value[0] in ticker.MODES:
        tokens = _tokens(value[1])
        for token in tokens:
            client.modes[token] = value[0]
        exchange.send_snapshot(client, tokens)
    else:
        client.send(dumps({"type": "error", "data": f"Unknown ticker message: {text[:100]}"}))
