"""Kite Connect v3 REST on the paper exchange: orders, trades, portfolio, quotes, instruments, GTTs, the session
and the login pages."""

from __future__ import annotations

import hashlib
import hmac
import html
from datetime import datetime
from decimal import Decimal
from urllib.parse import urlencode

from aiohttp import web

from bracketflow.domain.instruments import Instrument, instruments_csv_text
from paper.engine import IST, USER_ID, KiteError, Order, kite_timestamp
from paper.exchange import PaperExchange
from paper.middleware import exchange_for, params_of, success


async def place_order(request: web.Request) -> web.Response:
    exchange = exchange_for(request)
    params = await params_of(request)
    reject = exchange.faults.take(
        {"reject"}, path=request.path, method="POST", tradingsymbol=str(params.get("tradingsymbol") or "")
    )
    reason = (reject.message or "Paper exchange fault: order rejected.") if reject else None
    order = exchange.engine.place_order(request.match_info["variety"], params, reject_reason=reason)
    exchange.hide_if_slow("order", order.order_id, request.path, order.instrument.tradingsymbol)
    return success({"order_id": order.order_id})


async def modify_order(request: web.Request) -> web.Response:
    exchange = exchange_for(request)
    order = exchange.engine.modify_order(
        request.match_info["variety"], request.match_info["order_id"], await params_of(request)
    )
    return success({"order_id": order.order_id})


async def cancel_order(request: web.Request) -> web.Response:
    exchange = exchange_for(request)
    order = exchange.engine.cancel_order(request.match_info["variety"], request.match_info["order_id"])
    return success({"order_id": order.order_id})


async def list_orders(request: web.Request) -> web.Response:
    exchange = exchange_for(request)
    return success([o.as_kite() for o in exchange.engine.orders.values() if exchange.visible("order", o.order_id)])


def _visible_order(exchange: PaperExchange, order_id: str) -> Order:
    if not exchange.visible("order", order_id):
        raise KiteError("Couldn't find that `order_id`.", "InputException", 404)
    return exchange.engine.order(order_id)


async def order_history(request: web.Request) -> web.Response:
    return success(list(_visible_order(exchange_for(request), request.match_info["order_id"]).history))


async def order_trades(request: web.Request) -> web.Response:
    engine = exchange_for(request).engine
    order = _visible_order(exchange_for(request), request.match_info["order_id"])
    return success([t.as_kite() for t in engine.trades if t.order is order])


async def list_trades(request: web.Request) -> web.Response:
    return success([t.as_kite() for t in exchange_for(request).engine.trades])


async def positions(request: web.Request) -> web.Response:
    return success(exchange_for(request).engine.positions_view())


async def holdings(request: web.Request) -> web.Response:
    return success([])


def _requested_instruments(request: web.Request) -> list[Instrument]:
    exchange = exchange_for(request)
    found = []
    for key in request.query.getall("i", []):
        instrument = exchange.instruments.by_key(key) if ":" in key else None
        if instrument is not None:
            found.append(instrument)
    return found


async def quote(request: web.Request) -> web.Response:
    engine = exchange_for(request).engine
    return success({i.key: engine.quote_view(i) for i in _requested_instruments(request)})


async def ltp(request: web.Request) -> web.Response:
    engine = exchange_for(request).engine
    return success(
        {
            i.key: {"instrument_token": i.instrument_token, "last_price": engine.ltp(i) or Decimal(0)}
            for i in _requested_instruments(request)
        }
    )


async def instrument_list(request: web.Request) -> web.Response:
    text = instruments_csv_text()
    wanted = request.match_info.get("exchange")
    if wanted:
        lines = text.splitlines()
        exchange_column = lines[0].split(",").index("exchange")
        rows = [line for line in lines[1:] if line.split(",")[exchange_column] == wanted.upper()]
        text = "\n".join([lines[0], *rows]) + "\n"
    return web.Response(text=text, content_type="text/csv")


async def place_gtt(request: web.Request) -> web.Response:
    exchange = exchange_for(request)
    gtt = exchange.engine.place_gtt(await params_of(request))
    exchange.hide_if_slow("gtt", str(gtt.id), request.path, gtt.instrument.tradingsymbol)
    return success({"trigger_id": gtt.id})


async def list_gtts(request: web.Request) -> web.Response:
    exchange = exchange_for(request)
    return success([g.as_kite() for g in exchange.engine.all_gtts() if exchange.visible("gtt", g.id)])


async def get_gtt(request: web.Request) -> web.Response:
    exchange = exchange_for(request)
    if not exchange.visible("gtt", request.match_info["trigger_id"]):
        raise KiteError("Couldn't find that trigger.", "InputException", 404)
    return success(exchange.engine.gtt(request.match_info["trigger_id"]).as_kite())


async def modify_gtt(request: web.Request) -> web.Response:
    exchange = exchange_for(request)
    gtt = exchange.engine.modify_gtt(request.match_info["trigger_id"], await params_of(request))
    return success({"trigger_id": gtt.id})


async def delete_gtt(request: web.Request) -> web.Response:
    gtt = exchange_for(request).engine.delete_gtt(request.match_info["trigger_id"])
    return success({"trigger_id": gtt.id})


async def session_token(request: web.Request) -> web.Response:
    exchange = exchange_for(request)
    params = await params_of(request)
    config = exchange.config
    api_key = str(params.get("api_key") or "")
    request_token = str(params.get("request_token") or "")
    checksum = str(params.get("checksum") or "")
    if api_key != config.api_key:
        raise KiteError("Invalid `api_key`.", "InputException", 400)
    if not request_token:
        raise KiteError("Missing `request_token`.", "InputException", 400)
    expected = hashlib.sha256((api_key + request_token + config.api_secret).encode()).hexdigest()
    if not hmac.compare_digest(checksum, expected):
        raise KiteError("Invalid `checksum`.", "TokenException", 403)
    if request_token not in exchange.request_tokens:
        raise KiteError("Token is invalid or has expired.", "TokenException", 403)
    exchange.request_tokens.discard(request_token)  # one use, as Kite's
    access_token = exchange.start_session()
    return success(
        {
            "user_type": "individual",
            "email": "paper@example.com",
            "user_name": "Paper Trader",
            "user_shortname": "Paper",
            "broker": "ZERODHA",
            "exchanges": ["NSE", "NFO", "BSE"],
            "products": ["CNC", "NRML", "MIS"],
            "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
            "avatar_url": None,
            "user_id": USER_ID,
            "api_key": config.api_key,
            "access_token": access_token,
            "public_token": "paper-public-token",
            "refresh_token": "",
            "enctoken": "",
            "login_time": kite_timestamp(datetime.now(IST)),
            "meta": {"demat_consent": "physical"},
        }
    )


async def delete_session(request: web.Request) -> web.Response:
    return success(True)


def _html(status: int, title: str, body: str) -> web.Response:
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(text=page, status=status, content_type="text/html")


async def connect_login_page(request: web.Request) -> web.Response:
    """Kite's login page for an app: here one button logs the paper trader in."""
    exchange = exchange_for(request)
    api_key = request.query.get("api_key", "")
    if not hmac.compare_digest(api_key, exchange.config.api_key):
        return _html(400, "Invalid api_key", "<p>No app has this api_key.</p>")
    if request.query.get("v") != "3":
        return _html(400, "Unsupported version", "<p>Kite Connect login needs v=3.</p>")
    form = (
        f'<form method="post" action="/connect/login?{html.escape(urlencode({"api_key": api_key, "v": "3"}))}">'
        f"<p>Log in to the paper exchange as {html.escape(USER_ID)} (Paper Trader).</p>"
        '<button type="submit" id="login">Login</button></form>'
    )
    return _html(200, "Login to Kite (paper exchange)", form)


async def connect_login_submit(request: web.Request) -> web.StreamResponse:
    """The login button: back to the app's redirect URL with a one-time request_token, as Kite does."""
    exchange = exchange_for(request)
    api_key = request.query.get("api_key", "")
    if not hmac.compare_digest(api_key, exchange.config.api_key):
        return _html(400, "Invalid api_key", "<p>No app has this api_key.</p>")
    query = {"action": "login", "type": "login", "status": "success", "request_token": exchange.issue_request_token()}
    target = exchange.config.redirect_url
    raise web.HTTPFound(target + ("&" if "?" in target else "?") + urlencode(query))


async def profile(request: web.Request) -> web.Response:
    return success(
        {
            "user_id": USER_ID,
            "user_name": "Paper Trader",
            "user_shortname": "Paper",
            "user_type": "individual",
            "email": "paper@example.com",
            "broker": "ZERODHA",
            "exchanges": ["NSE", "NFO", "BSE"],
            "products": ["CNC", "NRML", "MIS"],
            "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
            "meta": {"demat_consent": "physical"},
        }
    )
